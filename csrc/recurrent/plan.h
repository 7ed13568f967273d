// Launch geometry of the recurrent cell kernels (the LSTM, GRU and Elman RNN steps) and of
// the whole-sequence kernels, host-only so that tests can see it without a GPU.
// Cells: a block owns kCellRows batch rows x kCellUnits hidden units (every gate of them)
// forward, or x kCellUnits features of h0 backward; 128 threads, each holding 4 rows of
// one unit (x the gates forward). The products run as FMAs over shared-memory tiles of
// kCellK (cell_tiles.cuh) in fp32; in fp16/bf16 on tensor cores (mma.sync m16n8k16),
// staging kCellMmaK columns of 16-bit operands at a time, rows kCellMmaStride elements
// apart (36 words: a fragment load's 8 rows x 4 words fall in 32 banks).
#pragma once

#include <cstdint>

namespace seqops {

constexpr int kCellRows = 16;
constexpr int kCellUnits = 32;
constexpr int kCellK = 16;
constexpr int kCellMmaK = 64;
constexpr int kCellMmaStride = kCellMmaK + 8;
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
// one unit.
// The products take one of two forms by the layer's element size (sequence_products.cuh):
// - fp32: FMAs, staging kSequenceK columns of the exchanged operand (h forward, the next
//   step's gate gradients backward) through shared memory as fp32, the slices k-major;
// - fp16/bf16: tensor cores (mma.sync m16n8k16, fp32 accumulation), the exchanged operand
//   staged kSequenceMmaChunk columns of kSequenceMmaRows rows at a time in the layer's
//   dtype, the slices row-major with rows of sequence_mma_stride(K) elements, and the
//   warps' partial sums (each warp takes every 8th k-step) added through a reduction tile.
constexpr int kSequenceUnits = 8;
constexpr int kSequenceThreads = 256;
constexpr int kSequencePassRows = 64;
constexpr int kSequenceK = 32;
constexpr int kSequenceRowLanes = kSequenceThreads / kSequenceUnits;
constexpr int kSequenceRowsPerThread = kSequencePassRows / kSequenceRowLanes;
static_assert(kSequenceRowsPerThread * kSequenceRowLanes == kSequencePassRows, "a pass covers whole rows");
constexpr int64_t kSequenceStagingBytes = int64_t(kSequencePassRows) * (kSequenceK + 1) * 4;

constexpr int kSequenceMmaRows = 16;
constexpr int kSequenceMmaChunk = 1024;
constexpr int kSequenceWarps = kSequenceThreads / 32;
// A row of the reduction tile: the 4 x 8 columns of the LSTM's gates, 4 floats of padding.
constexpr int kSequenceReduceStride = 4 * kSequenceUnits + 4;
static_assert(kSequencePassRows % kSequenceMmaRows == 0, "a pass is whole mma tiles");
static_assert(kSequenceMmaRows == 16 && kSequenceUnits == 8, "one m16n8 tile a gate");

// Elements a row of K (16-bit) takes in the tensor-core form's shared memory: K rounded up
// to the mma's k-step of 16, then 8 more, so that a row starts 4 banks (mod 32) after the
// one before it and the 8 rows x 4 words a fragment load touches fall in 32 banks.
constexpr int64_t sequence_mma_stride(int64_t K) { return (K + 15) / 16 * 16 + 8; }
static_assert(sequence_mma_stride(768) / 2 % 8 == 4 && sequence_mma_stride(1) / 2 % 8 == 4, "rows 4 banks apart");

constexpr int64_t kSequenceMmaStagingBytes =
    int64_t(kSequenceMmaRows) * sequence_mma_stride(kSequenceMmaChunk) * 2 +
    int64_t(kSequenceWarps) * kSequenceMmaRows * kSequenceReduceStride * 4;
static_assert(kSequenceMmaStagingBytes % 16 == 0, "the slices after the staging stay 16-byte aligned");

// Whether a layer of `element_size` bytes takes the tensor-core form.
constexpr bool sequence_on_tensor_cores(int element_size) { return element_size == 2; }

// Bytes before the weight slices in a block's shared memory.
constexpr int64_t sequence_staging_bytes(int element_size) {
  return sequence_on_tensor_cores(element_size) ? kSequenceMmaStagingBytes : kSequenceStagingBytes;
}

// Elements a slice of `n` rows of K values takes (in either form's layout).
constexpr int64_t sequence_slice_elements(int element_size, int64_t n, int64_t K) {
  return sequence_on_tensor_cores(element_size) ? n * sequence_mma_stride(K) : n * K;
}

struct SequencePlan {
  int64_t blocks = 0;        // grid x: one a slice of kSequenceUnits units
  int64_t shared_bytes = 0;  // dynamic shared memory a block: staging, then the weight slices
  int threads = kSequenceThreads;
};

// `projection`: the LSTM's P (< hidden), 0 without one. With it a block also keeps the
// projection's slice: forward, the W_hr rows of its 8 features (8 x H), beside W_hh's
// 4 x 8 rows of P; backward, the W_hr columns of its 8 units (8 x P) beside W_hh's columns
// of its features (8 x 4H). A block's shared memory holds the larger direction's.
inline SequencePlan plan_sequence(int64_t hidden, int element_size, int gates, int64_t projection = 0) {
  const int64_t features = projection > 0 ? projection : hidden;
  const int64_t forward = sequence_slice_elements(element_size, int64_t(gates) * kSequenceUnits, features) +
                          (projection > 0 ? sequence_slice_elements(element_size, kSequenceUnits, hidden) : 0);
  const int64_t backward = sequence_slice_elements(element_size, kSequenceUnits, int64_t(gates) * hidden) +
                           (projection > 0 ? sequence_slice_elements(element_size, kSequenceUnits, projection) : 0);
  return {(hidden + kSequenceUnits - 1) / kSequenceUnits,
          sequence_staging_bytes(element_size) + (forward > backward ? forward : backward) * int64_t(element_size),
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
