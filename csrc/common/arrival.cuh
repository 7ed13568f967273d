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

// Blocks that take turns at counters (the attention backward's ordered dQ). Each block
// first takes a ticket, the order in which blocks started, and works as the block of that
// number (not of its blockIdx): a block then only ever waits for blocks of lower tickets,
// which are running or done, so the waits end whatever order the hardware starts blocks in.
// Returns the ticket to every thread; `counter` starts at 0.
__device__ __forceinline__ int take_ticket(int* counter) {
  __shared__ int ticket;
  if (threadIdx.x == 0) ticket = atomicAdd(counter, 1);
  __syncthreads();
  return ticket;
}

// Waits until `turn` blocks have passed this counter (which starts at 0); every thread
// calls it, thread 0 polls (about a microsecond a poll). Returns whether the turn came
// within max_polls: it always should (the turns follow the tickets), so false means a
// bug, for the caller to make visible (NaN), never a silent reorder.
__device__ __forceinline__ bool wait_for_turn(const int* counter, int turn, int max_polls) {
  __shared__ int came;
  if (threadIdx.x == 0) {
    int seen = 0;
    for (int polls = 0; polls < max_polls; ++polls) {
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
      if (seen >= turn) break;
      __nanosleep(64);
    }
    __threadfence();
    came = seen >= turn;
  }
  __syncthreads();
  return came != 0;
}

// Passes the turn on, after the block's writes of its turn (each thread's ordered before
// the pass by its own fence and the barrier).
__device__ __forceinline__ void pass_turn(int* counter) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(counter, 1);
}

}  // namespace seqops
