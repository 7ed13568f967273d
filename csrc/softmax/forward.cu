// Softmax forward kernels, y = softmax(scale * x) along each row with hidden entries at
// -inf, and their host launcher. Three forms by row length (plan.h). A row with nothing
// visible has max -inf and gives NaN, as torch does.
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

// Columns 0..n_seen-1 of row `row` can be visible (all of them unless causal).
__device__ __forceinline__ int64_t visible_columns(const SoftmaxForwardParams& p, int64_t row) {
  return p.causal_rows > 0 ? min(p.shape.n_cols, row % p.causal_rows + 1) : p.shape.n_cols;
}

template <typename TIn, typename TOut, int kPerLane>
__global__ void __launch_bounds__(32 * kSoftmaxRowsPerWarpBlock)
softmax_forward_warp_kernel(const SoftmaxForwardParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t rows_per_grid = int64_t(gridDim.x) * kSoftmaxRowsPerWarpBlock;
  for (int64_t row = int64_t(blockIdx.x) * kSoftmaxRowsPerWarpBlock + threadIdx.x / 32; row < p.shape.n_rows;
       row += rows_per_grid) {
    const TIn* x = static_cast<const TIn*>(p.x) + row_offset(row, p.shape, p.x_strides);
    TOut* y = static_cast<TOut*>(p.y) + row_offset(row, p.shape, p.y_strides);
    const uint8_t* mask = p.mask == nullptr ? nullptr : p.mask + row_offset(row, p.shape, p.mask_strides);
    const int64_t n_seen = visible_columns(p, row);
    float z[kPerLane];
    float row_max = -INFINITY;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t col = lane + 32 * k;
      const bool keep = col < n_seen && (mask == nullptr || mask[col * p.mask_strides.col] != 0);
      // Hidden after scaling, as torch's masked_fill(scale * x) is.
      z[k] = keep ? as_output_dtype<TIn, TOut>(to_float(x[col * p.x_strides.col])) * p.scale : -INFINITY;
      row_max = fmaxf(row_max, z[k]);
    }
    row_max = warp_max(row_max);
    float row_sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      z[k] = exp_for<TOut>(z[k] - row_max);
      row_sum += z[k];
    }
    row_sum = warp_sum(row_sum);
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t col = lane + 32 * k;
      if (col < p.shape.n_cols) y[col * p.y_strides.col] = from_float<TOut>(z[k] / row_sum);
    }
  }
}

template <typename TIn, typename TOut>
__global__ void __launch_bounds__(1024)
softmax_forward_block_kernel(const SoftmaxForwardParams p, bool x_vector, bool y_vector, bool mask_vector) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < p.shape.n_rows; row += gridDim.x) {
    const TIn* x = static_cast<const TIn*>(p.x) + row_offset(row, p.shape, p.x_strides);
    TOut* y = static_cast<TOut*>(p.y) + row_offset(row, p.shape, p.y_strides);
    const uint8_t* mask = p.mask == nullptr ? nullptr : p.mask + row_offset(row, p.shape, p.mask_strides);
    const int64_t n_seen = visible_columns(p, row);
    float z[kSoftmaxChunksPerThread][kChunk];
    float row_max = -INFINITY;
#pragma unroll
    for (int k = 0; k < kSoftmaxChunksPerThread; ++k) {
      const int64_t col = (threadIdx.x + int64_t(k) * blockDim.x) * kChunk;
      bool keep[kChunk];
      load_keep(mask, col, n_seen, p.mask_strides.col, mask_vector, keep);
      load_chunk(x, col, p.shape.n_cols, p.x_strides.col, x_vector, 0.0f, z[k]);
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        z[k][i] = keep[i] ? as_output_dtype<TIn, TOut>(z[k][i]) * p.scale : -INFINITY;
        row_max = fmaxf(row_max, z[k][i]);
      }
    }
    row_max = block_max(row_max, scratch);
    float row_sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kSoftmaxChunksPerThread; ++k) {
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        z[k][i] = exp_for<TOut>(z[k][i] - row_max);
        row_sum += z[k][i];
      }
    }
    row_sum = block_sum(row_sum, scratch);
#pragma unroll
    for (int k = 0; k < kSoftmaxChunksPerThread; ++k) {
      const int64_t col = (threadIdx.x + int64_t(k) * blockDim.x) * kChunk;
#pragma unroll
      for (int i = 0; i < kChunk; ++i) z[k][i] /= row_sum;
      store_chunk(y, col, p.shape.n_cols, p.y_strides.col, y_vector, z[k]);
    }
  }
}

