// One direction of one GRU or RNN (tanh, relu) layer over a whole packed sequence in one
// launch, forward and backward, and their host launchers; the twin of the Triton kernels
// of kernels/recurrent/hidden_sequence.py, on the LSTM's grid (lstm_sequence.cu,
// sequence_grid.cuh): a block owns kSequenceUnits units for the whole launch with their
// slice of W_hh in shared memory, and blocks meet at the grid barrier of a cooperative
// launch after each step.
//
// Forward, per step in processing order (gate order r, z, n, as torch):
//   GRU: r = sigmoid(xw_r + h W_hr^T + b_hr), z = sigmoid(xw_z + h W_hz^T + b_hz),
//        hn = h W_hn^T + b_hn, n = tanh(xw_n + r * hn), h' = n + z * (h - n);
//        saved r, z, n, hn (fp32).
//   RNN: h' = act(xw + h W_hh^T), act tanh or relu; saved act's output (fp32).
// Backward, phase j of T + 1, as the LSTM's: the gradient reaching the h_prev of step
// `done`, (dr, dz, dn * r)[done] @ W_hh[:, units] (the RNNs: dpre[done] @ W_hh), plus for
// the GRU the z * dh' of done that each thread keeps for its own (row, unit), is the carry
// into cur's h' for the rows that continue into done and d_h0 for the rows that started
// at done; then cur's gate gradients (and the GRU's z * dh'). Everything accumulates in
// fp32, the products on tensor cores in fp16/bf16 and in FMAs in fp32
// (sequence_products.cuh), h rounded to the layer's dtype as torch's layers round it.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cmath>

#include "common/dispatch.cuh"
#include "recurrent/cell_tiles.cuh"
#include "recurrent/launchers.h"
#include "recurrent/sequence_grid.cuh"
#include "recurrent/sequence_products.cuh"

