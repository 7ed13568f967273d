// What the softmax launchers take: plain pointers, dtype codes, the row model's sizes
// and int64 strides (common/rows.h), filled by the Python CUDA Impl from checked tensors.
// The softmax dim is the column dim; a causal mask along it is `causal_rows`, a mask of
// any other form comes as the bool `mask` (uint8, broadcast through stride 0).
#pragma once

#include <cstdint>

#include "common/dtypes.h"
#include "common/rows.h"

namespace seqops {

struct SoftmaxForwardParams {
  const void* x = nullptr;
  void* y = nullptr;
  const uint8_t* mask = nullptr;  // null: no mask; else nonzero = keep
  DType x_dtype = DType::float32;
  DType y_dtype = DType::float32;
  RowShape shape;
  RowStrides x_strides, y_strides, mask_strides;
  // 0: not causal. Else row r is query r % causal_rows of a score matrix and sees the
  // columns 0..query (the upper-left causal triangle).
  int64_t causal_rows = 0;
  float scale = 1.0f;
};

// dx = scale * y * (dy - sum(dy * y)) per row, exactly 0 where the forward hid an entry.
// dy is read in y's dtype or in float32 (the only forms the launcher is built for; a
// caller casts any other first).
struct SoftmaxBackwardParams {
  const void* dy = nullptr;
  const void* y = nullptr;
  const uint8_t* mask = nullptr;
  void* dx = nullptr;
  DType dy_dtype = DType::float32;
  DType y_dtype = DType::float32;
  DType dx_dtype = DType::float32;
  RowShape shape;
  RowStrides dy_strides, y_strides, mask_strides, dx_strides;
  int64_t causal_rows = 0;
  float scale = 1.0f;
};

// Scratch of an online launch whose rows are split into parts (plan.h, bounded_online),
// allocated by the launcher: each part's statistics, [n_rows, splits] (forward: max and
// sum, two floats; backward: sum(dy * y), one double), and each row's arrival counter,
// zeroed.
// splits == 1: none (the pointers null).
struct SoftmaxSplit {
  int64_t splits = 1;
  int64_t chunk = 0;
  void* partials = nullptr;
  int* arrivals = nullptr;
  int max_spins = 0;
};

}  // namespace seqops
