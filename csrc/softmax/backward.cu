// Softmax backward kernels, dx = scale * y * (dy - sum(dy * y)) along each row, and their
// host launcher. Entries the forward hid get exactly 0, even in a row that is NaN because
// all of it was hidden: the output does not depend on them (torch's masked_fill
// backward). Forms by row length as in the forward (plan.h).
//
// A row's sum(dy * y) is summed in fp64 from exact products (24-bit by 24-bit significands
// fit fp64's 53) and rounded once to fp32: summed in fp32, a row whose mass sits on a few
// entries loses 1-2 ulps of a dot near 1, and dx's error is that one rounding times y
// (the Triton kernels' reason, kernels/softmax/backward.py). Two conversions and a DFMA
// an element are little beside the kernels' memory traffic.
#include <cuda_runtime.h>

#include <cmath>

#include "common/arrival.cuh"
#include "common/device.h"
#include "common/dispatch.cuh"
#include "common/reduce.cuh"
#include "softmax/launchers.h"
#include "softmax/plan.h"
#include "softmax/row_io.cuh"
#include "softmax/split_scratch.h"

namespace seqops {
namespace {

struct BackwardRow {
  int64_t n_seen;       // columns past it are hidden by the causal mask
  const uint8_t* mask;  // null: no mask
};

__device__ __forceinline__ BackwardRow backward_row(const SoftmaxBackwardParams& p, int64_t row) {
  return {p.causal_rows > 0 ? min(p.shape.n_cols, row % p.causal_rows + 1) : p.shape.n_cols,
          p.mask == nullptr ? nullptr : p.mask + row_offset(row, p.shape, p.mask_strides)};
}

template <typename TDy, typename TY, typename TDx, int kPerLane>
__global__ void __launch_bounds__(32 * kSoftmaxRowsPerWarpBlock)
softmax_backward_warp_kernel(const SoftmaxBackwardParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t rows_per_grid = int64_t(gridDim.x) * kSoftmaxRowsPerWarpBlock;
  for (int64_t row = int64_t(blockIdx.x) * kSoftmaxRowsPerWarpBlock + threadIdx.x / 32; row < p.shape.n_rows;
       row += rows_per_grid) {
    const TDy* dy = static_cast<const TDy*>(p.dy) + row_offset(row, p.shape, p.dy_strides);
    const TY* y = static_cast<const TY*>(p.y) + row_offset(row, p.shape, p.y_strides);
    TDx* dx = static_cast<TDx*>(p.dx) + row_offset(row, p.shape, p.dx_strides);
    const BackwardRow r = backward_row(p, row);
    float yv[kPerLane], dyv[kPerLane];
    double dot = 0.0;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t col = lane + 32 * k;
      const bool in_row = col < p.shape.n_cols;
      yv[k] = in_row ? to_float(y[col * p.y_strides.col]) : 0.0f;
      dyv[k] = in_row ? to_float(dy[col * p.dy_strides.col]) : 0.0f;
      dot += double(yv[k]) * double(dyv[k]);
    }
    const float row_dot = float(warp_sum(dot));
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t col = lane + 32 * k;
      if (col >= p.shape.n_cols) continue;
      const bool keep = col < r.n_seen && (r.mask == nullptr || r.mask[col * p.mask_strides.col] != 0);
      dx[col * p.dx_strides.col] = from_float<TDx>(keep ? p.scale * yv[k] * (dyv[k] - row_dot) : 0.0f);
    }
  }
}

struct BackwardVectors {
  bool dy, y, dx, mask;  // which tensors' rows take vector loads (plan.h)
};

// dx of one chunk from its y and dy and the row's dot, 0 where hidden.
__device__ __forceinline__ void chunk_gradient(const SoftmaxBackwardParams& p, const BackwardRow& r, int64_t col,
                                               bool mask_vector, float dot, const float (&yv)[kChunk],
                                               const float (&dyv)[kChunk], float (&dxv)[kChunk]) {
  bool keep[kChunk];
  load_keep(r.mask, col, r.n_seen, p.mask_strides.col, mask_vector, keep);
#pragma unroll
  for (int i = 0; i < kChunk; ++i) dxv[i] = keep[i] ? p.scale * yv[i] * (dyv[i] - dot) : 0.0f;
}

