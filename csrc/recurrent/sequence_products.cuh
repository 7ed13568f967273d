// The products of the whole-sequence recurrent kernels (lstm_sequence.cu, hidden_sequence.cu):
// a block's weight slices loaded into shared memory once a launch, and each step's product
// of the exchanged operand (h forward, the next step's gate gradients backward) with them.
//
// Two forms, by the layer's element size (plan.h):
// - fp32: FMAs. The operand is staged kK columns at a time as fp32; the slices are k-major
//   (a warp's threads, consecutive units, read consecutive words).
// - fp16/bf16: tensor cores, mma.sync m16n8k16 with fp32 accumulation. The operand is
//   staged 16 rows x up to kSequenceMmaChunk columns at a time in the layer's dtype (the
//   backward's fp32 gate gradients rounded to it, as the Triton kernels round them before
//   tl.dot); the slices are row-major, a row of K values sequence_mma_stride(K) elements
//   long, zero from K to the next multiple of 16. A gate's 8 units are the n of one mma,
//   so the LSTM's 32 columns are 4 tiles; warp w takes k-steps w, w + 8, ... and the
//   8 warps' partial tiles are added through a reduction tile in shared memory into the
//   thread that owns each (row, unit), the owner the FMA form has.
// Either way the caller sees acc[r][tile] for its kRowsPerThread rows of the pass and its
// unit, every thread of the block calling (the products synchronise the block).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/dtypes.h"
#include "recurrent/cell_tiles.cuh"
#include "recurrent/mma_fragments.h"
#include "recurrent/mma_tile.cuh"
#include "recurrent/plan.h"
#include "recurrent/sequence_grid.cuh"

