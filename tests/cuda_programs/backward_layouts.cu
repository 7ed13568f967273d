// Host-only check of the attention backward's layouts (ordered dQ, column blocks)
// (csrc/attention/backward_kernel.cuh, BackwardTraits<...>::KeyValue), run on the CPU by
// tests/test_cuda_attention_host.py: CuTe's layouts are host code, so what the kernel
// assumes of them is walked here without a GPU.
//   - dS^T's smem tile: write_scores_transposed puts each (key, query) of the dK/dV mma's
//     accumulator at SmemLayoutDst(key, query), every entry of the tile exactly once,
//     within the bytes the launcher allocates, column pairs as one aligned 4-byte word;
//   - dS read back as the A operand of dQ = dS K: SmemLayoutDs(query, key) is the same
//     element as SmemLayoutDst(key, query), and the dQ mma's A operand covers every
//     (query, key) of the tile once for each warp along the head dim (they share A), its B
//     operand every (column, key) once for each warp along the queries;
//   - K^T as the B operand, kDqColumns columns at a time: block b's SmemLayoutKt(e, key),
//     kKColumnBlockElements x b on, is K's element (key, b x kDqColumns + e);
//   - dQ's accumulator viewed as (rows, cols) covers every (query, column) of its
//     kDqColumns exactly once (each is added to the workspace once per turn);
//   - past head dim 128, the column blocks of dK and dV a CTA takes read Q and dO's
//     stages where those columns lie.
// Prints one line per failure and "ok <n> checks"; exits 1 on any failure.
#include <vector>

#include "attention/backward_kernel.cuh"
#include "host_checks.h"

using namespace cute;
using namespace seqops::attention;

template <class Traits>
void check() {
  constexpr int M = Traits::kBlockM, N = Traits::kBlockN, E = Traits::kHeadDim, D = Traits::kDqColumns;
  using Element = typename Traits::Element;
  typename Traits::SmemLayoutDst dst_layout;
  typename Traits::SmemLayoutDs ds_layout;
  typename Traits::SmemLayoutKV kv_layout;
  typename Traits::SmemLayoutKt kt_layout;

  // The dS^T tile fits the bytes the launcher adds for it.
  expect(int(cosize(dst_layout)) * int(sizeof(Element)) == Traits::kOrderedDqSmemBytes - Traits::kDsOffsetBytes,
         "dS^T's smem is what the launcher adds", E, -1, int(cosize(dst_layout)), M * N);
  for (int q = 0; q < M; ++q) {
    for (int key = 0; key < N; ++key) {
      expect(ds_layout(q, key) == dst_layout(key, q), "dS(query, key) is dS^T(key, query)", E, -1, q, key);
    }
  }
  for (int e = 0; e < E; ++e) {  // block e / D of K^T, kKColumnBlockElements apart
    for (int key = 0; key < N; ++key) {
      expect((e / D) * Traits::kKColumnBlockElements + kt_layout(e % D, key) == kv_layout(key, e),
             "K^T(e, key) is K(key, e)", E, -1, e, key);
    }
  }

  constexpr int kWarpsM = Traits::kDqWarpsM, kWarpsE = Traits::kWarps / Traits::kDqWarpsM;
  std::vector<int> written(M * N, 0), read_a(M * N, 0), read_b(D * N, 0), dq_seen(M * D, 0);
  for (int t = 0; t < Traits::kThreads; ++t) {
    // The dK/dV mma's S^T / dS^T accumulator, (keys, queries), as the kernel writes it.
    auto thr = typename Traits::TiledMma{}.get_thread_slice(t);
    Tensor c = thr.partition_C(make_identity_tensor(Shape<Int<N>, Int<M>>{}));
    Tensor rc = make_tensor(c.data(), accumulator_rows_cols(c.layout()));
    for (int r = 0; r < size<0>(rc); ++r) {
      for (int col = 0; col < size<1>(rc); col += 2) {
        const int key = get<0>(rc(r, col)), q = get<1>(rc(r, col));
        expect(get<0>(rc(r, col + 1)) == key && get<1>(rc(r, col + 1)) == q + 1, "a column pair is adjacent", E,
               t, r, col);
        const int at = dst_layout(key, q);
        expect(at % 2 == 0 && dst_layout(key, q + 1) == at + 1, "a pair is one aligned 4-byte word", E, t, key, q);
        ++written[at];
        ++written[dst_layout(key, q + 1)];
      }
    }
    // The dQ mma's A operand, (queries, keys), and its accumulator, (queries, columns).
    auto thr_dq = typename Traits::DqTiledMma{}.get_thread_slice(t);
    Tensor a = thr_dq.partition_A(make_identity_tensor(Shape<Int<M>, Int<N>>{}));
    for (int i = 0; i < size(a); ++i) ++read_a[get<0>(a(i)) * N + get<1>(a(i))];
    Tensor b = thr_dq.partition_B(make_identity_tensor(Shape<Int<D>, Int<N>>{}));
    for (int i = 0; i < size(b); ++i) ++read_b[get<0>(b(i)) * N + get<1>(b(i))];
    Tensor dq = thr_dq.partition_C(make_identity_tensor(Shape<Int<M>, Int<D>>{}));
    Tensor dq_rc = make_tensor(dq.data(), accumulator_rows_cols(dq.layout()));
    for (int r = 0; r < size<0>(dq_rc); ++r) {
      for (int col = 0; col < size<1>(dq_rc); ++col) {
        expect(get<0>(dq_rc(r, col)) == get<0>(dq_rc(r, 0)), "dQ's row r is one row", E, t, r, col);
        ++dq_seen[get<0>(dq_rc(r, col)) * D + get<1>(dq_rc(r, col))];
      }
    }
  }
  for (int i = 0; i < M * N; ++i) expect(written[i] == 1, "every smem slot of dS^T written once", E, -1, i, written[i]);
  for (int i = 0; i < M * N; ++i) {
    expect(read_a[i] == kWarpsE, "every (query, key) of dS read once a warp along E", E, -1, i, read_a[i]);
  }
  for (int i = 0; i < D * N; ++i) {
    expect(read_b[i] == kWarpsM, "every (column, key) of K^T read once a warp along M", E, -1, i, read_b[i]);
  }
  for (int i = 0; i < M * D; ++i) expect(dq_seen[i] == 1, "every (query, column) of dQ's part once", E, -1, i, dq_seen[i]);
}