template <typename TDy, typename TY, typename TDx>
__global__ void __launch_bounds__(kSoftmaxBackwardBlockThreads)
softmax_backward_block_kernel(const SoftmaxBackwardParams p, BackwardVectors vector) {
  __shared__ double scratch[32];
  for (int64_t row = blockIdx.x; row < p.shape.n_rows; row += gridDim.x) {
    const TDy* dy = static_cast<const TDy*>(p.dy) + row_offset(row, p.shape, p.dy_strides);
    const TY* y = static_cast<const TY*>(p.y) + row_offset(row, p.shape, p.y_strides);
    TDx* dx = static_cast<TDx*>(p.dx) + row_offset(row, p.shape, p.dx_strides);
    const BackwardRow r = backward_row(p, row);
    float yv[kSoftmaxChunksPerThread][kChunk], dyv[kSoftmaxChunksPerThread][kChunk];
    double dot = 0.0;
#pragma unroll
    for (int k = 0; k < kSoftmaxChunksPerThread; ++k) {
      const int64_t col = (threadIdx.x + int64_t(k) * blockDim.x) * kChunk;
      load_chunk(y, col, p.shape.n_cols, p.y_strides.col, vector.y, 0.0f, yv[k]);
      load_chunk(dy, col, p.shape.n_cols, p.dy_strides.col, vector.dy, 0.0f, dyv[k]);
#pragma unroll
      for (int i = 0; i < kChunk; ++i) dot += double(yv[k][i]) * double(dyv[k][i]);
    }
    const float row_dot = float(block_sum(dot, scratch));
#pragma unroll
    for (int k = 0; k < kSoftmaxChunksPerThread; ++k) {
      const int64_t col = (threadIdx.x + int64_t(k) * blockDim.x) * kChunk;
      float dxv[kChunk];
      chunk_gradient(p, r, col, vector.mask, row_dot, yv[k], dyv[k], dxv);
      store_chunk(dx, col, p.shape.n_cols, p.dx_strides.col, vector.dx, dxv);
    }
  }
}

// sum(dy * y) over the columns in [lo, hi) of a row, merged across the block (every
// thread gets it). Hidden columns need no mask: y is 0 there.
template <typename TDy, typename TY>
__device__ __forceinline__ double sweep_dot(const TDy* dy, const TY* y, int64_t lo, int64_t hi,
                                            const SoftmaxBackwardParams& p, BackwardVectors vector, double* scratch) {
  const int64_t step = int64_t(blockDim.x) * kChunk;
  double dot = 0.0;
  for (int64_t col = lo + threadIdx.x * int64_t(kChunk); col < hi; col += step) {
    float yv[kChunk], dyv[kChunk];
    load_chunk(y, col, hi, p.y_strides.col, vector.y, 0.0f, yv);
    load_chunk(dy, col, hi, p.dy_strides.col, vector.dy, 0.0f, dyv);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) dot += double(yv[i]) * double(dyv[i]);
  }
  return block_sum(dot, scratch);
}

// Registers budgeted for one block an SM: left to aim for two, ptxas held the fp64 sums'
// kernels at 64 registers and spilled 12-64 bytes on sm_90a; at one, 79-84 registers and
// none. Split plans launch at most one block an SM anyway; elsewhere 16 warps an SM with
// 32-byte loads must keep DRAM busy alone (for the GPU benchmark to confirm).
template <typename TDy, typename TY, typename TDx>
__global__ void __launch_bounds__(kSoftmaxOnlineThreads, 1)
softmax_backward_online_kernel(const SoftmaxBackwardParams p, BackwardVectors vector, const SoftmaxSplit split) {
  __shared__ double scratch[32];
  __shared__ int all_arrived;
  const int64_t step = int64_t(blockDim.x) * kChunk;
  const int splits = int(split.splits);  // at most kSoftmaxMaxSplits
  const int part = int(blockIdx.x) % splits, parts_stride = int(gridDim.x) / splits;
  for (int64_t row = blockIdx.x / splits; row < p.shape.n_rows; row += parts_stride) {
    const TDy* dy = static_cast<const TDy*>(p.dy) + row_offset(row, p.shape, p.dy_strides);
    const TY* y = static_cast<const TY*>(p.y) + row_offset(row, p.shape, p.y_strides);
    TDx* dx = static_cast<TDx*>(p.dx) + row_offset(row, p.shape, p.dx_strides);
    const BackwardRow r = backward_row(p, row);
    // This block's columns: the whole row, or its part of a split row.
    const int64_t lo = splits > 1 ? min(part * split.chunk, p.shape.n_cols) : 0;
    const int64_t hi = splits > 1 ? min(lo + split.chunk, p.shape.n_cols) : p.shape.n_cols;
    // The row's sum(dy * y): of this block's columns; for a split row, added to the other
    // parts' once all have arrived, or else swept again over the whole row.
    double dot = 0.0;
    int64_t sweep_lo = lo, sweep_hi = hi;
    for (int pass = 0;; ++pass) {
      dot = sweep_dot(dy, y, sweep_lo, sweep_hi, p, vector, scratch);
      if (splits == 1 || pass == 1) break;
      double* slots = static_cast<double*>(split.partials) + row * splits;
      if (threadIdx.x == 0) slots[part] = dot;
      if (arrive_and_wait(split.arrivals + row, splits, split.max_spins, &all_arrived)) {
        dot = block_sum(int(threadIdx.x) < splits ? __ldcg(slots + threadIdx.x) : 0.0, scratch);
        break;
      }
      sweep_lo = 0;
      sweep_hi = p.shape.n_cols;
    }
    const float row_dot = float(dot);
    for (int64_t col = lo + threadIdx.x * int64_t(kChunk); col < hi; col += step) {
      float yv[kChunk], dyv[kChunk], dxv[kChunk];
      load_chunk(y, col, hi, p.y_strides.col, vector.y, 0.0f, yv);
      load_chunk(dy, col, hi, p.dy_strides.col, vector.dy, 0.0f, dyv);
      chunk_gradient(p, r, col, vector.mask, row_dot, yv, dyv, dxv);
      store_chunk(dx, col, hi, p.dx_strides.col, vector.dx, dxv);
    }
  }
}