namespace seqops {
namespace {

namespace cg = cooperative_groups;
using namespace sequence_grid;

constexpr Refusals kRefusals = {
    "hidden_sequence: negative number of steps", "hidden_sequence: a schedule pointer is null",
    "hidden_sequence: this GPU does not take cooperative launches",
    "hidden_sequence: the blocks cannot all be resident at once on this GPU"};

// The gates of W_hh (G) and the fp32 values saved and gate gradients a unit has (S).
template <HiddenCell kCell>
struct CellShape {
  static constexpr int kGates = kCell == HiddenCell::gru ? 3 : 1;
  static constexpr int kSaved = kCell == HiddenCell::gru ? 4 : 1;
};

int gates_of(HiddenCell cell) { return cell == HiddenCell::gru ? 3 : 1; }

template <typename T, HiddenCell kCell>
__global__ void __launch_bounds__(kThreads, 1) hidden_sequence_forward_kernel(const HiddenSequenceForwardParams p) {
  constexpr int kGates = CellShape<kCell>::kGates;
  extern __shared__ __align__(16) unsigned char shared[];
  unsigned char* staging = shared;
  // w: the units' gate rows of W_hh, row gate * U + u = W_hh[gate * H + unit0 + u, :].
  T* w = reinterpret_cast<T*>(shared + sequence_staging_bytes(int(sizeof(T))));
  const int64_t H = p.hidden, unit0 = int64_t(blockIdx.x) * kUnits;
  const int tid = threadIdx.x, u = tid % kUnits, lane = tid / kUnits;
  const int64_t unit = unit0 + u;
  load_weight_rows<T, kGates>(w, p.w_hh, p.w_hh_s, H, H, unit0);
  // b_hh of this thread's unit, read once: the GRU's b_hr, b_hz, b_hn; the RNNs' one in b_r.
  float b_r = 0.0f, b_z = 0.0f, b_n = 0.0f;
  if (p.b_hh != nullptr && unit < H) {
    const T* b = static_cast<const T*>(p.b_hh);
    b_r = to_float(b[unit * p.b_hh_s]);
    if constexpr (kCell == HiddenCell::gru) {
      b_z = to_float(b[(H + unit) * p.b_hh_s]);
      b_n = to_float(b[(2 * H + unit) * p.b_hh_s]);
    }
  }
  __syncthreads();
  cg::grid_group grid = cg::this_grid();
  for (int64_t t = 0; t < p.schedule.steps; ++t) {
    const StepEntry step = step_entry(p.schedule, t);
    for (int64_t r0 = 0; r0 < step.rows; r0 += kPassRows) {
      // The input projection of this thread's (row, unit)s, loaded before the product so
      // that its reads are in flight with the product's staging, not after it.
      float xw[kRowsPerThread][kGates];
      load_input_projection<T, kGates>(step, r0, H, unit, p.xw, p.xw_s, xw);
      float acc[kRowsPerThread][kGates] = {};
      accumulate_recurrent<T, kGates>(step, r0, H, p.out, p.out_s, p.h0, p.h0_s, w, staging, acc);
      if (unit >= H) continue;
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int64_t row = r0 + lane + r * kLanes;
        if (row >= step.rows) continue;
        const int64_t now = step.offset + row;
        float* saved = p.saved + now * p.saved_s.row;
        float h_new;
        if constexpr (kCell == HiddenCell::gru) {
          const float rg = sigmoid(acc[r][0] + b_r + xw[r][0]);
          const float z = sigmoid(acc[r][1] + b_z + xw[r][1]);
          const float hn = acc[r][2] + b_n;
          const float n = tanhf(xw[r][2] + rg * hn);
          // This thread's own (row, unit) of h_prev: z carries it through.
          const float h_prev = row < step.carried ? load_exchanged<T>(p.out, step.prev + row, unit, p.out_s)
                                                  : load<T>(p.h0, row, unit, p.h0_s);
          h_new = n + z * (h_prev - n);
          saved[unit * p.saved_s.col] = rg;
          saved[(H + unit) * p.saved_s.col] = z;
          saved[(2 * H + unit) * p.saved_s.col] = n;
          saved[(3 * H + unit) * p.saved_s.col] = hn;
        } else {
          // (h W_hh^T + b_hh) + (x W_ih^T + b_ih), torch's order: b_hh added to every row apart,
          // not rounded into b_ih once and that one error shared by every step.
          const float pre = (acc[r][0] + b_r) + xw[r][0];
          h_new = kCell == HiddenCell::rnn_relu ? fmaxf(pre, 0.0f) : tanhf(pre);
          saved[unit * p.saved_s.col] = h_new;
        }
        static_cast<T*>(p.out)[now * p.out_s.row + unit * p.out_s.col] = from_float<T>(h_new);
      }
    }
    if (t + 1 < p.schedule.steps) grid.sync();
  }
}

// The column of dgates [N, S*H] that multiplies gate row j of W_hh: the GRU's recurrent
// side is (dr, dz, dn * r), columns [0, 2H) and [3H, 4H); the RNNs' is dgates itself.
template <HiddenCell kCell>
__device__ __forceinline__ int64_t recurrent_column(int64_t j, int64_t H) {
  if constexpr (kCell == HiddenCell::gru) return j < 2 * H ? j : j + H;
  return j;
}

template <typename T, HiddenCell kCell>
__global__ void __launch_bounds__(kThreads, 1) hidden_sequence_backward_kernel(const HiddenSequenceBackwardParams p) {
  constexpr int kGates = CellShape<kCell>::kGates;
  constexpr int kSaved = CellShape<kCell>::kSaved;
  extern __shared__ __align__(16) unsigned char shared[];
  unsigned char* staging = shared;
  // w: row u = W_hh[:, unit0 + u] over the G*H gate rows, the units' columns.
  T* w = reinterpret_cast<T*>(shared + sequence_staging_bytes(int(sizeof(T))));
  const int64_t H = p.hidden, G = kGates * p.hidden, S = kSaved * p.hidden, unit0 = int64_t(blockIdx.x) * kUnits;
  const int tid = threadIdx.x, u = tid % kUnits, lane = tid / kUnits;
  const int64_t unit = unit0 + u;
  load_weight_columns<T>(w, p.w_hh, p.w_hh_s, G, H, unit0);
  __syncthreads();
  cg::grid_group grid = cg::this_grid();
  const int64_t T_steps = p.schedule.steps;
  for (int64_t phase = 0; phase <= T_steps; ++phase) {
    const bool has_cur = phase < T_steps, has_done = phase > 0;
    const StepEntry cur = has_cur ? step_entry(p.schedule, T_steps - 1 - phase) : StepEntry{};
    const StepEntry done = has_done ? step_entry(p.schedule, T_steps - phase) : StepEntry{};
    // The GRU's z * dh' handed between phases: ping-pong halves of carry [2, B, H].
    const float* carry_in = kCell == HiddenCell::gru ? p.carry + (phase % 2) * p.batch * H : nullptr;
    float* carry_out = kCell == HiddenCell::gru ? p.carry + ((phase + 1) % 2) * p.batch * H : nullptr;
    const int64_t n_rows = cur.rows > done.rows ? cur.rows : done.rows;
    for (int64_t r0 = 0; r0 < n_rows; r0 += kPassRows) {
      // The recurrent side of dgates[done] @ W_hh[:, units], over the G*H gate rows.
      float reaching[kRowsPerThread] = {};
      accumulate_reaching<T>(done, r0, G, p.dgates, S, [H](int64_t j) { return recurrent_column<kCell>(j, H); }, w,
                             staging, reaching);
      if (unit >= H) continue;
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int64_t row = r0 + lane + r * kLanes;
        // The GRU's direct path h_prev -> h' (z * dh' of done), this thread's own.
        if (kCell == HiddenCell::gru && row < done.rows) reaching[r] += carry_in[row * H + unit];
        // Rows that started at `done` (from h0): their gradient is h0's.
        if (row < done.rows && row >= done.carried) p.d_h0[row * H + unit] = reaching[r];
        if (row >= cur.rows) continue;
        // Rows of cur that continue into done get the carry; the rest end at cur and get d_h_n.
        const int64_t now = cur.offset + row;
        float dh = p.d_out != nullptr ? load<T>(p.d_out, now, unit, p.d_out_s) : 0.0f;
        if (row < done.carried) {
          dh += reaching[r];
        } else if (p.d_h_n != nullptr) {
          dh += load<T>(p.d_h_n, row, unit, p.d_h_n_s);
        }
        const float* saved = p.saved + now * p.saved_s.row;
        float* dgates = p.dgates + now * S;
        if constexpr (kCell == HiddenCell::gru) {
          const float rg = saved[unit * p.saved_s.col], z = saved[(H + unit) * p.saved_s.col];
          const float n = saved[(2 * H + unit) * p.saved_s.col], hn = saved[(3 * H + unit) * p.saved_s.col];
          const float h_prev = row < cur.carried ? load_exchanged<T>(p.out, cur.prev + row, unit, p.out_s)
                                                 : load<T>(p.h0, row, unit, p.h0_s);
          const float d_n = dh * (1.0f - z) * (1.0f - n * n);
          dgates[unit] = d_n * hn * rg * (1.0f - rg);
          dgates[H + unit] = dh * (h_prev - n) * z * (1.0f - z);
          dgates[2 * H + unit] = d_n;
          dgates[3 * H + unit] = d_n * rg;
          carry_out[row * H + unit] = dh * z;
        } else {
          const float a = saved[unit * p.saved_s.col];
          // relu's gradient where its output is positive, as torch's threshold_backward.
          dgates[unit] = kCell == HiddenCell::rnn_relu ? (a > 0.0f ? dh : 0.0f) : dh * (1.0f - a * a);
        }
      }
    }
    if (has_cur) grid.sync();
  }
}

