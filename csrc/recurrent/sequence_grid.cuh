// What the whole-sequence recurrent kernels share (the LSTM's, lstm_sequence.cu, and the
// GRU's and RNNs', hidden_sequence.cu): a step of the schedule, the load of an element
// another block wrote before the last grid barrier, the staging tile of the exchanged
// operand, and the cooperative launch that puts every block on the GPU at once or refuses.
// Geometry in plan.h.
#pragma once

#include <cuda_runtime.h>

#include "common/device.h"
#include "common/status.h"
#include "recurrent/cell_tiles.cuh"
#include "recurrent/params.h"
#include "recurrent/plan.h"

namespace seqops {
namespace sequence_grid {

constexpr int kUnits = kSequenceUnits;
constexpr int kThreads = kSequenceThreads;
constexpr int kPassRows = kSequencePassRows;
constexpr int kK = kSequenceK;
constexpr int kLanes = kSequenceRowLanes;
constexpr int kRowsPerThread = kSequenceRowsPerThread;

// An element another block wrote before the last grid barrier, read from L2: a line of the
// exchanged tensor could sit stale in this SM's L1 (L1 is not coherent across SMs), cached
// when a neighbouring row was read a step before.
template <typename T>
__device__ __forceinline__ float load_exchanged(const void* base, int64_t row, int64_t col, const Strides2& s) {
  return to_float(__ldcg(static_cast<const T*>(base) + row * s.row + col * s.col));
}

// One step of the schedule: its first packed row, rows, the first row of the step it
// continues from and how many of its rows continue (all 0 for a step that is not there).
struct StepEntry {
  int64_t offset = 0, rows = 0, prev = 0, carried = 0;
};

__device__ __forceinline__ StepEntry step_entry(const SequenceSchedule& s, int64_t t) {
  return {s.offsets[t], s.rows[t], s.prev[t], s.carried[t]};
}

// kK columns of kPassRows rows of the exchanged operand, fp32, padded against bank conflicts.
using StagingTile = float[kPassRows][kK + 1];

// The forward's slice of a block of W [kGates * n_units, K] (W_hh, or the projection's
// W_hr with one gate), into shared memory for the whole launch: w[k * G*U + gate * U + u] =
// W[gate * n_units + unit0 + u, k], the kGates rows of each of the block's units (or
// features), k-major so that a warp's threads (consecutive u) read consecutive words. In
// 32 bits: K is at most a hidden size, at most kUnits x the multiprocessors (plan.h), and a
// 64-bit division is a call, across which ptxas spilled the values the time loop keeps.
template <typename T, int kGates>
__device__ __forceinline__ void load_weight_rows(T* w, const void* w_src, const Strides2& w_s, int64_t n_units,
                                                 int64_t K, int64_t unit0) {
  const int k32 = int(K);
  for (int e = threadIdx.x; e < kGates * kUnits * k32; e += kThreads) {
    const int k = e % k32, gate_unit = e / k32;  // k fastest: W's rows read in order
    const int64_t row_unit = unit0 + gate_unit % kUnits;
    w[k * kGates * kUnits + gate_unit] =
        row_unit < n_units
            ? static_cast<const T*>(w_src)[((gate_unit / kUnits) * n_units + row_unit) * w_s.row + int64_t(k) * w_s.col]
            : from_float<T>(0.0f);
  }
}

// The backward's W_hh slice of a block: w[j * U + u] = W_hh[j, unit0 + u] for the `rows`
// gate rows j, the block's units' columns.
template <typename T>
__device__ __forceinline__ void load_weight_columns(T* w, const void* w_hh, const Strides2& w_s, int64_t rows,
                                                    int64_t H, int64_t unit0) {
  for (int64_t e = threadIdx.x; e < rows * kUnits; e += kThreads) {
    const int64_t j = e / kUnits, column = unit0 + e % kUnits;
    w[e] = column < H ? static_cast<const T*>(w_hh)[j * w_s.row + column * w_s.col] : from_float<T>(0.0f);
  }
}

// acc[r][g] += a[row, :] . W[g * U' + unit, :] over K columns, for this thread's
// kRowsPerThread rows of the pass at r0 (of `rows`) and its unit: a's elements from
// source(row, col) (row < rows, col < K), staged kK columns at a time; w the block's slice
// (load_weight_rows). Every thread of the block calls it (it synchronises the block).
template <typename T, int kGates, typename Source>
__device__ __forceinline__ void accumulate_staged(int64_t rows, int64_t r0, int64_t K, Source source, const T* w,
                                                  StagingTile& tile, float (&acc)[kRowsPerThread][kGates]) {
  const int tid = threadIdx.x, u = tid % kUnits, lane = tid / kUnits;
  for (int64_t k0 = 0; k0 < K; k0 += kK) {
    for (int e = tid; e < kPassRows * kK; e += kThreads) {
      const int k = e % kK, r = e / kK;
      const int64_t row = r0 + r, col = k0 + k;
      tile[r][k] = row < rows && col < K ? source(row, col) : 0.0f;
    }
    __syncthreads();
    const int width = K - k0 < kK ? int(K - k0) : kK;
    for (int k = 0; k < width; ++k) {
      const T* w_k = w + (k0 + k) * kGates * kUnits + u;
      float wv[kGates];
#pragma unroll
      for (int g = 0; g < kGates; ++g) wv[g] = to_float(w_k[g * kUnits]);
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const float a = tile[lane + r * kLanes][k];
#pragma unroll
        for (int g = 0; g < kGates; ++g) acc[r][g] = fmaf(a, wv[g], acc[r][g]);
      }
    }
    __syncthreads();
  }
}

// The recurrent product of a step: acc[r][g] += h_prev[row] . W_hh[g * H + unit, :] over
// the K features of h, h_prev the previous step's output (every block's, exchanged) for
// the rows that continue from it, h0 for the rows that start here.
template <typename T, int kGates>
__device__ __forceinline__ void accumulate_recurrent(const StepEntry& step, int64_t r0, int64_t K, const void* out,
                                                     const Strides2& out_s, const void* h0, const Strides2& h0_s,
                                                     const T* w, StagingTile& h_tile,
                                                     float (&acc)[kRowsPerThread][kGates]) {
  accumulate_staged<T, kGates>(
      step.rows, r0, K,
      [&](int64_t row, int64_t col) {
        return row < step.carried ? load_exchanged<T>(out, step.prev + row, col, out_s) : load<T>(h0, row, col, h0_s);
      },
      w, h_tile, acc);
}

// reaching[r] += sum over the `rows` gate rows j of dgates[done row, column_of(j)] * W_hh[j,
// unit]: the gradient reaching the h_prev of step `done` through W_hh, for this thread's
// rows of the pass at r0 and its unit; dgates [N, width] fp32, exchanged, staged kK gate
// columns at a time; w the block's slice (load_weight_columns). Every thread of the block
// calls it.
template <typename T, typename ColumnOf>
__device__ __forceinline__ void accumulate_reaching(const StepEntry& done, int64_t r0, int64_t rows,
                                                    const float* dgates, int64_t width, ColumnOf column_of,
                                                    const T* w, StagingTile& g_tile,
                                                    float (&reaching)[kRowsPerThread]) {
  const int tid = threadIdx.x, u = tid % kUnits, lane = tid / kUnits;
  for (int64_t j0 = 0; j0 < rows && done.rows > 0; j0 += kK) {
    for (int e = tid; e < kPassRows * kK; e += kThreads) {
      const int k = e % kK, r = e / kK;
      const int64_t row = r0 + r, j = j0 + k;
      g_tile[r][k] = row < done.rows && j < rows ? __ldcg(dgates + (done.offset + row) * width + column_of(j)) : 0.0f;
    }
    __syncthreads();
    const int count = rows - j0 < kK ? int(rows - j0) : kK;
    for (int k = 0; k < count; ++k) {
      const float wv = to_float(w[(j0 + k) * kUnits + u]);
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) reaching[r] = fmaf(g_tile[lane + r * kLanes][k], wv, reaching[r]);
    }
    __syncthreads();
  }
}