// Past head dim 128 a dK/dV CTA takes one block of kAccColumns columns of dK and dV, and
// reads that block of each Q and dO stage through the smaller head dim's layouts at an
// offset of kColumnBlockElements x the block's index: the same elements as the stage's
// own layout has at those columns (transposed, as the products read them).
template <class Traits>
void check_column_blocks() {
  constexpr int M = Traits::kBlockM, E = Traits::kHeadDim, C = Traits::kAccColumns;
  typename Traits::SmemLayoutQ stage;
  typename Traits::SmemLayoutQt block;
  for (int b = 0; b < Traits::kColumnSplit; ++b) {
    for (int q = 0; q < M; ++q) {
      for (int c = 0; c < C; ++c) {
        expect(b * Traits::kColumnBlockElements + block(c, q) == stage(q, b * C + c),
               "a column block of a stage is the stage at those columns", E, b, q, c);
      }
    }
  }
}

int main() {
  check<BackwardTraits<64, cutlass::half_t>::KeyValue>();
  check<BackwardTraits<128, cutlass::bfloat16_t>::KeyValue>();
  check<BackwardTraits<256, cutlass::half_t>::KeyValue>();
  check_column_blocks<BackwardTraits<64, cutlass::half_t>::KeyValue>();
  check_column_blocks<BackwardTraits<128, cutlass::half_t>::KeyValue>();
  check_column_blocks<BackwardTraits<256, cutlass::bfloat16_t>::KeyValue>();
  expect(BackwardTraits<256, cutlass::half_t>::KeyValue::kColumnSplit == 2, "head dim 256 splits in two", 256, -1,
         BackwardTraits<256, cutlass::half_t>::KeyValue::kColumnSplit, 2);
  return report();
}