// f(kernel) for the kernel of this dtype and cell.
template <template <typename, HiddenCell> class Pick, typename F>
void with_cell(DType dtype, HiddenCell cell, F&& f) {
  with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (cell) {
      case HiddenCell::gru: f(Pick<T, HiddenCell::gru>::kernel()); break;
      case HiddenCell::rnn_tanh: f(Pick<T, HiddenCell::rnn_tanh>::kernel()); break;
      case HiddenCell::rnn_relu: f(Pick<T, HiddenCell::rnn_relu>::kernel()); break;
    }
  });
}

template <typename T, HiddenCell kCell>
struct ForwardKernel {
  static auto kernel() { return hidden_sequence_forward_kernel<T, kCell>; }
};

template <typename T, HiddenCell kCell>
struct BackwardKernel {
  static auto kernel() { return hidden_sequence_backward_kernel<T, kCell>; }
};

}  // namespace

Status check_hidden_sequence_forward(const HiddenSequenceForwardParams& p) {
  if (!is_known_dtype(int(p.dtype))) return Status::bad_argument("hidden_sequence_forward: unknown dtype code");
  if (!is_known_hidden_cell(int(p.cell))) return Status::bad_argument("hidden_sequence_forward: unknown cell");
  if (p.batch < 0 || p.hidden < 0) return Status::bad_argument("hidden_sequence_forward: negative size");
  const Status schedule = check_schedule(kRefusals, p.schedule);
  if (!schedule.is_ok()) return schedule;
  if (p.schedule.steps > 0 && p.hidden > 0 &&
      (p.xw == nullptr || p.h0 == nullptr || p.w_hh == nullptr || p.out == nullptr || p.saved == nullptr)) {
    return Status::bad_argument("hidden_sequence_forward: a tensor pointer is null");
  }
  return Status::ok();
}

