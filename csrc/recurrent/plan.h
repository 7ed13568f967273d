// Launch geometry of the recurrent cell kernels (the LSTM, GRU and Elman RNN steps) and of
// the whole-sequence kernels, host-only so that tests can see it without a GPU.
// Cells: a block owns kCellRows batch rows x kCellUnits hidden units (every gate of them)
// forward, or x kCellUnits features of h0 backward; 128 threads, each holding 4 rows of
// one unit (x the gates forward). The products run as fp32 FMAs over shared-memory tiles
// of kCellK (cell_tiles.cuh): the CuTe MMA (tensor core) form is to come, once a GPU can
// measure it against this one and the Triton step.
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

// The whole-sequence kernels (lstm_sequence.cu, and hidden_sequence.cu for the GRU and the
// RNNs): a block owns kSequenceUnits hidden units for every step and keeps their slice of
// W_hh in shared memory for the whole launch (forward: the G gate rows of each unit, H x G
// x kSequenceUnits values, G = 4 for the LSTM, 3 for the GRU, 1 for the RNNs; backward:
// the units' columns, G*H x kSequenceUnits); blocks meet at a grid-wide barrier after each step,
// so the launch is cooperative: all blocks resident at once, or no launch. A block computes
// kSequencePassRows batch rows at a time, each of its threads kSequenceRowsPerThread rows of
// one unit, staging kSequenceK columns of the exchanged operand (h forward, the next
// step's gate gradients backward) through shared memory as fp32.
constexpr int kSequenceUnits = 8;
constexpr int kSequenceThreads = 256;
constexpr int kSequencePassRows = 64;
constexpr int kSequenceK = 32;
constexpr int kSequenceRowLanes = kSequenceThreads / kSequenceUnits;
constexpr int kSequenceRowsPerThread = kSequencePassRows / kSequenceRowLanes;
static_assert(kSequenceRowsPerThread * kSequenceRowLanes == kSequencePassRows, "a pass covers whole rows");
constexpr int64_t kSequenceStagingBytes = int64_t(kSequencePassRows) * (kSequenceK + 1) * 4;

struct SequencePlan {
  int64_t blocks = 0;        // grid x: one a slice of kSequenceUnits units
  int64_t shared_bytes = 0;  // dynamic shared memory a block: staging, then the W_hh slice
  int threads = kSequenceThreads;
};

// `projection`: the LSTM's P (< hidden), 0 without one. With it a block also keeps the
// projection's slice: forward, the W_hr rows of its 8 features (8 x H), beside W_hh's
// 4 x 8 x P; backward, the W_hr columns of its 8 units (P x 8) beside W_hh's columns of
// its features (4H x 8): the larger, so the plan's.
inline SequencePlan plan_sequence(int64_t hidden, int element_size, int gates, int64_t projection = 0) {
  return {(hidden + kSequenceUnits - 1) / kSequenceUnits,
          kSequenceStagingBytes + kSequenceUnits * (gates * hidden + projection) * int64_t(element_size),
          kSequenceThreads};
}

// Why a GPU with `multiprocessors` SMs and `max_shared_bytes` of (opt-in) shared memory a
// block cannot run the plan, or nullptr: every block must be resident at once (at most one
// a multiprocessor is counted on: the W_hh slices take most of one's shared memory), and a
// slice must fit. Static text, for Status::bad_argument and the Python side's reason.
inline const char* sequence_unfit_reason(const SequencePlan& plan, int64_t multiprocessors,
                                         int64_t max_shared_bytes) {
  if (plan.blocks > multiprocessors) {
    return "the CUDA sequence kernels keep 8 hidden units a block, one block a multiprocessor: this hidden "
           "size needs more blocks than the GPU has multiprocessors";
  }
  if (plan.shared_bytes > max_shared_bytes) {
    return "the CUDA sequence kernels keep W_hh in shared memory: this hidden size's slices do not fit in a "
           "block's shared memory on this GPU";
  }
  return nullptr;
}

}  // namespace seqops
