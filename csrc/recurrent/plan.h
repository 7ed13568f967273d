// Launch geometry of the recurrent cell kernels (the LSTM, GRU and Elman RNN steps),
// host-only so that tests can see it without a GPU. A block owns kCellRows batch rows x
// kCellUnits hidden units (every gate of them) forward, or x kCellUnits features of h0
// backward; 128 threads, each holding 4 rows of one unit (x the gates forward). The
// products run as fp32 FMAs over shared-memory tiles of kCellK (cell_tiles.cuh): the CuTe
// MMA (tensor core) form is to come, once a GPU can measure it against this one and the
// Triton step.
#pragma once

#include <cstdint>

namespace seqops {

constexpr int kCellRows = 16;
constexpr int kCellUnits = 32;
constexpr int kCellK = 16;
constexpr int kCellThreads = 128;
constexpr int kCellRowsPerThread = kCellRows / (kCellThreads / kCellUnits);
static_assert(kCellRowsPerThread == 4, "the kernels' register tiles hold 4 rows a thread");

struct CellPlan {
  int64_t row_blocks = 0;   // grid x
  int64_t unit_blocks = 0;  // grid y
  int threads = kCellThreads;
};

inline CellPlan plan_cell(int64_t batch, int64_t hidden) {
  return {(batch + kCellRows - 1) / kCellRows, (hidden + kCellUnits - 1) / kCellUnits, kCellThreads};
}

// Whether the grid of plan_cell fits CUDA's limits (grid y at most 65535: hidden up to
// 2097120 units).
inline bool cell_grid_fits(int64_t batch, int64_t hidden) {
  const CellPlan plan = plan_cell(batch, hidden);
  return plan.row_blocks <= 2147483647 && plan.unit_blocks <= 65535;
}

}  // namespace seqops