Status check_hidden_sequence_backward(const HiddenSequenceBackwardParams& p) {
  if (!is_known_dtype(int(p.dtype))) return Status::bad_argument("hidden_sequence_backward: unknown dtype code");
  if (!is_known_hidden_cell(int(p.cell))) return Status::bad_argument("hidden_sequence_backward: unknown cell");
  if (p.batch < 0 || p.hidden < 0) return Status::bad_argument("hidden_sequence_backward: negative size");
  const Status schedule = check_schedule(kRefusals, p.schedule);
  if (!schedule.is_ok()) return schedule;
  if (p.schedule.steps > 0 && p.hidden > 0 &&
      (p.saved == nullptr || p.w_hh == nullptr || p.dgates == nullptr || p.d_h0 == nullptr ||
       (p.cell == HiddenCell::gru && (p.out == nullptr || p.h0 == nullptr || p.carry == nullptr)))) {
    return Status::bad_argument("hidden_sequence_backward: a tensor pointer is null");
  }
  return Status::ok();
}

Status hidden_sequence_forward(const HiddenSequenceForwardParams& p, cudaStream_t stream) {
  const Status checked = check_hidden_sequence_forward(p);
  if (!checked.is_ok()) return checked;
  if (p.schedule.steps == 0 || p.hidden == 0) return Status::ok();
  const SequencePlan plan = plan_sequence(p.hidden, dtype_size(p.dtype), gates_of(p.cell));
  Status status;
  with_cell<ForwardKernel>(p.dtype, p.cell,
                           [&](auto kernel) { status = launch_cooperative(kRefusals, kernel, plan, p, stream); });
  return status;
}

Status hidden_sequence_backward(const HiddenSequenceBackwardParams& p, cudaStream_t stream) {
  const Status checked = check_hidden_sequence_backward(p);
  if (!checked.is_ok()) return checked;
  if (p.schedule.steps == 0 || p.hidden == 0) return Status::ok();
  const SequencePlan plan = plan_sequence(p.hidden, dtype_size(p.dtype), gates_of(p.cell));
  Status status;
  with_cell<BackwardKernel>(p.dtype, p.cell,
                            [&](auto kernel) { status = launch_cooperative(kRefusals, kernel, plan, p, stream); });
  return status;
}

}  // namespace seqops
