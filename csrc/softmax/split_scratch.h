// The scratch of an online softmax launch whose rows are split into parts (params.h,
// SoftmaxSplit), from CUDA's stream-ordered allocator: allocated, and the arrival counters
// zeroed, on the launch's stream before it; freed on that stream after it, so the memory
// goes back to the pool once the kernel is done with it. Host only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "softmax/params.h"
#include "softmax/plan.h"

namespace seqops {

class SplitScratch {
 public:
  // bytes_per_part: what each part of a row leaves for the others (forward two floats,
  // backward a double); a multiple of 4, so the counters after the partials stay aligned.
  SplitScratch(const SoftmaxPlan& plan, int64_t n_rows, size_t bytes_per_part, cudaStream_t stream)
      : stream_(stream) {
    if (plan.splits <= 1) return;
    const size_t partial_bytes = size_t(n_rows) * size_t(plan.splits) * bytes_per_part;
    const size_t counter_bytes = size_t(n_rows) * sizeof(int);
    if (cudaMallocAsync(&memory_, partial_bytes + counter_bytes, stream) != cudaSuccess) {
      (void)cudaGetLastError();  // no pool on this device, or out of memory: the caller runs unsplit
      memory_ = nullptr;
      ok_ = false;
      return;
    }
    int* arrivals = reinterpret_cast<int*>(static_cast<char*>(memory_) + partial_bytes);
    if (cudaMemsetAsync(arrivals, 0, counter_bytes, stream) != cudaSuccess) {
      (void)cudaGetLastError();
      ok_ = false;
      return;
    }
    split_ = {plan.splits, plan.chunk, memory_, arrivals, kSoftmaxSplitMaxSpins};
  }
  ~SplitScratch() {
    if (memory_ != nullptr) cudaFreeAsync(memory_, stream_);
  }
  SplitScratch(const SplitScratch&) = delete;
  SplitScratch& operator=(const SplitScratch&) = delete;

  // Whether the split plan can run (false: the scratch could not be had; run a block a row).
  bool ok() const { return ok_; }
  // What the kernel takes: splits 1 and no scratch unless a split plan got its scratch.
  SoftmaxSplit split() const { return split_; }

 private:
  cudaStream_t stream_;
  void* memory_ = nullptr;
  bool ok_ = true;
  SoftmaxSplit split_;
};

}  // namespace seqops
