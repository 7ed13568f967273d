// An attn_mask as the attention kernels read it: from one (batch, head), element by
// element, as a bias on the scores in base 2 (the kernels' units: scores * scale * log2 e).
// A boolean mask gives 0 or -inf, an additive one its value times log2 e. The callers read
// it only at positions below L and S.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "attention/params.h"

namespace seqops {
namespace attention {

struct MaskView {
  const unsigned char* bytes = nullptr;  // at (batch, head)
  MaskKind kind = MaskKind::none;
  DType dtype = DType::float32;
  int64_t row_stride = 0, col_stride = 0;  // elements

  __device__ __forceinline__ bool present() const { return kind != MaskKind::none; }

  __device__ __forceinline__ float bias_log2(int row, int col) const {
    constexpr float kLog2eMask = 1.4426950408889634f;
    const int64_t offset = row * row_stride + col * col_stride;
    if (kind == MaskKind::boolean) return bytes[offset] ? 0.0f : -INFINITY;
    switch (dtype) {
      case DType::float16: return __half2float(reinterpret_cast<const __half*>(bytes)[offset]) * kLog2eMask;
      case DType::bfloat16:
        return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(bytes)[offset]) * kLog2eMask;
      default: return reinterpret_cast<const float*>(bytes)[offset] * kLog2eMask;
    }
  }
};

__device__ __forceinline__ MaskView mask_view(const MaskParams& mask, int batch, int head) {
  MaskView view;
  view.kind = mask.kind;
  view.dtype = mask.dtype;
  view.row_stride = mask.row;
  view.col_stride = mask.col;
  if (mask.kind != MaskKind::none) {
    const int element = mask.kind == MaskKind::boolean ? 1 : mask.dtype == DType::float32 ? 4 : 2;
    view.bytes = static_cast<const unsigned char*>(mask.ptr) + (batch * mask.batch + head * mask.head) * element;
  }
  return view;
}

}  // namespace attention
}  // namespace seqops
