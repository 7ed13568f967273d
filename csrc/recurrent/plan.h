// Launch geometry of the LSTM cell kernels, host-only so that tests can see it without a
// GPU. A block owns kLstmCellRows batch rows x kLstmCellUnits hidden units (all four
// gates of them) forward, or x kLstmCellUnits features of h0 backward; 128 threads, each
// holding 4 rows of one unit (x 4 gates forward). The products run as fp32 FMAs over
// shared-memory tiles of kLstmCellK: the CuTe MMA (tensor core) form is to come, once a
// GPU can measure it against this one and the Triton step.
#pragma once

#include <cstdint>

namespace seqops {

constexpr int kLstmCellRows = 16;
constexpr int kLstmCellUnits = 32;
constexpr int kLstmCellK = 16;
constexpr int kLstmCellThreads = 128;
constexpr int kLstmCellRowsPerThread = kLstmCellRows / (kLstmCellThreads / kLstmCellUnits);
static_assert(kLstmCellRowsPerThread == 4, "the kernels' register tiles hold 4 rows a thread");

struct LstmCellPlan {
  int64_t row_blocks = 0;   // grid x
  int64_t unit_blocks = 0;  // grid y
  int threads = kLstmCellThreads;
};

inline LstmCellPlan plan_lstm_cell(int64_t batch, int64_t hidden) {
  return {(batch + kLstmCellRows - 1) / kLstmCellRows, (hidden + kLstmCellUnits - 1) / kLstmCellUnits,
          kLstmCellThreads};
}

}  // namespace seqops
