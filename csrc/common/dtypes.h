// Element types the kernels read and write, named by a small integer code so that the
// bindings take plain ints (seqops/backends/cuda_values.py holds the same table and a
// test checks the two agree through `dtype_codes()`).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace seqops {

enum class DType : int {
  float32 = 0,
  float16 = 1,
  bfloat16 = 2,
};

inline bool is_known_dtype(int code) { return code >= 0 && code <= 2; }

inline int dtype_size(DType dtype) { return dtype == DType::float32 ? 4 : 2; }

// Conversions to and from the fp32 every kernel computes in. Rounding to 16 bits is
// round-to-nearest-even, as torch's casts are.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

}  // namespace seqops
