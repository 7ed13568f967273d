// The row model every row kernel shares (softmax now, norms later): a tensor of shape
// [a, b, c, n_cols], any strides, viewed as n_rows = a*b*c rows of n_cols. Python
// collapses a tensor's leading dims to at most three (seqops.kernels.layout, the same model
// the Triton kernels take), so sliced, transposed and broadcast (stride 0) tensors reach a
// kernel without a copy; strides and offsets are int64 so that tensors past 2**31
// elements are addressed right.
#pragma once

#include <cstdint>

namespace seqops {

// A tensor's strides, in elements, over the three row dims and the column dim.
struct RowStrides {
  int64_t a = 0, b = 0, c = 0, col = 0;
};

struct RowShape {
  int64_t n_rows = 0;
  int64_t n_cols = 0;
  int64_t rows_b = 1;  // rows are (a, b, c): c = r % rows_c, b = (r / rows_c) % rows_b
  int64_t rows_c = 1;
};

// Element offset of the first entry of row `row`.
__host__ __device__ __forceinline__ int64_t row_offset(int64_t row, const RowShape& shape, const RowStrides& s) {
  const int64_t c = row % shape.rows_c;
  const int64_t rest = row / shape.rows_c;
  return (rest / shape.rows_b) * s.a + (rest % shape.rows_b) * s.b + c * s.c;
}

}  // namespace seqops
