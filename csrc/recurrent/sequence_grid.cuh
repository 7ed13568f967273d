// What the whole-sequence recurrent kernels share (the LSTM's, lstm_sequence.cu, and the
// GRU's and RNNs', hidden_sequence.cu) about their grid: a step of the schedule, the load
// of an element another block wrote before the last grid barrier, and the cooperative
// launch that puts every block on the GPU at once or refuses. Their products are in
// sequence_products.cuh; geometry in plan.h.
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

// xw[r][gate] = the input projection xw[step row, gate * H + unit] of this thread's rows of
// the pass at r0 (lane + r * kLanes) and its unit, 0 past the step's rows or H.
template <typename T, int kGates>
__device__ __forceinline__ void load_input_projection(const StepEntry& step, int64_t r0, int64_t H, int64_t unit,
                                                      const void* xw_src, const Strides2& xw_s,
                                                      float (&xw)[kRowsPerThread][kGates]) {
  const int lane = threadIdx.x / kUnits;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int64_t row = r0 + lane + r * kLanes;
    const bool inside = unit < H && row < step.rows;
#pragma unroll
    for (int gate = 0; gate < kGates; ++gate) {
      xw[r][gate] = inside ? load<T>(xw_src, step.offset + row, gate * H + unit, xw_s) : 0.0f;
    }
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
