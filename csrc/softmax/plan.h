// Launch geometry of the softmax kernels per row length, host-only so that the bindings
// can show it to tests on a machine without a GPU.
//
// - warp_per_row (n_cols <= 1024): a warp owns a row, lane i holding columns i, i+32, ...;
//   four rows a block. Short rows need no shared memory and no barrier. Two builds: up to
//   128 columns (4 values a lane) and up to 1024 (32 a lane), so that short rows do not
//   carry 32 registers of predicated-off work.
// - block_per_row (n_cols <= 16384): a block owns a row, each thread two chunks of 8
//   consecutive columns, read with 16-byte loads when the row is contiguous and aligned.
//   As many warps as the row needs (up to 32), so a 1025-column row takes 96 threads,
//   not 1024.
// - online (longer rows): a block of 512 threads sweeps a row twice; the first sweep
//   keeps a running max and a rescaled running sum per thread, merged once at the end,
//   the second writes. The grid is bounded (online_block_bound) so that the rows in
//   flight fill at most half of L2: a row's second sweep re-reads what its first read
//   moments before from L2, not from DRAM (one DRAM read an element), as the Triton
//   online kernels' grid is (kernels/softmax/rows.py, online_programs, whose constants
//   these mirror). (The alternative for sm90a, a cluster sharing a row through
//   distributed shared memory, waits for a GPU to measure the two against each other.)
// 16384 columns mirrors the Triton kernels' one-pass limit (kernels/softmax/rows.py).
#pragma once

#include <algorithm>
#include <cstdint>

