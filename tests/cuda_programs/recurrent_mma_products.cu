// Host-only check of the recurrent kernels' tensor-core products (csrc/recurrent/
// sequence_products.cuh, accumulate_on_tensor_cores; cell_tiles.cuh, accumulate_gates and
// ThroughWeights), run on the CPU by tests/test_cuda_lstm_sequence.py:
//   - the fragment maps the kernels load and read back by (recurrent/mma_fragments.h) are
//     CuTe's layouts of the same instruction (SM80_16x8x16_F32BF16BF16F32_TN and its fp16
//     twin): every (lane, value) names the element CuTe names;
//   - the row strides of the staged operand and the weight slices (sequence_mma_stride)
//     put the 8 rows x 4 words of a fragment load in 32 different banks;
//   - the product as the kernel composes it (chunks of kSequenceMmaChunk columns, warp w
//     taking every kSequenceWarps-th k-step, each mma's operands gathered from the
//     addresses the fragment maps give and multiplied as CuTe says the hardware does, the
//     warps' parts added through the reduction tile at mma_c_pair) equals the plain sum
//     for every (row, gate, unit), at awkward K (one column, odd, past a chunk);
//   - the cells' forward likewise (chunks of kCellMmaK, warp w the units [8w, 8w + 8) of
//     every gate, the sums put where the owners read them), and their backward's d_h0
//     from the fp32 tiles read transposed as A and B^T, warp w 8 features.
// Prints one line per failure and "ok <n> checks"; exits 1 on any failure.
#include <cute/atom/mma_traits_sm80.hpp>
#include <cute/tensor.hpp>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "host_checks.h"
#include "recurrent/mma_fragments.h"
#include "recurrent/plan.h"

using namespace seqops;

template <class Op>
void check_fragments() {
  using Traits = cute::MMA_Traits<Op>;
  typename Traits::ALayout a_layout;
  typename Traits::BLayout b_layout;
  typename Traits::CLayout c_layout;
  for (int lane = 0; lane < 32; ++lane) {
    for (int v = 0; v < 8; ++v) {  // A: value v is half v % 2 of register v / 2
      const int index = int(a_layout(lane, v)), m = index % 16, k = index / 16;
      const Pair at = mma_a_pair(lane, v / 2);
      expect(at.row == m && at.col + v % 2 == k, "A's fragment is CuTe's", 16, lane, m, k);
    }
    for (int v = 0; v < 4; ++v) {  // B (n, k)
      const int index = int(b_layout(lane, v)), n = index % 8, k = index / 8;
      const Pair at = mma_b_pair(lane, v / 2);
      expect(at.row == n && at.col + v % 2 == k, "B's fragment is CuTe's", 16, lane, n, k);
    }
    for (int v = 0; v < 4; ++v) {  // C (m, n): d[v]
      const int index = int(c_layout(lane, v)), m = index % 16, n = index / 16;
      const Pair at = mma_c_pair(lane, v / 2);
      expect(at.row == m && at.col + v % 2 == n, "C's fragment is CuTe's", 16, lane, m, n);
    }
  }
}

// A fragment load of a tile with rows `stride` elements (2 bytes) apart: the 32 words
// of one register across the warp lie in 32 banks.
void check_banks(int64_t stride, bool b_operand) {
  for (int reg = 0; reg < (b_operand ? 2 : 4); ++reg) {
    int used[32] = {};
    for (int lane = 0; lane < 32; ++lane) {
      const Pair at = b_operand ? mma_b_pair(lane, reg) : mma_a_pair(lane, reg);
      ++used[int((at.row * stride + at.col) / 2 % 32)];
    }
    for (int bank = 0; bank < 32; ++bank) {
      expect(used[bank] == 1, "a fragment load touches each bank once", int(stride), reg, bank, used[bank]);
    }
  }
}

