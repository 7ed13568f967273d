// What the attention kernels can address, for the launchers' checks: positions counted in
// int, grid dims y and z, 16-byte cp.async loads (every row 16-byte aligned), and the
// strides a TMA descriptor of the sm90a forward is given.
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

// The strides a TMA descriptor of a (rows, head dim, heads, batch) tensor gets: its own,
// except that a dimension of size 1 (whose stride torch may leave at 0, and which is only
// ever read at index 0) gets the stride of a packed layout instead, so that every stride is
// a positive multiple of 16 bytes; head_dim is a multiple of 8. A stride of 0 left in the
// result (an expanded dimension of size above 1) is one TMA cannot take: tma_describable.
inline HeadStrides tma_strides(const HeadStrides& s, int64_t rows, int64_t heads, int64_t batch, int64_t head_dim) {
  HeadStrides out = s;
  if (rows <= 1) out.row = head_dim;
  if (heads <= 1) out.head = out.row * (rows > 1 ? rows : 1);
  if (batch <= 1) out.batch = out.head * (heads > 1 ? heads : 1);
  return out;
}

inline bool tma_describable(const AttentionForwardParams& p) {
  const HeadStrides strides[] = {tma_strides(p.q_strides, p.len_q, p.heads_q, p.batch, p.head_dim),
                                 tma_strides(p.k_strides, p.len_kv, p.heads_kv, p.batch, p.head_dim),
                                 tma_strides(p.v_strides, p.len_kv, p.heads_kv, p.batch, p.head_dim)};
  for (const HeadStrides& s : strides) {
    if (s.batch <= 0 || s.head <= 0 || s.row <= 0) return false;
  }
  return true;
}

}  // namespace attention
}  // namespace seqops
