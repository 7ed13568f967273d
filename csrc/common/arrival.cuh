// Blocks that meet without a grid barrier: a block counts itself in at a counter and
// waits, a bounded number of polls, for the others (the softmax's split rows, whose
// parts' blocks must all be resident for the wait to end, which their plan arranges but
// nothing guarantees: a block that gives up does the others' share of the work itself).
#pragma once

#include <cuda_runtime.h>

namespace seqops {

// Every thread of the block calls this after the block's stores that the others will
// read; returns whether `target` blocks (this one included) arrived within max_spins
// polls. Thread 0 fences (making the block's stores, ordered before it by the barrier,
// visible device-wide), adds itself, polls, and fences again so that what the counted
// blocks stored is visible to the loads after the return (which should read through L2:
// __ldcg, as L1 is not coherent across SMs). `flag` is one int of shared memory.
__device__ __forceinline__ bool arrive_and_wait(int* counter, int target, int max_spins, int* flag) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    int seen = atomicAdd(counter, 1) + 1;
    for (int spins = 0; seen < target && spins < max_spins; ++spins) seen = atomicAdd(counter, 0);
    __threadfence();
    *flag = seen >= target;
  }
  __syncthreads();
  return *flag != 0;
}

}  // namespace seqops
