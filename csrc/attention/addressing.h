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

}  // namespace attention
}  // namespace seqops