bool vector_aligned(const void* data, const RowStrides& s, int element_size) {
  return rows_vector_aligned(data, s.a, s.b, s.c, s.col, element_size, element_size == 1 ? 8 : 16);
}

template <typename TDy, typename TY, typename TDx>
void launch_backward(const SoftmaxBackwardParams& p, const SoftmaxPlan& plan, BackwardVectors vector,
                     const SoftmaxSplit& split, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.blocks)), block(plan.threads);
  switch (plan.kernel) {
    case SoftmaxKernel::warp_per_row:
      if (plan.values_per_lane == 4) {
        softmax_backward_warp_kernel<TDy, TY, TDx, 4><<<grid, block, 0, stream>>>(p);
      } else {
        softmax_backward_warp_kernel<TDy, TY, TDx, 32><<<grid, block, 0, stream>>>(p);
      }
      break;
    case SoftmaxKernel::block_per_row:
      softmax_backward_block_kernel<TDy, TY, TDx><<<grid, block, 0, stream>>>(p, vector);
      break;
    case SoftmaxKernel::online:
      softmax_backward_online_kernel<TDy, TY, TDx><<<grid, block, 0, stream>>>(p, vector, split);
      break;
  }
}

}  // namespace

Status check_softmax_backward(const SoftmaxBackwardParams& p) {
  if (p.dy == nullptr || p.y == nullptr || p.dx == nullptr) {
    return Status::bad_argument("softmax_backward: dy, y and dx must not be null");
  }
  if (!is_known_dtype(int(p.dy_dtype)) || !is_known_dtype(int(p.y_dtype)) || !is_known_dtype(int(p.dx_dtype))) {
    return Status::bad_argument("softmax_backward: unknown dtype code");
  }
  if (p.dy_dtype != p.y_dtype && p.dy_dtype != DType::float32) {
    return Status::bad_argument("softmax_backward: dy must be in y's dtype or float32");
  }
  if (p.shape.n_rows < 0 || p.shape.n_cols < 0 || p.shape.rows_b < 1 || p.shape.rows_c < 1 || p.causal_rows < 0) {
    return Status::bad_argument("softmax_backward: negative size, or rows_b/rows_c below 1");
  }
  return Status::ok();
}

Status softmax_backward(const SoftmaxBackwardParams& p, cudaStream_t stream) {
  const Status checked = check_softmax_backward(p);
  if (!checked.is_ok()) return checked;
  if (p.shape.n_rows == 0 || p.shape.n_cols == 0) return Status::ok();
  SoftmaxPlan plan = plan_softmax_backward(p.shape.n_rows, p.shape.n_cols);
  if (plan.kernel == SoftmaxKernel::online) {
    // Every tensor of a row read or written, and the mask: what the grid's bound counts.
    const DeviceSize size = current_device_size();
    plan = bounded_online(plan, p.shape.n_rows, p.shape.n_cols,
                          dtype_size(p.dy_dtype) + dtype_size(p.y_dtype) + dtype_size(p.dx_dtype) + (p.mask != nullptr),
                          size.l2_bytes, size.multiprocessors);
  }
  SplitScratch scratch(plan, p.shape.n_rows, sizeof(double), stream);
  if (!scratch.ok()) plan = plan_softmax_backward(p.shape.n_rows, p.shape.n_cols);  // no scratch: a block a row
  const BackwardVectors vector{vector_aligned(p.dy, p.dy_strides, dtype_size(p.dy_dtype)),
                               vector_aligned(p.y, p.y_strides, dtype_size(p.y_dtype)),
                               vector_aligned(p.dx, p.dx_strides, dtype_size(p.dx_dtype)),
                               p.mask != nullptr && vector_aligned(p.mask, p.mask_strides, 1)};
  with_dtype(p.y_dtype, [&](auto y_tag) {
    with_dtype(p.dx_dtype, [&](auto dx_tag) {
      using TY = decltype(y_tag);
      using TDx = decltype(dx_tag);
      // dy in y's dtype (backward) or float32 (a wider tangent under forward-mode AD).
      if (p.dy_dtype == p.y_dtype) {
        launch_backward<TY, TY, TDx>(p, plan, vector, scratch.split(), stream);
      } else if constexpr (!std::is_same<TY, float>::value) {
        launch_backward<float, TY, TDx>(p, plan, vector, scratch.split(), stream);
      }
    });
  });
  return Status::from_cuda(cudaGetLastError());
}

}  // namespace seqops