namespace seqops {

enum class SoftmaxKernel : int { warp_per_row = 0, block_per_row = 1, online = 2 };

constexpr int64_t kSoftmaxShortWarpCols = 128;
constexpr int64_t kSoftmaxWarpCols = 1024;
constexpr int64_t kSoftmaxBlockCols = 16384;
constexpr int kSoftmaxRowsPerWarpBlock = 4;
constexpr int kSoftmaxChunk = 8;            // consecutive columns a thread loads at once
constexpr int kSoftmaxChunksPerThread = 2;  // block_per_row: 16 values a thread
constexpr int kSoftmaxOnlineThreads = 512;
// Blocks of one launch at most; kernels stride over the rows past it.
constexpr int64_t kSoftmaxMaxBlocks = int64_t(1) << 30;

// The share of L2 the rows of an online launch may fill, and the least share of the
// multiprocessors a bounded grid may keep busy (below it, a block a row: two DRAM reads,
// but the whole GPU pulling).
constexpr int64_t kSoftmaxL2ShareDivisor = 2;  // half
constexpr int64_t kSoftmaxMinSmShareDivisor = 4;  // a quarter

// Blocks of an online launch whose rows take row_bytes each (every tensor read or written,
// and the mask) on a GPU of l2_bytes and `multiprocessors`, so that the rows in flight fit
// the L2 share; 0 where that would leave fewer than a quarter of the multiprocessors
// busy, or the GPU is not known (l2_bytes 0): no bound.
inline int64_t online_block_bound(int64_t row_bytes, int64_t l2_bytes, int64_t multiprocessors) {
  if (l2_bytes <= 0 || row_bytes <= 0) return 0;
  const int64_t blocks = l2_bytes / kSoftmaxL2ShareDivisor / row_bytes;
  return blocks >= std::max<int64_t>(1, multiprocessors / kSoftmaxMinSmShareDivisor) ? blocks : 0;
}

// Columns an online block sweeps in one step (every thread a chunk), the most parts a
// split row takes, and the polls a part makes for the others before it reads the whole
// row itself (as kernels/softmax/rows.py's MAX_SPLITS and SPLIT_MAX_SPINS).
constexpr int64_t kSoftmaxOnlineStep = int64_t(kSoftmaxOnlineThreads) * kSoftmaxChunk;
constexpr int64_t kSoftmaxMaxSplits = 256;
constexpr int kSoftmaxSplitMaxSpins = 1 << 14;

struct SoftmaxPlan {
  SoftmaxKernel kernel = SoftmaxKernel::warp_per_row;
  int threads = 0;           // per block
  int values_per_lane = 0;   // warp_per_row: columns a lane holds (4 or 32)
  int rows_per_block = 1;
  int64_t blocks = 0;
  // online only: each row in `splits` parts of `chunk` columns (a multiple of
  // kSoftmaxOnlineStep), block b sweeping part b % splits of every (blocks / splits)-th row.
  int64_t splits = 1;
  int64_t chunk = 0;
};

// `plan` with an online grid bounded by online_block_bound, or, where no bound leaves a
// quarter of the multiprocessors busy, with its rows split into parts swept side by side
// (as kernels/softmax/rows.py's split_rows): a block a part, at most one a multiprocessor,
// chunks sized so that one a multiprocessor fits the L2 share. A part's first sweep gives
// its statistics, which the row's parts combine once all have arrived (a part that waits
// in vain sweeps the whole row for them), and its second sweep re-reads its chunk from
// L2. Other plans unchanged; an online plan without the sizes stays a block a row.
inline SoftmaxPlan bounded_online(SoftmaxPlan plan, int64_t n_rows, int64_t n_cols, int64_t col_bytes,
                                  int64_t l2_bytes, int64_t multiprocessors) {
  if (plan.kernel != SoftmaxKernel::online || l2_bytes <= 0 || col_bytes <= 0 || multiprocessors <= 0) return plan;
  const int64_t bound = online_block_bound(n_cols * col_bytes, l2_bytes, multiprocessors);
  if (bound > 0) {
    plan.blocks = std::min(plan.blocks, bound);
    return plan;
  }
  int64_t chunk = l2_bytes / kSoftmaxL2ShareDivisor / (multiprocessors * col_bytes) / kSoftmaxOnlineStep *
                  kSoftmaxOnlineStep;
  if (chunk == 0) return plan;
  const int64_t splits = (n_cols + chunk - 1) / chunk;
  if (splits > std::min(multiprocessors, kSoftmaxMaxSplits) || n_rows > kSoftmaxMaxBlocks / splits) return plan;
  chunk = ((n_cols + splits - 1) / splits + kSoftmaxOnlineStep - 1) / kSoftmaxOnlineStep * kSoftmaxOnlineStep;
  plan.splits = splits;
  plan.chunk = chunk;
  plan.blocks = std::min(n_rows * splits, multiprocessors / splits * splits);
  return plan;
}

inline SoftmaxPlan plan_softmax(int64_t n_rows, int64_t n_cols) {
  SoftmaxPlan plan;
  if (n_cols <= kSoftmaxWarpCols) {
    plan.kernel = SoftmaxKernel::warp_per_row;
    plan.values_per_lane = n_cols <= kSoftmaxShortWarpCols ? 4 : 32;
    plan.rows_per_block = kSoftmaxRowsPerWarpBlock;
    plan.threads = 32 * kSoftmaxRowsPerWarpBlock;
  } else if (n_cols <= kSoftmaxBlockCols) {
    plan.kernel = SoftmaxKernel::block_per_row;
    const int64_t per_thread = kSoftmaxChunk * kSoftmaxChunksPerThread;
    const int64_t threads = (n_cols + per_thread - 1) / per_thread;
    plan.threads = static_cast<int>((threads + 31) / 32 * 32);
  } else {
    plan.kernel = SoftmaxKernel::online;
    plan.threads = kSoftmaxOnlineThreads;
  }
  plan.blocks = std::min((n_rows + plan.rows_per_block - 1) / plan.rows_per_block, kSoftmaxMaxBlocks);
  return plan;
}

// The backward holds two tensors of a row (y and dy) where the forward holds one. Its
// block_per_row form spills registers when built for 1024 or 512 threads (ptxas -v, CI's
// tests/test_cuda_build.py) and not for 256, so it stops at 256 threads (4096 columns);
// longer rows take the online form's two sweeps, the second mostly served by L2.
constexpr int kSoftmaxBackwardBlockThreads = 256;

inline SoftmaxPlan plan_softmax_backward(int64_t n_rows, int64_t n_cols) {
  SoftmaxPlan plan = plan_softmax(n_rows, n_cols);
  if (plan.kernel == SoftmaxKernel::block_per_row && plan.threads > kSoftmaxBackwardBlockThreads) {
    plan.kernel = SoftmaxKernel::online;
    plan.threads = kSoftmaxOnlineThreads;
  }
  return plan;
}

// Whether every row of a tensor can be read in 8-column chunks with vector loads: its
// columns are contiguous and every row starts on a `bytes` boundary (16 for 2- and 4-byte
// elements, 8 for the uint8 mask). Sizes-1 dims carry stride 0 in the row model, so their
// strides do not spoil this.
inline bool rows_vector_aligned(const void* data, int64_t stride_a, int64_t stride_b, int64_t stride_c,
                                int64_t stride_col, int element_size, int bytes) {
  if (stride_col != 1) return false;
  const auto aligned = [&](int64_t stride) { return (stride * element_size) % bytes == 0; };
  return reinterpret_cast<uintptr_t>(data) % bytes == 0 && aligned(stride_a) && aligned(stride_b) && aligned(stride_c);
}

}  // namespace seqops