namespace seqops {
namespace sequence_grid {

template <typename T>
constexpr bool kOnTensorCores = sequence_on_tensor_cores(int(sizeof(T)));

constexpr int kMmaRows = kSequenceMmaRows;
constexpr int kMmaChunk = kSequenceMmaChunk;
constexpr int kWarps = kSequenceWarps;
constexpr int kReduceStride = kSequenceReduceStride;
constexpr int64_t kStageStride = sequence_mma_stride(kMmaChunk);

// Where a slice of rows of K values starts after one of `n` rows: the slices' layout.
template <typename T>
__device__ __forceinline__ T* after_slice(T* slice, int64_t n, int64_t K) {
  return slice + sequence_slice_elements(int(sizeof(T)), n, K);
}

// The weight slices' element (n, k): row n (a gate's unit, a unit, a feature) and k.
template <typename T>
__device__ __forceinline__ int64_t slice_index(int64_t n, int64_t k, int64_t n_rows, int64_t K) {
  if constexpr (kOnTensorCores<T>) {
    return n * sequence_mma_stride(K) + k;
  } else {
    return k * n_rows + n;
  }
}

// How many k a slice row holds: K, or (tensor cores) K rounded up to the mma's k-step, the
// rounding zero.
template <typename T>
__device__ __forceinline__ int64_t slice_k(int64_t K) {
  return kOnTensorCores<T> ? (K + 15) / 16 * 16 : K;
}

// The forward's slice of a block of W [kGates * n_units, K] (W_hh, or the projection's
// W_hr with one gate), into shared memory for the whole launch: row gate * U + u holds
// W[gate * n_units + unit0 + u, :], the kGates rows of each of the block's units (or
// features). In 32 bits: K is at most a hidden size, at most kUnits x the
// multiprocessors (plan.h), and a 64-bit division is a call, across which ptxas spilled
// the values the time loop keeps.
template <typename T, int kGates>
__device__ __forceinline__ void load_weight_rows(T* w, const void* w_src, const Strides2& w_s, int64_t n_units,
                                                 int64_t K, int64_t unit0) {
  const int k32 = int(K), stored = int(slice_k<T>(K));
  for (int e = threadIdx.x; e < kGates * kUnits * stored; e += kThreads) {
    const int k = e % stored, gate_unit = e / stored;  // k fastest: W's rows read in order
    const int64_t row_unit = unit0 + gate_unit % kUnits;
    w[slice_index<T>(gate_unit, k, kGates * kUnits, K)] =
        row_unit < n_units && k < k32
            ? static_cast<const T*>(w_src)[((gate_unit / kUnits) * n_units + row_unit) * w_s.row + int64_t(k) * w_s.col]
            : from_float<T>(0.0f);
  }
}

// The backward's slice of a block: row u holds W[:, unit0 + u], the block's units' columns
// of W [rows, H] (W_hh's 4H or 3H gate rows, or W_hr's P features), over the `rows` as k.
template <typename T>
__device__ __forceinline__ void load_weight_columns(T* w, const void* w_src, const Strides2& w_s, int64_t rows,
                                                    int64_t H, int64_t unit0) {
  const int64_t stored = slice_k<T>(rows);
  for (int64_t e = threadIdx.x; e < stored * kUnits; e += kThreads) {
    const int64_t j = e / kUnits, column = unit0 + e % kUnits;
    w[slice_index<T>(e % kUnits, j, kUnits, rows)] =
        column < H && j < rows ? static_cast<const T*>(w_src)[j * w_s.row + column * w_s.col] : from_float<T>(0.0f);
  }
}

// ---- the FMA form (fp32) ----

// kK columns of kPassRows rows of the exchanged operand, fp32, padded against bank conflicts.
using StagingTile = float[kPassRows][kK + 1];

template <typename T, int kTiles, typename Source>
__device__ __forceinline__ void accumulate_with_fmas(int64_t rows, int64_t r0, int64_t K, Source source, const T* w,
                                                     unsigned char* staging, float (&acc)[kRowsPerThread][kTiles]) {
  StagingTile& tile = *reinterpret_cast<StagingTile*>(staging);
  const int tid = threadIdx.x, u = tid % kUnits, lane = tid / kUnits;
  for (int64_t k0 = 0; k0 < K && r0 < rows; k0 += kK) {  // nothing to add for a pass past the rows
    for (int e = tid; e < kPassRows * kK; e += kThreads) {
      const int k = e % kK, r = e / kK;
      const int64_t row = r0 + r, col = k0 + k;
      tile[r][k] = row < rows && col < K ? source(row, col) : 0.0f;
    }
    __syncthreads();
    const int width = K - k0 < kK ? int(K - k0) : kK;
    for (int k = 0; k < width; ++k) {
      const T* w_k = w + (k0 + k) * kTiles * kUnits + u;
      float wv[kTiles];
#pragma unroll
      for (int g = 0; g < kTiles; ++g) wv[g] = to_float(w_k[g * kUnits]);
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const float a = tile[lane + r * kLanes][k];
#pragma unroll
        for (int g = 0; g < kTiles; ++g) acc[r][g] = fmaf(a, wv[g], acc[r][g]);
      }
    }
    __syncthreads();
  }
}

// ---- the tensor-core form (fp16, bf16) ----

// acc[r][tile] += sum over k < K of a[row, k] * w[tile * kUnits + u, k], for this thread's
// rows of the pass at r0 (of `rows`) and its unit u: a's elements from source(row, col)
// (row < rows, col < K), w a slice of K (load_weight_rows or load_weight_columns).
template <typename T, int kTiles, typename Source>
__device__ __forceinline__ void accumulate_on_tensor_cores(int64_t rows, int64_t r0, int64_t K, Source source,
                                                           const T* w, unsigned char* staging,
                                                           float (&acc)[kRowsPerThread][kTiles]) {
  static_assert(kTiles * kUnits <= kReduceStride, "the reduction tile holds every gate's units");
  T* a = reinterpret_cast<T*>(staging);
  // reduce[(warp * kMmaRows + row) * kReduceStride + column]
  float* reduce = reinterpret_cast<float*>(staging + kMmaRows * kStageStride * int64_t(sizeof(T)));
  const int tid = threadIdx.x, warp = tid / 32;
  const int u = tid % kUnits, lane = tid / kUnits;
  const int64_t w_stride = sequence_mma_stride(K);
  // With one tile (the backward's products, the RNNs' and the projection's) the registers
  // allow a whole chunk's loads in flight (4 x 256 columns); with 3 or 4 tiles the
  // forward's accumulators and state leave room for one column.
  constexpr int kColumnsInFlight = kTiles == 1 ? kMmaChunk / kThreads : 1;
  for (int sub = 0; sub < kPassRows / kMmaRows; ++sub) {
    const int64_t s0 = r0 + sub * kMmaRows;
    if (s0 >= rows) break;  // the same for every thread
    float part[kTiles][4] = {};
    for (int64_t c0 = 0; c0 < K; c0 += kMmaChunk) {
      const int width = K - c0 < kMmaChunk ? int(K - c0) : kMmaChunk, padded = (width + 15) / 16 * 16;
      // kColumnsInFlight columns of 16 rows a thread at a time, every load of them issued
      // before any is stored: each round is one L2 round trip.
      for (int k_first = tid; k_first < padded; k_first += kThreads * kColumnsInFlight) {
        T columns[kColumnsInFlight][kMmaRows];
#pragma unroll
        for (int c = 0; c < kColumnsInFlight; ++c) {
          const int k = k_first + c * kThreads;
          const int64_t col = c0 + k;
#pragma unroll
          for (int r = 0; r < kMmaRows; ++r) {
            columns[c][r] = from_float<T>(k < padded && s0 + r < rows && col < K ? source(s0 + r, col) : 0.0f);
          }
        }
#pragma unroll
        for (int c = 0; c < kColumnsInFlight; ++c) {
          const int k = k_first + c * kThreads;
          if (k >= padded) break;
#pragma unroll
          for (int r = 0; r < kMmaRows; ++r) a[r * kStageStride + k] = columns[c][r];
        }
      }
      __syncthreads();
      for (int step = warp; step < padded / 16; step += kWarps) {
#pragma unroll
        for (int tile = 0; tile < kTiles; ++tile) {
          mma_tile<T>(part[tile], a + step * 16, kStageStride, w + tile * kUnits * w_stride + c0 + step * 16,
                      w_stride);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const Pair at = mma_c_pair(tid % 32, i / 2);
        reduce[(warp * kMmaRows + at.row) * kReduceStride + tile * kUnits + at.col + i % 2] = part[tile][i];
      }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int in_pass = lane + r * kLanes;
      if (in_pass / kMmaRows != sub) continue;
#pragma unroll
      for (int tile = 0; tile < kTiles; ++tile) {
        float sum = 0.0f;
#pragma unroll
        for (int w_ = 0; w_ < kWarps; ++w_) {
          sum += reduce[(w_ * kMmaRows + in_pass % kMmaRows) * kReduceStride + tile * kUnits + u];
        }
        acc[r][tile] += sum;
      }
    }
    __syncthreads();
  }
}

// ---- what the kernels call ----

// acc[r][g] += a[row, :] . W[g * U' + unit, :] over K columns, for this thread's
// kRowsPerThread rows of the pass at r0 (of `rows`) and its unit: a's elements from
// source(row, col) (row < rows, col < K); w the block's slice (load_weight_rows).
template <typename T, int kGates, typename Source>
__device__ __forceinline__ void accumulate_staged(int64_t rows, int64_t r0, int64_t K, Source source, const T* w,
                                                  unsigned char* staging, float (&acc)[kRowsPerThread][kGates]) {
  if constexpr (kOnTensorCores<T>) {
    accumulate_on_tensor_cores<T, kGates>(rows, r0, K, source, w, staging, acc);
  } else {
    accumulate_with_fmas<T, kGates>(rows, r0, K, source, w, staging, acc);
  }
}

// The recurrent product of a step: acc[r][g] += h_prev[row] . W_hh[g * H + unit, :] over
// the K features of h, h_prev the previous step's output (every block's, exchanged) for
// the rows that continue from it, h0 for the rows that start here.
template <typename T, int kGates>
__device__ __forceinline__ void accumulate_recurrent(const StepEntry& step, int64_t r0, int64_t K, const void* out,
                                                     const Strides2& out_s, const void* h0, const Strides2& h0_s,
                                                     const T* w, unsigned char* staging,
                                                     float (&acc)[kRowsPerThread][kGates]) {
  accumulate_staged<T, kGates>(
      step.rows, r0, K,
      [&](int64_t row, int64_t col) {
        return row < step.carried ? load_exchanged<T>(out, step.prev + row, col, out_s) : load<T>(h0, row, col, h0_s);
      },
      w, staging, acc);
}

// reaching[r] += sum over the `rows` gate rows j of dgates[done row, column_of(j)] * W_hh[j,
// unit]: the gradient reaching the h_prev of step `done` through W_hh, for this thread's
// rows of the pass at r0 and its unit; dgates [N, width] fp32, exchanged; w the block's
// slice (load_weight_columns).
template <typename T, typename ColumnOf>
__device__ __forceinline__ void accumulate_reaching(const StepEntry& done, int64_t r0, int64_t rows,
                                                    const float* dgates, int64_t width, ColumnOf column_of,
                                                    const T* w, unsigned char* staging,
                                                    float (&reaching)[kRowsPerThread]) {
  float acc[kRowsPerThread][1] = {};
  accumulate_staged<T, 1>(
      done.rows, r0, rows,
      [&](int64_t row, int64_t j) { return __ldcg(dgates + (done.offset + row) * width + column_of(j)); }, w,
      staging, acc);
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) reaching[r] += acc[r][0];
}

}  // namespace sequence_grid
}  // namespace seqops
