// What the attention kernels can address, for the launchers' checks: positions counted in
// int, grid dims y and z, and 16-byte cp.async loads (every row 16-byte aligned).
#pragma once

#include <cstdint>

#include "attention/params.h"

namespace seqops {
namespace attention {

constexpr int64_t kMaxLength = int64_t(1) << 30;  // positions and their sums stay in int
constexpr int64_t kMaxGridDim = 65535;            // grid y (heads) and z (batch)

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// 16-bit elements: every row starts 16-byte aligned when each stride is a multiple of 8.
inline bool strides_aligned(const HeadStrides& s) { return s.batch % 8 == 0 && s.head % 8 == 0 && s.row % 8 == 0; }

// No mask, or one the kernels can read: a pointer, and an additive mask's dtype one of
// float32, float16, bfloat16 (its elements are read one by one: no alignment beyond theirs).
inline bool mask_readable(const MaskParams& m) {
  if (m.kind == MaskKind::none) return true;
  if (m.ptr == nullptr) return false;
  if (m.kind == MaskKind::boolean) return true;
  return m.kind == MaskKind::additive &&
         (m.dtype == DType::float32 || m.dtype == DType::float16 || m.dtype == DType::bfloat16);
}

}  // namespace attention
}  // namespace seqops
