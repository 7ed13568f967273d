// What the recurrent cell kernels (LSTM, GRU, Elman RNN) share: an element of a strided
// matrix as fp32, the sigmoid, the forward's product of a block's rows with the weight
// rows of its units, every gate at once, and the backward's product of the gradients
// through w_hh with w_hh, both through shared-memory tiles (geometry in plan.h).
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "common/dtypes.h"
#include "recurrent/params.h"
#include "recurrent/plan.h"

namespace seqops {

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

template <typename T>
__device__ __forceinline__ float load(const void* base, int64_t row, int64_t col, const Strides2& s) {
  return to_float(static_cast<const T*>(base)[row * s.row + col * s.col]);
}

// acc[r][gate] += sum over k < K of a[row r, k] * w[gate * H + unit, k], for this thread's
// kCellRowsPerThread rows and one unit; a [B, K], w [kGates * H, K], staged through shared
// memory kCellK columns at a time (columns padded by one against bank conflicts). Every
// thread of the block calls it (it synchronises the block).
template <typename T, int kGates>
__device__ __forceinline__ void accumulate_gates(const void* a, const Strides2& a_s, const void* w, const Strides2& w_s,
                                                 int64_t K, int64_t batch, int64_t hidden, int64_t row0,
                                                 int64_t unit0, float (&acc)[kCellRowsPerThread][kGates],
                                                 float (&a_tile)[kCellK][kCellRows + 1],
                                                 float (&w_tile)[kCellK][kGates * kCellUnits + 1]) {
  const int tid = threadIdx.x, unit = tid % kCellUnits, r0 = (tid / kCellUnits) * kCellRowsPerThread;
  for (int64_t k0 = 0; k0 < K; k0 += kCellK) {
    // Consecutive threads read consecutive columns: coalesced for row-major tensors.
    for (int e = tid; e < kCellRows * kCellK; e += kCellThreads) {
      const int k = e % kCellK, r = e / kCellK;
      const int64_t row = row0 + r, col = k0 + k;
      a_tile[k][r] = row < batch && col < K ? load<T>(a, row, col, a_s) : 0.0f;
    }
    for (int e = tid; e < kGates * kCellUnits * kCellK; e += kCellThreads) {
      const int k = e % kCellK, gate_unit = e / kCellK;
      const int64_t u = unit0 + gate_unit % kCellUnits, col = k0 + k;
      w_tile[k][gate_unit] =
          u < hidden && col < K ? load<T>(w, (gate_unit / kCellUnits) * hidden + u, col, w_s) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kCellK; ++k) {
      float wv[kGates], av[kCellRowsPerThread];
#pragma unroll
      for (int g = 0; g < kGates; ++g) wv[g] = w_tile[k][g * kCellUnits + unit];
#pragma unroll
      for (int r = 0; r < kCellRowsPerThread; ++r) av[r] = a_tile[k][r0 + r];
#pragma unroll
      for (int r = 0; r < kCellRowsPerThread; ++r) {
#pragma unroll
        for (int g = 0; g < kGates; ++g) acc[r][g] = fmaf(av[r], wv[g], acc[r][g]);
      }
    }
    __syncthreads();
  }
}

// The backward's product d_h0 += g @ w_hh, one kCellUnits-unit step of it: w_tile[gate *
// kCellUnits + j][f] = w[gate * H + unit0 + j, feature0 + f] (0 outside the matrix), w
// [kGates * H, H]; the caller stages g, the gradients through w_hh of the block's rows, as
// grad_tile[gate * kCellUnits + j][row] and synchronises the block before the product.
template <typename T, int kGates>
__device__ __forceinline__ void load_weight_block(const void* w, const Strides2& w_s, int64_t hidden, int64_t unit0,
                                                  int64_t feature0,
                                                  float (&w_tile)[kGates * kCellUnits][kCellUnits + 1]) {
  for (int e = threadIdx.x; e < kGates * kCellUnits * kCellUnits; e += kCellThreads) {
    const int f = e % kCellUnits, gate_unit = e / kCellUnits;
    const int64_t unit = unit0 + gate_unit % kCellUnits, feature = feature0 + f;
    w_tile[gate_unit][f] = unit < hidden && feature < hidden
                               ? load<T>(w, (gate_unit / kCellUnits) * hidden + unit, feature, w_s)
                               : 0.0f;
  }
}

// acc[r] += sum over gate units gj of grad_tile[gj][r0 + r] * w_tile[gj][feature], for
// this thread's kCellRowsPerThread rows (from r0) and one feature of h0.
template <int kGates>
__device__ __forceinline__ void accumulate_through_weights(
    const float (&grad_tile)[kGates * kCellUnits][kCellRows + 1],
    const float (&w_tile)[kGates * kCellUnits][kCellUnits + 1], int feature, int r0,
    float (&acc)[kCellRowsPerThread]) {
#pragma unroll 4
  for (int gj = 0; gj < kGates * kCellUnits; ++gj) {
    const float w = w_tile[gj][feature];
#pragma unroll
    for (int r = 0; r < kCellRowsPerThread; ++r) acc[r] = fmaf(grad_tile[gj][r0 + r], w, acc[r]);
  }
}

}  // namespace seqops
