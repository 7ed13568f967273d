// One warp's mma.sync.m16n8k16 (fp16 or bf16 in, fp32 accumulated) for the recurrent
// kernels' tensor-core products (sequence_products.cuh, cell_tiles.cuh): the caller says
// where the pairs of A and B^T lie (mma_fragments.h names which pair a lane holds), as
// packed 32-bit words from 16-bit tiles or packed on the fly from fp32 ones.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/dtypes.h"
#include "recurrent/mma_fragments.h"

namespace seqops {

// The 32-bit word of two adjacent 16-bit elements at p (4-byte aligned).
__device__ __forceinline__ uint32_t pair_at(const void* p) { return *static_cast<const uint32_t*>(p); }

// Two floats rounded to T (fp16 or bf16) and packed as one register of an operand: `low`
// the element of the lower column.
template <typename T>
__device__ __forceinline__ uint32_t packed_pair(float low, float high) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
    return *reinterpret_cast<const uint32_t*>(&pair);
  } else {
    static_assert(std::is_same_v<T, __half>, "tensor cores take fp16 or bf16");
    const __half2 pair = __floats2half2_rn(low, high);
    return *reinterpret_cast<const uint32_t*>(&pair);
  }
}

template <typename T>
__device__ __forceinline__ float pair_element(uint32_t word, int which) {
  const T* halves = reinterpret_cast<const T*>(&word);
  return to_float(halves[which]);
}

// d += the lane's part of A[16 x 16] @ B[16 x 8] (d's fragment: mma_c_pair): a_pair(row, k)
// gives the word of A(row, k) and A(row, k + 1), b_pair(n, k) that of B(k, n) and
// B(k + 1, n). Before sm_80 (no bf16 mma there) the same part from FMAs.
template <typename T, typename APair, typename BPair>
__device__ __forceinline__ void mma_tile(float (&d)[4], APair a_pair, BPair b_pair) {
  const int lane = threadIdx.x % 32;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t a[4], b[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const Pair at = mma_a_pair(lane, i);
    a[i] = a_pair(at.row, at.col);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const Pair at = mma_b_pair(lane, i);
    b[i] = b_pair(at.row, at.col);
  }
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same_v<T, __half>, "tensor cores take fp16 or bf16");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const Pair at = mma_c_pair(lane, i / 2);
    for (int k = 0; k < 16; k += 2) {
      const uint32_t a = a_pair(at.row, k), b = b_pair(at.col + i % 2, k);
      d[i] = fmaf(pair_element<T>(a, 0), pair_element<T>(b, 0), d[i]);
      d[i] = fmaf(pair_element<T>(a, 1), pair_element<T>(b, 1), d[i]);
    }
  }
#endif
}

// The same from 16-bit tiles: A's rows a_stride elements apart, B^T's (n-major) w_stride.
template <typename T>
__device__ __forceinline__ void mma_tile(float (&d)[4], const T* a, int64_t a_stride, const T* w, int64_t w_stride) {
  mma_tile<T>(
      d, [&](int row, int k) { return pair_at(a + row * a_stride + k); },
      [&](int n, int k) { return pair_at(w + n * w_stride + k); });
}

}  // namespace seqops
