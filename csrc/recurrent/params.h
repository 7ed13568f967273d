// What the recurrent cell launchers take: plain pointers, one dtype code for the cell's
// tensors (input, states, weights and biases share it, as torch's cells require), sizes, and
// each tensor's own int64 strides (rows, columns; biases one stride), so that sliced,
// transposed and expanded tensors are read in place. Outputs are the Python side's own
// contiguous allocations, addressed through strides all the same.
#pragma once

#include <cstdint>

#include "common/dtypes.h"

namespace seqops {

struct Strides2 {
  int64_t row = 0, col = 0;
};

// h1, c1 [B, H] (dtype) and the gate activations i, f, g, o [B, 4H] (fp32, what the
// backward needs) from x [B, I], h0, c0 [B, H], w_ih [4H, I], w_hh [4H, H], b_ih, b_hh [4H].
struct LstmCellForwardParams {
  const void* x = nullptr;
  const void* h0 = nullptr;
  const void* c0 = nullptr;
  const void* w_ih = nullptr;
  const void* w_hh = nullptr;
  const void* b_ih = nullptr;  // null: no bias (torch's missing bias is zero)
  const void* b_hh = nullptr;
  void* h1 = nullptr;
  void* c1 = nullptr;
  float* gates = nullptr;
  DType dtype = DType::float32;
  int64_t batch = 0, input_size = 0, hidden = 0;
  Strides2 x_s, h0_s, c0_s, w_ih_s, w_hh_s, h1_s, c1_s, gates_s;
  int64_t b_ih_s = 0, b_hh_s = 0;
};

// From d_h1, d_c1 [B, H] (dtype; either null = zero), the saved gates [B, 4H] (fp32), c1
// and c0 [B, H] (dtype), w_hh [4H, H]: the pre-activation gate gradients dgates [B, 4H],
// d_c0 = dc * f and d_h0 = dgates @ w_hh [B, H], all fp32, and with `dbias` the column
// sums of dgates per block of kCellRows rows, [row blocks, 4H] (summed after, no atomics).
struct LstmCellBackwardParams {
  const void* d_h1 = nullptr;
  const void* d_c1 = nullptr;
  const float* gates = nullptr;
  const void* c1 = nullptr;
  const void* c0 = nullptr;
  const void* w_hh = nullptr;
  float* dgates = nullptr;
  float* d_c0 = nullptr;
  float* d_h0 = nullptr;
  float* dbias = nullptr;  // null: no bias gradient
  DType dtype = DType::float32;
  int64_t batch = 0, hidden = 0;
  Strides2 d_h1_s, d_c1_s, gates_s, c1_s, c0_s, w_hh_s, dgates_s, d_c0_s, d_h0_s, dbias_s;
};

// The cells with one state: torch.gru_cell (G = 3 gates r, z, n a hidden unit; S = 4
// values saved a unit: r, z, n and hn = h0 W_hn^T + b_hn, which r gates) and
// torch.rnn_tanh_cell, rnn_relu_cell (G = 1; S = 1: h1 in fp32). The weights' rows are
// gate * H + unit, torch's order.
enum class HiddenCell : int {
  gru = 0,
  rnn_tanh = 1,
  rnn_relu = 2,
};

inline bool is_known_hidden_cell(int code) { return code >= 0 && code <= 2; }

// h1 [B, H] (dtype) and saved [B, S*H] (fp32, what the backward needs) from x [B, I],
// h0 [B, H], w_ih [G*H, I], w_hh [G*H, H], b_ih, b_hh [G*H].
struct HiddenCellForwardParams {
  HiddenCell cell = HiddenCell::gru;
  const void* x = nullptr;
  const void* h0 = nullptr;
  const void* w_ih = nullptr;
  const void* w_hh = nullptr;
  const void* b_ih = nullptr;  // null: no bias (torch's missing bias is zero)
  const void* b_hh = nullptr;
  void* h1 = nullptr;
  float* saved = nullptr;
  DType dtype = DType::float32;
  int64_t batch = 0, input_size = 0, hidden = 0;
  Strides2 x_s, h0_s, w_ih_s, w_hh_s, h1_s, saved_s;
  int64_t b_ih_s = 0, b_hh_s = 0;
};

// From d_h1 [B, H] and h0 [B, H] (dtype; h0 read by the GRU only, null allowed for the
// RNNs), saved [B, S*H] (fp32) and w_hh [G*H, H]: the pre-activation gradients dgates
// [B, S*H] and d_h0 [B, H], fp32. GRU: dgates = (dr, dz, dn, dn * r), the input side's
// three then the recurrent side's n, and d_h0 = d_h1 * z + (dr, dz, dn * r) @ w_hh. RNN:
// dgates = d_pre, and d_h0 = d_pre @ w_hh.
struct HiddenCellBackwardParams {
  HiddenCell cell = HiddenCell::gru;
  const void* d_h1 = nullptr;
  const void* h0 = nullptr;
  const float* saved = nullptr;
  const void* w_hh = nullptr;
  float* dgates = nullptr;
  float* d_h0 = nullptr;
  DType dtype = DType::float32;
  int64_t batch = 0, hidden = 0;
  Strides2 d_h1_s, h0_s, saved_s, w_hh_s, dgates_s, d_h0_s;
};

// The steps of a whole-sequence launch, in processing order, as four int32 arrays [T]
// (kernels/packed_steps.py, schedule_tensors): a step's first packed row, its rows, the
// first row of the step it continues from (-1: none) and how many of its rows continue
// (the rest start from the initial state).
struct SequenceSchedule {
  const int32_t* offsets = nullptr;
  const int32_t* rows = nullptr;
  const int32_t* prev = nullptr;
  const int32_t* carried = nullptr;
  int64_t steps = 0;
};

// One direction of one LSTM layer over a whole packed sequence in one launch, with or
// without a projection (proj_size P < H: h = (o * tanh(c)) @ W_hr^T).
// From xw [N, 4H] (the input projection of every row, biases included), h0 [B, P], c0
// [B, H], w_hh [4H, P] and w_hr [P, H] (null: no projection, P = H), all of dtype: out
// [N, P] (dtype), the cell states [N, H] and gate activations i, f, g, o [N, 4H] (fp32,
// what the backward needs), and with a projection h_raw [N, H] (dtype: h before it).
struct LstmSequenceForwardParams {
  const void* xw = nullptr;
  const void* h0 = nullptr;
  const void* c0 = nullptr;
  const void* w_hh = nullptr;
  const void* w_hr = nullptr;
  void* out = nullptr;
  void* h_raw = nullptr;
  float* cells = nullptr;
  float* gates = nullptr;
  SequenceSchedule schedule;
  DType dtype = DType::float32;
  int64_t batch = 0, hidden = 0, proj = 0;  // proj: P, 0 without a projection
  Strides2 xw_s, h0_s, c0_s, w_hh_s, w_hr_s, out_s, h_raw_s, cells_s, gates_s;
};

// Backward through every step of the forward above: from d_out [N, P], d_h_n [B, P], d_c_n
// [B, H] (dtype; each null = zero), the saved gates [N, 4H] and cells [N, H] (fp32), c0
// [B, H], w_hh [4H, P] and w_hr [P, H] (dtype; null without a projection): the
// pre-activation gate gradients dgates [N, 4H], d_h0 [B, P] and d_c0 [B, H], all fp32
// and contiguous (the Python side's allocations, d_h0 and d_c0 zeroed); with a projection
// d_total [N, P] (fp32, contiguous: the gradient reaching the projected output, which
// d_w_hr needs); carry [2, B, H] fp32 contiguous, scratch for the cell-state gradient
// handed from step to step.
struct LstmSequenceBackwardParams {
  const void* d_out = nullptr;
  const void* d_h_n = nullptr;
  const void* d_c_n = nullptr;
  const float* gates = nullptr;
  const float* cells = nullptr;
  const void* c0 = nullptr;
  const void* w_hh = nullptr;
  const void* w_hr = nullptr;
  float* dgates = nullptr;
  float* d_total = nullptr;
  float* d_h0 = nullptr;
  float* d_c0 = nullptr;
  float* carry = nullptr;
  SequenceSchedule schedule;
  DType dtype = DType::float32;
  int64_t batch = 0, hidden = 0, proj = 0;
  Strides2 d_out_s, d_h_n_s, d_c_n_s, gates_s, cells_s, c0_s, w_hh_s, w_hr_s;
};

// One direction of one GRU or RNN layer over a whole packed sequence in one launch. From
// xw [N, G*H] (the input projection of every row: b_ih included, and for the RNNs b_hh
// too), h0 [B, H], w_hh [G*H, H] and b_hh [3H] (the GRU's, null: none; any stride), all
// of dtype: out [N, H] (dtype) and saved [N, S*H] (fp32: the GRU's r, z, n and hn = h
// W_hn^T + b_hn; the RNNs' activation), as the cell's HiddenCellForwardParams.
struct HiddenSequenceForwardParams {
  HiddenCell cell = HiddenCell::gru;
  const void* xw = nullptr;
  const void* h0 = nullptr;
  const void* w_hh = nullptr;
  const void* b_hh = nullptr;
  void* out = nullptr;
  float* saved = nullptr;
  SequenceSchedule schedule;
  DType dtype = DType::float32;
  int64_t batch = 0, hidden = 0;
  Strides2 xw_s, h0_s, w_hh_s, out_s, saved_s;
  int64_t b_hh_s = 0;
};

// Backward through every step of the forward above: from d_out [N, H], d_h_n [B, H]
// (dtype; each null = zero), out and saved (the forward's), h0 [B, H] and w_hh [G*H, H]
// (dtype): the pre-activation gradients dgates [N, S*H] (the GRU's dr, dz, dn, dn * r; the
// RNNs' one) and d_h0 [B, H], fp32 and contiguous (the Python side's allocations, d_h0
// zeroed); carry [2, B, H] fp32 contiguous, scratch for the GRU's z * dh' handed from step
// to step (null for the RNNs).
struct HiddenSequenceBackwardParams {
  HiddenCell cell = HiddenCell::gru;
  const void* d_out = nullptr;
  const void* d_h_n = nullptr;
  const void* out = nullptr;
  const void* h0 = nullptr;
  const float* saved = nullptr;
  const void* w_hh = nullptr;
  float* dgates = nullptr;
  float* d_h0 = nullptr;
  float* carry = nullptr;
  SequenceSchedule schedule;
  DType dtype = DType::float32;
  int64_t batch = 0, hidden = 0;
  Strides2 d_out_s, d_h_n_s, out_s, h0_s, saved_s, w_hh_s;
};

}  // namespace seqops