struct RowStatistics {
  float max, sum;  // the max of the kept z and the sum of e**(z - max); (-inf, 0) where none
};

// The (max, sum) of the block's threads' pairs, each sum relative to its own max.
template <typename TOut>
__device__ __forceinline__ RowStatistics merged(float thread_max, float thread_sum, float* scratch) {
  const float row_max = block_max(thread_max, scratch);
  return {row_max, block_sum(thread_sum * exp_for<TOut>(thread_max - finite_shift(row_max)), scratch)};
}

// The statistics of the kept columns in [lo, hi) of a row, in one sweep: a running max and
// sum per thread, the sum rescaled as the max grows, merged across the block once at the
// end (every thread gets them), so no barrier runs inside the loop.
template <typename TIn, typename TOut>
__device__ __forceinline__ RowStatistics sweep_statistics(const SoftmaxForwardParams& p, const TIn* x, const uint8_t* mask, int64_t lo,
                                          int64_t hi, bool x_vector, bool mask_vector, float* scratch) {
  const int64_t step = int64_t(blockDim.x) * kChunk;
  float thread_max = -INFINITY, thread_sum = 0.0f;
  for (int64_t col = lo + threadIdx.x * int64_t(kChunk); col < hi; col += step) {
    bool keep[kChunk];
    float z[kChunk];
    load_keep(mask, col, hi, p.mask_strides.col, mask_vector, keep);
    load_chunk(x, col, hi, p.x_strides.col, x_vector, 0.0f, z);
    float chunk_max = -INFINITY;
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
      z[i] = keep[i] ? as_output_dtype<TIn, TOut>(z[i]) * p.scale : -INFINITY;
      chunk_max = fmaxf(chunk_max, z[i]);
    }
    const float new_max = fmaxf(thread_max, chunk_max);
    const float shift = finite_shift(new_max);
    thread_sum *= exp_for<TOut>(thread_max - shift);
#pragma unroll
    for (int i = 0; i < kChunk; ++i) thread_sum += exp_for<TOut>(z[i] - shift);
    thread_max = new_max;
  }
  return merged<TOut>(thread_max, thread_sum, scratch);
}

template <typename TIn, typename TOut>
__global__ void __launch_bounds__(kSoftmaxOnlineThreads)
softmax_forward_online_kernel(const SoftmaxForwardParams p, bool x_vector, bool y_vector, bool mask_vector,
                              const SoftmaxSplit split) {
  __shared__ float scratch[32];
  __shared__ int all_arrived;
  const int64_t step = int64_t(blockDim.x) * kChunk;
  const int64_t splits = split.splits, part = blockIdx.x % splits, parts_stride = gridDim.x / splits;
  for (int64_t row = blockIdx.x / splits; row < p.shape.n_rows; row += parts_stride) {
    const TIn* x = static_cast<const TIn*>(p.x) + row_offset(row, p.shape, p.x_strides);
    TOut* y = static_cast<TOut*>(p.y) + row_offset(row, p.shape, p.y_strides);
    const uint8_t* mask = p.mask == nullptr ? nullptr : p.mask + row_offset(row, p.shape, p.mask_strides);
    const int64_t n_seen = visible_columns(p, row);
    // This block's columns: the whole row, or its part of a split row.
    const int64_t lo = splits > 1 ? min(part * split.chunk, p.shape.n_cols) : 0;
    const int64_t hi = splits > 1 ? min(lo + split.chunk, p.shape.n_cols) : p.shape.n_cols;
    // The row's statistics: of this block's columns; for a split row, combined with the
    // other parts' once all have arrived, or else swept again over the whole row (one
    // sweep call in a loop: two calls spilled on sm_80).
    RowStatistics stats;
    int64_t sweep_lo = lo, sweep_hi = min(hi, n_seen);
    for (int pass = 0;; ++pass) {
      stats = sweep_statistics<TIn, TOut>(p, x, mask, sweep_lo, sweep_hi, x_vector, mask_vector, scratch);
      if (splits == 1 || pass == 1) break;
      float* slots = static_cast<float*>(split.partials) + row * splits * 2;
      if (threadIdx.x == 0) {
        slots[2 * part] = stats.max;
        slots[2 * part + 1] = stats.sum;
      }
      if (arrive_and_wait(split.arrivals + row, int(splits), split.max_spins, &all_arrived)) {
        // Every part's pair, a thread each (read from L2: other blocks wrote them).
        const bool mine = threadIdx.x < splits;
        const float part_max = mine ? __ldcg(slots + 2 * threadIdx.x) : -INFINITY;
        const float part_sum = mine ? __ldcg(slots + 2 * threadIdx.x + 1) : 0.0f;
        stats = merged<TOut>(part_max, part_sum, scratch);
        break;
      }
      sweep_lo = 0;
      sweep_hi = n_seen;
    }
    // Second sweep: every column of [lo, hi), 0 where hidden (NaN throughout a row with
    // nothing seen).
    for (int64_t col = lo + threadIdx.x * int64_t(kChunk); col < hi; col += step) {
      bool keep[kChunk];
      float z[kChunk];
      load_keep(mask, col, min(hi, n_seen), p.mask_strides.col, mask_vector, keep);
      load_chunk(x, col, hi, p.x_strides.col, x_vector, 0.0f, z);
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        const float zi = keep[i] ? as_output_dtype<TIn, TOut>(z[i]) * p.scale : -INFINITY;
        z[i] = exp_for<TOut>(zi - stats.max) / stats.sum;
      }
      store_chunk(y, col, hi, p.y_strides.col, y_vector, z);
    }
  }
}

