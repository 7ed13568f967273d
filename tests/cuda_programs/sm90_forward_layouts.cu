// Host-only check of the sm90a attention forward's register layouts
// (csrc/attention/forward_sm90_tiles.cuh), run on the CPU by
// tests/test_cuda_attention_host.py: CuTe's layouts are host code too, so every thread's
// share of the accumulators can be walked without a GPU. It checks what the kernel's
// steps assume of them:
//   - S's and O's accumulators viewed as (rows, cols) hold one tile row per r, the same
//     rows in S and in O, and every (row, col) of the tile exactly once over the CTA;
//   - a row's values are on the 4 threads of one quad only (the softmax reduces over them);
//   - S's accumulator seen as the A operand of O += P V puts each value where the wgmma
//     of O reads A's (row, key).
// Prints one line per failure and "ok <n> checks"; exits 1 on any failure.
#include <vector>

#include "attention/forward_sm90_tiles.cuh"
#include "host_checks.h"

using namespace cute;
using namespace seqops::attention;

template <class Traits>
void check() {
  constexpr int M = Traits::kBlockM, N = Traits::kBlockN, E = Traits::kHeadDim;
  using MmaS = typename Traits::TiledMmaS;
  using MmaO = typename Traits::TiledMmaO;
  std::vector<int> seen_s(M * N, 0), seen_o(M * E, 0), row_quad(M, -1);
  for (int t = 0; t < Traits::kConsumerThreads; ++t) {  // a consumer thread's index among the consumers
    auto thr_s = MmaS{}.get_thread_slice(t);
    auto thr_o = MmaO{}.get_thread_slice(t);
    Tensor cS = thr_s.partition_C(make_identity_tensor(Shape<Int<M>, Int<N>>{}));
    Tensor cO = thr_o.partition_C(make_identity_tensor(Shape<Int<M>, Int<E>>{}));
    Tensor s_rc = make_tensor(cS.data(), wgmma_accumulator_rows_cols(cS.layout()));
    Tensor o_rc = make_tensor(cO.data(), wgmma_accumulator_rows_cols(cO.layout()));
    expect(size<0>(s_rc) == size<0>(o_rc), "S and O hold as many rows", E, t, int(size<0>(s_rc)), int(size<0>(o_rc)));
    for (int r = 0; r < size<0>(s_rc); ++r) {
      const int row = get<0>(s_rc(r, 0));
      expect(get<0>(o_rc(r, 0)) == row, "row r of O is row r of S", E, t, get<0>(o_rc(r, 0)), row);
      if (row_quad[row] < 0) row_quad[row] = t / 4;
      expect(row_quad[row] == t / 4, "a row stays within one quad", E, t, row, row_quad[row]);
      for (int c = 0; c < size<1>(s_rc); ++c) {
        expect(get<0>(s_rc(r, c)) == row, "S's row r is one row", E, t, get<0>(s_rc(r, c)), row);
        ++seen_s[row * N + get<1>(s_rc(r, c))];
        if (c % 2 == 1) {
          expect(get<1>(s_rc(r, c)) == get<1>(s_rc(r, c - 1)) + 1, "S's column pairs are adjacent", E, t, r, c);
        }
      }
      for (int c = 0; c < size<1>(o_rc); ++c) {
        expect(get<0>(o_rc(r, c)) == row, "O's row r is one row", E, t, get<0>(o_rc(r, c)), row);
        ++seen_o[row * E + get<1>(o_rc(r, c))];
        if (c % 2 == 1) {
          expect(get<1>(o_rc(r, c)) == get<1>(o_rc(r, c - 1)) + 1, "O's column pairs are adjacent", E, t, r, c);
        }
      }
      expect((get<1>(o_rc(r, 0)) == 0) == (t % 4 == 0), "column 0 is on the quad's first thread", E, t, r, 0);
    }
    Tensor cA = thr_o.partition_A(make_identity_tensor(Shape<Int<M>, Int<N>>{}));
    Tensor a_view = make_tensor(cS.data(), wgmma_accumulator_as_a_operand(cS.layout()));
    expect(size(cA) == size(a_view), "P holds as many values as the A operand", E, t, int(size(cA)), int(size(a_view)));
    expect(size<2>(cA) == size<2>(a_view), "as many k-blocks", E, t, int(size<2>(cA)), int(size<2>(a_view)));
    for (int k = 0; k < size<2>(cA); ++k) {
      for (int m = 0; m < size<1>(cA); ++m) {
        for (int v = 0; v < size<0>(cA); ++v) {
          expect(cA(v, m, k) == a_view(v, m, k), "P's value is the A operand's", E, t,
                 get<0>(a_view(v, m, k)) * 1000 + get<1>(a_view(v, m, k)), get<0>(cA(v, m, k)) * 1000 + get<1>(cA(v, m, k)));
        }
      }
    }
  }
  for (int i = 0; i < M * N; ++i) expect(seen_s[i] == 1, "every (row, key) of S once", E, -1, i, seen_s[i]);
  for (int i = 0; i < M * E; ++i) expect(seen_o[i] == 1, "every (row, col) of O once", E, -1, i, seen_o[i]);
}

int main() {
  check<ForwardSm90Traits<64, cutlass::half_t>>();
  check<ForwardSm90Traits<128, cutlass::half_t>>();
  check<ForwardSm90Traits<128, cutlass::bfloat16_t>>();
  check<ForwardSm90Traits<256, cutlass::half_t>>();  // 64-key tiles
  return report();
}