// The refusals of one family's launchers, static text (Status carries no owned strings).
struct Refusals {
  const char* negative_steps;
  const char* null_schedule;
  const char* no_cooperative_launch;
  const char* not_resident;
};

inline Status check_schedule(const Refusals& refusals, const SequenceSchedule& s) {
  if (s.steps < 0) return Status::bad_argument(refusals.negative_steps);
  if (s.steps > 0 && (s.offsets == nullptr || s.rows == nullptr || s.prev == nullptr || s.carried == nullptr)) {
    return Status::bad_argument(refusals.null_schedule);
  }
  return Status::ok();
}

// The device's limits, the plan's fit, and the kernel's opt-in to the shared memory.
template <typename Kernel>
Status prepare_launch(const Refusals& refusals, Kernel kernel, const SequencePlan& plan) {
  cudaError_t error = cudaSuccess;
  const DeviceSize size = current_device_size(&error);
  if (error != cudaSuccess) return Status::from_cuda(error);
  if (!size.cooperative_launch) return Status::bad_argument(refusals.no_cooperative_launch);
  if (const char* reason = sequence_unfit_reason(plan, size.multiprocessors, size.max_shared_bytes)) {
    return Status::bad_argument(reason);
  }
  error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(plan.shared_bytes));
  if (error != cudaSuccess) return Status::from_cuda(error);
  int per_multiprocessor = 0;
  error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, kernel, plan.threads,
                                                        size_t(plan.shared_bytes));
  if (error != cudaSuccess) return Status::from_cuda(error);
  if (int64_t(per_multiprocessor) * size.multiprocessors < plan.blocks) {
    return Status::bad_argument(refusals.not_resident);
  }
  return Status::ok();
}

template <typename Kernel, typename Params>
Status launch_cooperative(const Refusals& refusals, Kernel kernel, const SequencePlan& plan, const Params& params,
                          cudaStream_t stream) {
  const Status prepared = prepare_launch(refusals, kernel, plan);
  if (!prepared.is_ok()) return prepared;
  void* args[] = {const_cast<Params*>(&params)};
  return Status::from_cuda(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(unsigned(plan.blocks)),
                                                       dim3(unsigned(plan.threads)), args, size_t(plan.shared_bytes),
                                                       stream));
}

}  // namespace sequence_grid
}  // namespace seqops