bool vector_aligned(const void* data, const RowStrides& s, int element_size) {
  return rows_vector_aligned(data, s.a, s.b, s.c, s.col, element_size, element_size == 1 ? 8 : 16);
}

}  // namespace

Status check_softmax_forward(const SoftmaxForwardParams& p) {
  if (p.x == nullptr || p.y == nullptr) return Status::bad_argument("softmax_forward: x and y must not be null");
  if (!is_known_dtype(int(p.x_dtype)) || !is_known_dtype(int(p.y_dtype))) {
    return Status::bad_argument("softmax_forward: unknown dtype code");
  }
  if (p.shape.n_rows < 0 || p.shape.n_cols < 0 || p.shape.rows_b < 1 || p.shape.rows_c < 1 || p.causal_rows < 0) {
    return Status::bad_argument("softmax_forward: negative size, or rows_b/rows_c below 1");
  }
  return Status::ok();
}

Status softmax_forward(const SoftmaxForwardParams& p, cudaStream_t stream) {
  const Status checked = check_softmax_forward(p);
  if (!checked.is_ok()) return checked;
  if (p.shape.n_rows == 0 || p.shape.n_cols == 0) return Status::ok();
  SoftmaxPlan plan = plan_softmax(p.shape.n_rows, p.shape.n_cols);
  if (plan.kernel == SoftmaxKernel::online) {
    // Every tensor of a row read or written, and the mask: what the grid's bound counts.
    const DeviceSize size = current_device_size();
    plan = bounded_online(plan, p.shape.n_rows, p.shape.n_cols,
                          dtype_size(p.x_dtype) + dtype_size(p.y_dtype) + (p.mask != nullptr), size.l2_bytes,
                          size.multiprocessors);
  }
  SplitScratch scratch(plan, p.shape.n_rows, 2 * sizeof(float), stream);
  if (!scratch.ok()) plan = plan_softmax(p.shape.n_rows, p.shape.n_cols);  // no scratch: a block a row
  const bool x_vector = vector_aligned(p.x, p.x_strides, dtype_size(p.x_dtype));
  const bool y_vector = vector_aligned(p.y, p.y_strides, dtype_size(p.y_dtype));
  const bool mask_vector = p.mask != nullptr && vector_aligned(p.mask, p.mask_strides, 1);
  const dim3 grid(static_cast<unsigned>(plan.blocks)), block(plan.threads);
  with_dtype(p.x_dtype, [&](auto x_tag) {
    with_dtype(p.y_dtype, [&](auto y_tag) {
      using TIn = decltype(x_tag);
      using TOut = decltype(y_tag);
      switch (plan.kernel) {
        case SoftmaxKernel::warp_per_row:
          if (plan.values_per_lane == 4) {
            softmax_forward_warp_kernel<TIn, TOut, 4><<<grid, block, 0, stream>>>(p);
          } else {
            softmax_forward_warp_kernel<TIn, TOut, 32><<<grid, block, 0, stream>>>(p);
          }
          break;
        case SoftmaxKernel::block_per_row:
          softmax_forward_block_kernel<TIn, TOut><<<grid, block, 0, stream>>>(p, x_vector, y_vector, mask_vector);
          break;
        case SoftmaxKernel::online:
          softmax_forward_online_kernel<TIn, TOut><<<grid, block, 0, stream>>>(p, x_vector, y_vector, mask_vector,
                                                                                 scratch.split());
          break;
      }
    });
  });
  return Status::from_cuda(cudaGetLastError());
}

}  // namespace seqops