// The mma as CuTe describes it: d (lane's 4 values) += sum over k of A(m, k) B(k, n), where
// A's value v of lane is a_regs[lane][v] and CuTe's ALayout says which (m, k) it is.
template <class Op>
void mma_as_cute_says(float (&d)[32][4], const float (&a_regs)[32][8], const float (&b_regs)[32][4]) {
  using Traits = cute::MMA_Traits<Op>;
  typename Traits::ALayout a_layout;
  typename Traits::BLayout b_layout;
  typename Traits::CLayout c_layout;
  float A[16][16], B[8][16];
  for (int lane = 0; lane < 32; ++lane) {
    for (int v = 0; v < 8; ++v) A[int(a_layout(lane, v)) % 16][int(a_layout(lane, v)) / 16] = a_regs[lane][v];
    for (int v = 0; v < 4; ++v) B[int(b_layout(lane, v)) % 8][int(b_layout(lane, v)) / 8] = b_regs[lane][v];
  }
  for (int lane = 0; lane < 32; ++lane) {
    for (int v = 0; v < 4; ++v) {
      const int m = int(c_layout(lane, v)) % 16, n = int(c_layout(lane, v)) / 16;
      for (int k = 0; k < 16; ++k) d[lane][v] += A[m][k] * B[n][k];
    }
  }
}

// One warp's mma as the kernels issue it: each lane's registers gathered at the pairs the
// fragment maps name, from A(row, k) and B^T(n, k) as the caller lays them out.
template <class Op, class AAt, class BAt>
void warp_mma(float (&d)[32][4], AAt a_at, BAt b_at) {
  float a_regs[32][8], b_regs[32][4];
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < 4; ++reg) {
      const Pair at = mma_a_pair(lane, reg);
      for (int h = 0; h < 2; ++h) a_regs[lane][2 * reg + h] = a_at(at.row, at.col + h);
    }
    for (int reg = 0; reg < 2; ++reg) {
      const Pair at = mma_b_pair(lane, reg);
      for (int h = 0; h < 2; ++h) b_regs[lane][2 * reg + h] = b_at(at.row, at.col + h);
    }
  }
  mma_as_cute_says<Op>(d, a_regs, b_regs);
}

// The kernel's composition for one sub-pass of `rows` rows, kTiles gates of 8 units, K columns.
template <class Op, int kTiles>
void check_product(int rows, int64_t K) {
  constexpr int kRows = kSequenceMmaRows, kWarps = kSequenceWarps, kChunk = kSequenceMmaChunk;
  const int64_t stage_stride = sequence_mma_stride(kChunk), w_stride = sequence_mma_stride(K);
  const int64_t padded_k = (K + 15) / 16 * 16;
  std::vector<float> a(size_t(rows) * K), w(size_t(kTiles) * 8 * K);
  for (auto& x : a) x = float(std::rand() % 17 - 8);
  for (auto& x : w) x = float(std::rand() % 13 - 6);
  // The slice as load_weight_rows lays it: row n, K values then zeros to the k-step.
  std::vector<float> slice(size_t(kTiles) * 8 * w_stride, NAN);
  for (int n = 0; n < kTiles * 8; ++n) {
    for (int64_t k = 0; k < padded_k; ++k) slice[n * w_stride + k] = k < K ? w[n * K + k] : 0.0f;
  }
  std::vector<float> reduce(size_t(kWarps) * kRows * kSequenceReduceStride, NAN);
  float part[kWarps][kTiles][32][4] = {};
  for (int64_t c0 = 0; c0 < K; c0 += kChunk) {
    const int width = int(K - c0 < kChunk ? K - c0 : kChunk), padded = (width + 15) / 16 * 16;
    std::vector<float> stage(size_t(kRows) * stage_stride, NAN);  // what was not staged is poison
    for (int r = 0; r < kRows; ++r) {
      for (int k = 0; k < padded; ++k) stage[r * stage_stride + k] = r < rows && c0 + k < K ? a[r * K + c0 + k] : 0.0f;
    }
    for (int warp = 0; warp < kWarps; ++warp) {
      for (int step = warp; step < padded / 16; step += kWarps) {
        for (int tile = 0; tile < kTiles; ++tile) {
          warp_mma<Op>(
              part[warp][tile], [&](int row, int k) { return stage[row * stage_stride + step * 16 + k]; },
              [&](int n, int k) { return slice[(tile * 8 + n) * w_stride + c0 + step * 16 + k]; });
        }
      }
    }
  }
  for (int warp = 0; warp < kWarps; ++warp) {
    for (int tile = 0; tile < kTiles; ++tile) {
      for (int lane = 0; lane < 32; ++lane) {
        for (int i = 0; i < 4; ++i) {
          const Pair at = mma_c_pair(lane, i / 2);
          const int column = tile * 8 + at.col + i % 2;
          reduce[(warp * kRows + at.row) * kSequenceReduceStride + column] = part[warp][tile][lane][i];
        }
      }
    }
  }
  for (int r = 0; r < rows; ++r) {
    for (int tile = 0; tile < kTiles; ++tile) {
      for (int u = 0; u < 8; ++u) {
        float sum = 0.0f, expected = 0.0f;
        for (int warp = 0; warp < kWarps; ++warp) {
          sum += reduce[(warp * kRows + r) * kSequenceReduceStride + tile * 8 + u];
        }
        for (int64_t k = 0; k < K; ++k) expected += a[r * K + k] * w[(tile * 8 + u) * K + k];
        expect(sum == expected, "the product is the plain sum", int(K), r, tile * 8 + u, int(sum - expected));
      }
    }
  }
}

