// Reading and writing a row in chunks of kSoftmaxChunk consecutive columns: one or two
// 16-byte loads when the tensor's rows are vector-aligned (plan.h) and the chunk is whole,
// element by element (any stride) otherwise. Values travel as fp32.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/dtypes.h"
#include "softmax/plan.h"

namespace seqops {

constexpr int kChunk = kSoftmaxChunk;
static_assert(kChunk == 8, "the vector paths below move 8 elements");

// A 16-bit element from, and to, its bits: the vector paths move 8 of them in a uint4 and
// take them apart with shifts, not through a pointer to the local uint4 (which ptxas may
// then keep in local memory: a stack frame and "spill" stores in some instantiations).
template <typename T>
__device__ __forceinline__ float from_bits(unsigned int bits);
template <>
__device__ __forceinline__ float from_bits<__half>(unsigned int bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}
template <>
__device__ __forceinline__ float from_bits<__nv_bfloat16>(unsigned int bits) {
  return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(bits)));
}
template <typename T>
__device__ __forceinline__ unsigned int to_bits(float v);
template <>
__device__ __forceinline__ unsigned int to_bits<__half>(float v) {
  return __half_as_ushort(__float2half_rn(v));
}
template <>
__device__ __forceinline__ unsigned int to_bits<__nv_bfloat16>(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// Element i (0..7) of eight 16-bit values in a uint4: word i / 2, the low half first.
__device__ __forceinline__ unsigned int half_word(const uint4& raw, int i) {
  const unsigned int word = i < 2 ? raw.x : i < 4 ? raw.y : i < 6 ? raw.z : raw.w;
  return (i % 2 == 0 ? word : word >> 16) & 0xffffu;
}

// out[i] = row[col + i] as fp32, `fill` past n_cols.
template <typename T>
__device__ __forceinline__ void load_chunk(const T* row, int64_t col, int64_t n_cols, int64_t stride, bool vector,
                                           float fill, float (&out)[kChunk]) {
  if (vector && col + kChunk <= n_cols) {
    if constexpr (sizeof(T) == 4) {
      const float4 lo = *reinterpret_cast<const float4*>(row + col);
      const float4 hi = *reinterpret_cast<const float4*>(row + col + 4);
      out[0] = lo.x; out[1] = lo.y; out[2] = lo.z; out[3] = lo.w;
      out[4] = hi.x; out[5] = hi.y; out[6] = hi.z; out[7] = hi.w;
    } else {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + col);
#pragma unroll
      for (int i = 0; i < kChunk; ++i) out[i] = from_bits<T>(half_word(raw, i));
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kChunk; ++i) out[i] = col + i < n_cols ? to_float(row[(col + i) * stride]) : fill;
}

// keep[i] = whether column col + i is visible: inside the first n_seen columns and, with
// a mask, nonzero there.
__device__ __forceinline__ void load_keep(const uint8_t* mask_row, int64_t col, int64_t n_seen, int64_t stride,
                                          bool vector, bool (&keep)[kChunk]) {
  if (mask_row != nullptr && vector && col + kChunk <= n_seen) {
    const uint2 raw = *reinterpret_cast<const uint2*>(mask_row + col);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) keep[i] = (((i < 4 ? raw.x : raw.y) >> (8 * (i % 4))) & 0xffu) != 0;
    return;
  }
#pragma unroll
  for (int i = 0; i < kChunk; ++i) {
    keep[i] = col + i < n_seen && (mask_row == nullptr || mask_row[(col + i) * stride] != 0);
  }
}

// row[col + i] = values[i] for the columns before n_cols, rounded to nearest.
template <typename T>
__device__ __forceinline__ void store_chunk(T* row, int64_t col, int64_t n_cols, int64_t stride, bool vector,
                                            const float (&values)[kChunk]) {
  if (vector && col + kChunk <= n_cols) {
    if constexpr (sizeof(T) == 4) {
      *reinterpret_cast<float4*>(row + col) = make_float4(values[0], values[1], values[2], values[3]);
      *reinterpret_cast<float4*>(row + col + 4) = make_float4(values[4], values[5], values[6], values[7]);
    } else {
      uint4 raw;
      raw.x = to_bits<T>(values[0]) | (to_bits<T>(values[1]) << 16);
      raw.y = to_bits<T>(values[2]) | (to_bits<T>(values[3]) << 16);
      raw.z = to_bits<T>(values[4]) | (to_bits<T>(values[5]) << 16);
      raw.w = to_bits<T>(values[6]) | (to_bits<T>(values[7]) << 16);
      *reinterpret_cast<uint4*>(row + col) = raw;
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kChunk; ++i) {
    if (col + i < n_cols) row[(col + i) * stride] = from_float<T>(values[i]);
  }
}

// An input entry as the softmax of dtype TOut sees it: torch.softmax(x, dtype=d) casts x
// to d first, so an input of another dtype is rounded to TOut before the fp32 math.
template <typename TIn, typename TOut>
__device__ __forceinline__ float as_output_dtype(float x) {
  if constexpr (std::is_same<TIn, TOut>::value || std::is_same<TOut, float>::value) {
    return x;
  } else {
    return to_float(from_float<TOut>(x));
  }
}

// e**d for d <= 0, as accurately as an output of TOut needs: the fast exp (ex2 of
// d * log2 e) loses |d| * 2**-24 in the product, hidden by a 16-bit output's rounding but
// not by fp32's, which gets the accurate expf.
template <typename TOut>
__device__ __forceinline__ float exp_for(float d) {
  if constexpr (std::is_same<TOut, float>::value) {
    return expf(d);
  } else {
    return __expf(d);
  }
}

// The shift subtracted before exp: the running max, or 0 while it is -inf so that a
// lane that has seen only hidden entries does not make -inf - -inf = NaN.
__device__ __forceinline__ float finite_shift(float max_value) { return max_value == -INFINITY ? 0.0f : max_value; }

}  // namespace seqops
