// What the recurrent cell kernels (LSTM, GRU, Elman RNN) share: an element of a strided
// matrix as fp32, the sigmoid, the forward's product of a block's rows with the weight
// rows of its units, every gate at once, and the backward's product of the gradients
// through w_hh with w_hh, both through shared-memory tiles (geometry in plan.h).
// Two forms, by the element type: fp32 as FMAs (no TF32); fp16/bf16 on tensor cores
// (mma.sync m16n8k16, fp32 accumulation, mma_tile.cuh), the backward's gate gradients
// rounded to the dtype for their product as the Triton cells round them.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/dtypes.h"
#include "recurrent/mma_fragments.h"
#include "recurrent/mma_tile.cuh"
#include "recurrent/params.h"
#include "recurrent/plan.h"

namespace seqops {

template <typename T>
constexpr bool kCellOnTensorCores = sizeof(T) == 2;

// The forward's shared-memory tiles. FMA form: kCellK columns of the rows' operand and of
// the units' weight rows, fp32, padded by one against bank conflicts.
template <int kGates>
struct CellFmaTiles {
  float a[kCellK][kCellRows + 1];
  float w[kCellK][kGates * kCellUnits + 1];
};

// Tensor-core form: kCellMmaK columns of both in the 16-bit dtype (held as uint16_t: a
// __shared__ variable takes trivial types only), rows kCellMmaStride apart, then the
// warps' sums for the threads that own each (row, unit).
template <int kGates>
struct CellMmaTiles {
  uint16_t a[kCellRows][kCellMmaStride];
  uint16_t w[kGates * kCellUnits][kCellMmaStride];
  float sums[kCellRows][kGates * kCellUnits + 4];
};

template <typename T, int kGates>
using CellTiles = std::conditional_t<kCellOnTensorCores<T>, CellMmaTiles<kGates>, CellFmaTiles<kGates>>;

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

template <typename T>
__device__ __forceinline__ float load(const void* base, int64_t row, int64_t col, const Strides2& s) {
  return to_float(static_cast<const T*>(base)[row * s.row + col * s.col]);
}

// acc[r][gate] += sum over k < K of a[row r, k] * w[gate * H + unit, k], for this thread's
// kCellRowsPerThread rows and one unit; a [B, K], w [kGates * H, K], staged through shared
// memory kCellK columns at a time (the FMA form; the tensor-core one below). Every
// thread of the block calls it (it synchronises the block).
template <typename T, int kGates>
__device__ __forceinline__ void accumulate_gates(const void* a, const Strides2& a_s, const void* w, const Strides2& w_s,
                                                 int64_t K, int64_t batch, int64_t hidden, int64_t row0,
                                                 int64_t unit0, float (&acc)[kCellRowsPerThread][kGates],
                                                 CellFmaTiles<kGates>& tiles) {
  auto& a_tile = tiles.a;
  auto& w_tile = tiles.w;
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

// The same on tensor cores: kCellMmaK columns staged at a time; warp w takes units
// [8w, 8w + 8) of every gate (one m16n8 tile a gate), all k, so no warp's sum needs
// another's; the sums pass through shared memory to the threads that own them.
template <typename T, int kGates>
__device__ __forceinline__ void accumulate_gates(const void* a, const Strides2& a_s, const void* w, const Strides2& w_s,
                                                 int64_t K, int64_t batch, int64_t hidden, int64_t row0,
                                                 int64_t unit0, float (&acc)[kCellRowsPerThread][kGates],
                                                 CellMmaTiles<kGates>& tiles) {
  static_assert(kCellThreads / 32 * 8 == kCellUnits && kCellRows == 16, "a warp an m16n8 tile of every gate");
  T* a_tile = reinterpret_cast<T*>(&tiles.a[0][0]);
  T* w_tile = reinterpret_cast<T*>(&tiles.w[0][0]);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  float part[kGates][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kCellMmaK) {
    for (int e = tid; e < kCellRows * kCellMmaK; e += kCellThreads) {
      const int k = e % kCellMmaK, r = e / kCellMmaK;
      const int64_t row = row0 + r, col = k0 + k;
      a_tile[r * kCellMmaStride + k] =
          row < batch && col < K ? static_cast<const T*>(a)[row * a_s.row + col * a_s.col] : from_float<T>(0.0f);
    }
    for (int e = tid; e < kGates * kCellUnits * kCellMmaK; e += kCellThreads) {
      const int k = e % kCellMmaK, gate_unit = e / kCellMmaK;
      const int64_t u = unit0 + gate_unit % kCellUnits, col = k0 + k;
      w_tile[gate_unit * kCellMmaStride + k] =
          u < hidden && col < K
              ? static_cast<const T*>(w)[((gate_unit / kCellUnits) * hidden + u) * w_s.row + col * w_s.col]
              : from_float<T>(0.0f);
    }
    __syncthreads();
    const int steps = int(((K - k0 < kCellMmaK ? K - k0 : kCellMmaK) + 15) / 16);
    for (int step = 0; step < steps; ++step) {
#pragma unroll
      for (int gate = 0; gate < kGates; ++gate) {
        mma_tile<T>(part[gate], a_tile + step * 16, kCellMmaStride,
                    w_tile + (gate * kCellUnits + warp * 8) * kCellMmaStride + step * 16, kCellMmaStride);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int gate = 0; gate < kGates; ++gate) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const Pair at = mma_c_pair(lane, i / 2);
      tiles.sums[at.row][gate * kCellUnits + warp * 8 + at.col + i % 2] = part[gate][i];
    }
  }
  __syncthreads();
  const int unit = tid % kCellUnits, r0 = (tid / kCellUnits) * kCellRowsPerThread;
#pragma unroll
  for (int r = 0; r < kCellRowsPerThread; ++r) {
#pragma unroll
    for (int gate = 0; gate < kGates; ++gate) acc[r][gate] += tiles.sums[r0 + r][gate * kCellUnits + unit];
  }
  __syncthreads();
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

// The backward's d_h0 of a block (kCellRows rows x kCellUnits features) summed over the
// unit blocks: add() one block's product (the tiles as load_weight_block and the kernel
// fill them), for_each(f) calls f(row, feature, value) in the block for each value this
// thread holds. FMA form: kCellRowsPerThread rows of one feature a thread.
template <typename T, int kGates, bool kTensorCores = kCellOnTensorCores<T>>
struct ThroughWeights {
  float acc[kCellRowsPerThread] = {};

  __device__ __forceinline__ void add(const float (&grad_tile)[kGates * kCellUnits][kCellRows + 1],
                                      const float (&w_tile)[kGates * kCellUnits][kCellUnits + 1]) {
    accumulate_through_weights<kGates>(grad_tile, w_tile, threadIdx.x % kCellUnits,
                                       (threadIdx.x / kCellUnits) * kCellRowsPerThread, acc);
  }

  template <typename F>
  __device__ __forceinline__ void for_each(F f) const {
#pragma unroll
    for (int r = 0; r < kCellRowsPerThread; ++r) {
      f((threadIdx.x / kCellUnits) * kCellRowsPerThread + r, int(threadIdx.x % kCellUnits), acc[r]);
    }
  }
};

// Tensor-core form: warp w holds features [8w, 8w + 8) as one m16n8 tile; the fp32 tiles'
// pairs along the gate units are packed (rounded) to T as the fragments are loaded.
template <typename T, int kGates>
struct ThroughWeights<T, kGates, true> {
  static_assert(kCellThreads / 32 * 8 == kCellUnits && kCellRows == 16, "a warp an m16n8 tile of the features");
  static_assert(kGates * kCellUnits % 16 == 0, "whole k-steps of gate units");
  float part[4] = {};

  __device__ __forceinline__ void add(const float (&grad_tile)[kGates * kCellUnits][kCellRows + 1],
                                      const float (&w_tile)[kGates * kCellUnits][kCellUnits + 1]) {
    const int n0 = int(threadIdx.x / 32) * 8;
#pragma unroll
    for (int k0 = 0; k0 < kGates * kCellUnits; k0 += 16) {
      mma_tile<T>(
          part, [&](int row, int k) { return packed_pair<T>(grad_tile[k0 + k][row], grad_tile[k0 + k + 1][row]); },
          [&](int n, int k) { return packed_pair<T>(w_tile[k0 + k][n0 + n], w_tile[k0 + k + 1][n0 + n]); });
    }
  }

  template <typename F>
  __device__ __forceinline__ void for_each(F f) const {
    const int lane = threadIdx.x % 32, n0 = int(threadIdx.x / 32) * 8;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const Pair at = mma_c_pair(lane, i / 2);
      f(at.row, n0 + at.col + i % 2, part[i]);
    }
  }
};

}  // namespace seqops