// The cell kernels' forward (cell_tiles.cuh, accumulate_gates, tensor-core form): K in
// chunks of kCellMmaK staged with rows kCellMmaStride apart, warp w the units [8w, 8w + 8)
// of every gate, its sums put at mma_c_pair into the tile the owners read.
template <class Op, int kGates>
void check_cell_forward(int rows, int64_t K) {
  constexpr int kUnits = kCellUnits, kWarps = kCellThreads / 32;
  std::vector<float> a(size_t(kCellRows) * K, 0.0f), w(size_t(kGates) * kUnits * K);
  for (int r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < K; ++k) a[r * K + k] = float(std::rand() % 11 - 5);
  }
  for (auto& x : w) x = float(std::rand() % 9 - 4);
  float part[kWarps][kGates][32][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kCellMmaK) {
    std::vector<float> a_tile(size_t(kCellRows) * kCellMmaStride, NAN);
    std::vector<float> w_tile(size_t(kGates) * kUnits * kCellMmaStride, NAN);
    for (int r = 0; r < kCellRows; ++r) {
      for (int k = 0; k < kCellMmaK; ++k) a_tile[r * kCellMmaStride + k] = k0 + k < K ? a[r * K + k0 + k] : 0.0f;
    }
    for (int n = 0; n < kGates * kUnits; ++n) {
      for (int k = 0; k < kCellMmaK; ++k) w_tile[n * kCellMmaStride + k] = k0 + k < K ? w[n * K + k0 + k] : 0.0f;
    }
    const int steps = int(((K - k0 < kCellMmaK ? K - k0 : kCellMmaK) + 15) / 16);
    for (int warp = 0; warp < kWarps; ++warp) {
      for (int step = 0; step < steps; ++step) {
        for (int gate = 0; gate < kGates; ++gate) {
          warp_mma<Op>(
              part[warp][gate], [&](int row, int k) { return a_tile[row * kCellMmaStride + step * 16 + k]; },
              [&](int n, int k) { return w_tile[(gate * kUnits + warp * 8 + n) * kCellMmaStride + step * 16 + k]; });
        }
      }
    }
  }
  std::vector<float> sums(size_t(kCellRows) * (kGates * kUnits + 4), NAN);
  for (int warp = 0; warp < kWarps; ++warp) {
    for (int gate = 0; gate < kGates; ++gate) {
      for (int lane = 0; lane < 32; ++lane) {
        for (int i = 0; i < 4; ++i) {
          const Pair at = mma_c_pair(lane, i / 2);
          sums[at.row * (kGates * kUnits + 4) + gate * kUnits + warp * 8 + at.col + i % 2] = part[warp][gate][lane][i];
        }
      }
    }
  }
  for (int r = 0; r < kCellRows; ++r) {
    for (int n = 0; n < kGates * kUnits; ++n) {
      float expected = 0.0f;
      for (int64_t k = 0; k < K; ++k) expected += a[r * K + k] * w[n * K + k];
      const float got = sums[r * (kGates * kUnits + 4) + n];
      expect(got == expected, "the cell forward's sum is the plain sum", int(K), r, n, int(got - expected));
    }
  }
}

