// Which elements of mma.sync.m16n8k16's operands a lane holds (PTX ISA, "Matrix fragments
// for mma.m16n8k16 with floating point type"): the sequence kernels' tensor-core products
// (sequence_products.cuh) load their fragments and read back their sums by these, and
// tests/cuda_programs/recurrent_mma_products.cu checks them against CuTe's layouts of the
// same instruction. lane = 4 * group + thread_in_group. Each 32-bit register holds two
// elements adjacent along the reduction (A, B) or the column (C): a Pair names the first.
#pragma once

#define SEQOPS_FRAGMENT_FN __host__ __device__ __forceinline__ constexpr

namespace seqops {

struct Pair {
  int row, col;
};

// A, 16 x 16 (row m, column k): registers 0..3 at (g, 2t), (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8).
SEQOPS_FRAGMENT_FN Pair mma_a_pair(int lane, int reg) {
  return {lane / 4 + 8 * (reg % 2), 2 * (lane % 4) + 8 * (reg / 2)};
}

// B, 16 x 8, as its transpose (row n, column k): registers 0..1 at (g, 2t), (g, 2t + 8).
SEQOPS_FRAGMENT_FN Pair mma_b_pair(int lane, int reg) { return {lane / 4, 2 * (lane % 4) + 8 * reg}; }

// C and D, 16 x 8 (row m, column n), fp32: d[2 * half] and d[2 * half + 1] at (g + 8 * half, 2t) and the next column.
SEQOPS_FRAGMENT_FN Pair mma_c_pair(int lane, int half) { return {lane / 4 + 8 * half, 2 * (lane % 4)}; }

}  // namespace seqops