// The cell kernels' backward (ThroughWeights, tensor-core form): d_h0(row, feature) summed
// over one block of gate units from the fp32 tiles grad[gj][row] and w[gj][feature], warp
// w the features [8w, 8w + 8).
template <class Op, int kGates>
void check_cell_backward() {
  constexpr int kUnits = kCellUnits, kWarps = kCellThreads / 32, kK = kGates * kUnits;
  std::vector<float> grad(size_t(kK) * (kCellRows + 1)), w(size_t(kK) * (kUnits + 1));
  for (auto& x : grad) x = float(std::rand() % 11 - 5);
  for (auto& x : w) x = float(std::rand() % 9 - 4);
  for (int warp = 0; warp < kWarps; ++warp) {
    float part[32][4] = {};
    const int n0 = warp * 8;
    for (int k0 = 0; k0 < kK; k0 += 16) {
      warp_mma<Op>(
          part, [&](int row, int k) { return grad[(k0 + k) * (kCellRows + 1) + row]; },
          [&](int n, int k) { return w[(k0 + k) * (kUnits + 1) + n0 + n]; });
    }
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < 4; ++i) {
        const Pair at = mma_c_pair(lane, i / 2);
        const int row = at.row, feature = n0 + at.col + i % 2;
        float expected = 0.0f;
        for (int gj = 0; gj < kK; ++gj) expected += grad[gj * (kCellRows + 1) + row] * w[gj * (kUnits + 1) + feature];
        expect(part[lane][i] == expected, "the cell backward's d_h0 is the plain sum", kGates, lane, row, feature);
      }
    }
  }
}

int main() {
  check_fragments<cute::SM80_16x8x16_F32BF16BF16F32_TN>();
  check_fragments<cute::SM80_16x8x16_F32F16F16F32_TN>();
  for (int64_t K : {1, 16, 20, 40, 768, 1000, 1056, 4224}) {
    check_banks(sequence_mma_stride(K), true);
  }
  check_banks(sequence_mma_stride(kSequenceMmaChunk), false);
  std::srand(7);
  for (int64_t K : {1, 17, 40, 200, 1056, 1500}) {
    check_product<cute::SM80_16x8x16_F32BF16BF16F32_TN, 4>(16, K);
    check_product<cute::SM80_16x8x16_F32BF16BF16F32_TN, 3>(5, K);
    check_product<cute::SM80_16x8x16_F32F16F16F32_TN, 1>(1, K);
  }
  for (int64_t K : {1, 17, 64, 70, 200}) {
    check_cell_forward<cute::SM80_16x8x16_F32BF16BF16F32_TN, 4>(16, K);
    check_cell_forward<cute::SM80_16x8x16_F32F16F16F32_TN, 3>(7, K);
    check_cell_forward<cute::SM80_16x8x16_F32BF16BF16F32_TN, 1>(1, K);
  }
  check_cell_backward<cute::SM80_16x8x16_F32BF16BF16F32_TN, 4>();
  check_cell_backward<cute::SM80_16x8x16_F32F16F16F32_TN, 3>();
  check_cell_backward<cute::SM80_16x8x16_F32BF16BF16F32_TN, 1>();
  check_banks(kCellMmaStride, false);
  check_banks(kCellMmaStride, true);
  return report();
}
