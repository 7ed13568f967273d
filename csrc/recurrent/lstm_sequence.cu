// One direction of one LSTM layer over a whole packed sequence in one launch, forward and
// backward (issue "Whole-sequence LSTM"), and their host launchers; the twin of the Triton
// sequence kernels (kernels/recurrent/sequence.py), without the projection (proj_size).
//
// Forward, per step in processing order: gates = xw[step] + h_prev @ W_hh^T, then
// c' = f * c + i * g and h' = o * tanh(c'), the activations and c' saved for the backward.
// Backward, phase j of T + 1: the gradient reaching the h_prev of step `done` (processed in
// phase j - 1), dgates[done] @ W_hh[:, units], is the h carry of step `cur` (processed now)
// for the rows that continue into `done`, and d_h0 for the rows that started at `done`;
// then cur's gate gradients and the cell-state carry. The input and weight gradients are
// GEMMs over every step's dgates, run by the Python side.
//
// A block owns kSequenceUnits units (plan.h) for the whole launch and keeps their slice of
// W_hh in shared memory. Only h (forward) and dgates (backward) cross blocks: each block
// writes its units' columns, all blocks meet at the grid barrier of a cooperative launch
// (which orders the writes before the reads), and the next step reads them whole with
// ld.global.cg, from L2 (sequence_grid.cuh).
// The cell state and its gradient stay with the thread that owns the (row, unit): a row
// keeps its pass position from step to step. Everything accumulates in fp32 with FMAs (no
// TF32), the exchanged h rounded to the layer's dtype as torch's LSTM rounds it.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cmath>

#include "common/dispatch.cuh"
#include "recurrent/cell_tiles.cuh"
#include "recurrent/launchers.h"
#include "recurrent/sequence_grid.cuh"

namespace seqops {
namespace {

namespace cg = cooperative_groups;
using namespace sequence_grid;

constexpr int kGates = 4;

constexpr Refusals kRefusals = {"lstm_sequence: negative number of steps", "lstm_sequence: a schedule pointer is null",
                                "lstm_sequence: this GPU does not take cooperative launches",
                                "lstm_sequence: the blocks cannot all be resident at once on this GPU"};

template <typename T>
__global__ void __launch_bounds__(kThreads) lstm_sequence_forward_kernel(const LstmSequenceForwardParams p) {
  extern __shared__ __align__(16) unsigned char shared[];
  StagingTile& h_tile = *reinterpret_cast<StagingTile*>(shared);
  // w[k * 4U + gate * U + u] = W_hh[gate * H + unit0 + u, k]: the units' gate rows, k-major
  // so that the threads of a warp (consecutive u) read consecutive words.
  T* w = reinterpret_cast<T*>(shared + kSequenceStagingBytes);
  const int64_t H = p.hidden, unit0 = int64_t(blockIdx.x) * kUnits;
  const int tid = threadIdx.x, u = tid % kUnits, lane = tid / kUnits;
  const int64_t unit = unit0 + u;
  load_weight_rows<T, kGates>(w, p.w_hh, p.w_hh_s, H, unit0);
  __syncthreads();
  cg::grid_group grid = cg::this_grid();
  for (int64_t t = 0; t < p.schedule.steps; ++t) {
    const StepEntry step = step_entry(p.schedule, t);
    for (int64_t r0 = 0; r0 < step.rows; r0 += kPassRows) {
      float acc[kRowsPerThread][kGates] = {};
      accumulate_recurrent<T, kGates>(step, r0, H, p.out, p.out_s, p.h0, p.h0_s, w, h_tile, acc);
      if (unit < H) {
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
          const int64_t row = r0 + lane + r * kLanes;
          if (row >= step.rows) continue;
          const int64_t now = step.offset + row;
          const float i = sigmoid(acc[r][0] + load<T>(p.xw, now, unit, p.xw_s));
          const float f = sigmoid(acc[r][1] + load<T>(p.xw, now, H + unit, p.xw_s));
          const float g = tanhf(acc[r][2] + load<T>(p.xw, now, 2 * H + unit, p.xw_s));
          const float o = sigmoid(acc[r][3] + load<T>(p.xw, now, 3 * H + unit, p.xw_s));
          // c_prev: this thread's own (row, unit) of an earlier step.
          const float c_prev = row < step.carried ? p.cells[(step.prev + row) * p.cells_s.row + unit * p.cells_s.col]
                                                  : load<T>(p.c0, row, unit, p.c0_s);
          const float c = f * c_prev + i * g;
          p.cells[now * p.cells_s.row + unit * p.cells_s.col] = c;
          static_cast<T*>(p.out)[now * p.out_s.row + unit * p.out_s.col] = from_float<T>(o * tanhf(c));
          float* gates = p.gates + now * p.gates_s.row;
          gates[unit * p.gates_s.col] = i;
          gates[(H + unit) * p.gates_s.col] = f;
          gates[(2 * H + unit) * p.gates_s.col] = g;
          gates[(3 * H + unit) * p.gates_s.col] = o;
        }
      }
    }
    if (t + 1 < p.schedule.steps) grid.sync();
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) lstm_sequence_backward_kernel(const LstmSequenceBackwardParams p) {
  extern __shared__ __align__(16) unsigned char shared[];
  StagingTile& g_tile = *reinterpret_cast<StagingTile*>(shared);
  // w[j * U + u] = W_hh[j, unit0 + u] for the 4H gate rows j: the units' columns.
  T* w = reinterpret_cast<T*>(shared + kSequenceStagingBytes);
  const int64_t H = p.hidden, G = kGates * p.hidden, unit0 = int64_t(blockIdx.x) * kUnits;
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
    // The cell-state gradient handed between phases: ping-pong halves of carry [2, B, H].
    const float* carry_in = p.carry + (phase % 2) * p.batch * H;
    float* carry_out = p.carry + ((phase + 1) % 2) * p.batch * H;
    const int64_t n_rows = cur.rows > done.rows ? cur.rows : done.rows;
    for (int64_t r0 = 0; r0 < n_rows; r0 += kPassRows) {
      // dgates[done] @ W_hh[:, units], over the 4H gate columns kK at a time.
      float reaching[kRowsPerThread] = {};
      accumulate_reaching<T>(done, r0, G, p.dgates, G, [](int64_t j) { return j; }, w, g_tile, reaching);
      if (unit >= H) continue;
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int64_t row = r0 + lane + r * kLanes;
        // Rows that started at `done` (from h0): their gradient is h0's.
        if (row < done.rows && row >= done.carried) p.d_h0[row * H + unit] = reaching[r];
        if (row >= cur.rows) continue;
        // Rows of cur that continue into done get the carries; the rest end at cur and get
        // d_h_n and d_c_n.
        const bool continued = row < done.carried;
        const int64_t now = cur.offset + row;
        float dh = p.d_out != nullptr ? load<T>(p.d_out, now, unit, p.d_out_s) : 0.0f;
        float dc = 0.0f;
        if (continued) {
          dh += reaching[r];
          dc = carry_in[row * H + unit];
        } else {
          if (p.d_h_n != nullptr) dh += load<T>(p.d_h_n, row, unit, p.d_h_n_s);
          if (p.d_c_n != nullptr) dc = load<T>(p.d_c_n, row, unit, p.d_c_n_s);
        }
        const float* gates = p.gates + now * p.gates_s.row;
        const float i = gates[unit * p.gates_s.col], f = gates[(H + unit) * p.gates_s.col];
        const float g = gates[(2 * H + unit) * p.gates_s.col], o = gates[(3 * H + unit) * p.gates_s.col];
        const float tanh_c = tanhf(p.cells[now * p.cells_s.row + unit * p.cells_s.col]);
        const bool carried = row < cur.carried;
        const float c_prev = carried ? p.cells[(cur.prev + row) * p.cells_s.row + unit * p.cells_s.col]
                                     : load<T>(p.c0, row, unit, p.c0_s);
        dc += dh * o * (1.0f - tanh_c * tanh_c);
        float* dgates = p.dgates + now * G;
        dgates[unit] = dc * g * i * (1.0f - i);
        dgates[H + unit] = dc * c_prev * f * (1.0f - f);
        dgates[2 * H + unit] = dc * i * (1.0f - g * g);
        dgates[3 * H + unit] = dh * tanh_c * o * (1.0f - o);
        // The cell-state gradient to the step this row continues from, or to c0.
        (carried ? carry_out : p.d_c0)[row * H + unit] = dc * f;
      }
    }
    if (has_cur) grid.sync();
  }
}

}  // namespace

Status check_lstm_sequence_forward(const LstmSequenceForwardParams& p) {
  if (!is_known_dtype(int(p.dtype))) return Status::bad_argument("lstm_sequence_forward: unknown dtype code");
  if (p.batch < 0 || p.hidden < 0) return Status::bad_argument("lstm_sequence_forward: negative size");
  const Status schedule = check_schedule(kRefusals, p.schedule);
  if (!schedule.is_ok()) return schedule;
  if (p.schedule.steps > 0 && p.hidden > 0 &&
      (p.xw == nullptr || p.h0 == nullptr || p.c0 == nullptr || p.w_hh == nullptr || p.out == nullptr ||
       p.cells == nullptr || p.gates == nullptr)) {
    return Status::bad_argument("lstm_sequence_forward: a tensor pointer is null");
  }
  return Status::ok();
}

Status check_lstm_sequence_backward(const LstmSequenceBackwardParams& p) {
  if (!is_known_dtype(int(p.dtype))) return Status::bad_argument("lstm_sequence_backward: unknown dtype code");
  if (p.batch < 0 || p.hidden < 0) return Status::bad_argument("lstm_sequence_backward: negative size");
  const Status schedule = check_schedule(kRefusals, p.schedule);
  if (!schedule.is_ok()) return schedule;
  if (p.schedule.steps > 0 && p.hidden > 0 &&
      (p.gates == nullptr || p.cells == nullptr || p.c0 == nullptr || p.w_hh == nullptr || p.dgates == nullptr ||
       p.d_h0 == nullptr || p.d_c0 == nullptr || p.carry == nullptr)) {
    return Status::bad_argument("lstm_sequence_backward: a tensor pointer is null");
  }
  return Status::ok();
}

Status lstm_sequence_forward(const LstmSequenceForwardParams& p, cudaStream_t stream) {
  const Status checked = check_lstm_sequence_forward(p);
  if (!checked.is_ok()) return checked;
  if (p.schedule.steps == 0 || p.hidden == 0) return Status::ok();
  const SequencePlan plan = plan_sequence(p.hidden, dtype_size(p.dtype), kGates);
  Status status;
  with_dtype(p.dtype, [&](auto tag) {
    status = launch_cooperative(kRefusals, lstm_sequence_forward_kernel<decltype(tag)>, plan, p, stream);
  });
  return status;
}

Status lstm_sequence_backward(const LstmSequenceBackwardParams& p, cudaStream_t stream) {
  const Status checked = check_lstm_sequence_backward(p);
  if (!checked.is_ok()) return checked;
  if (p.schedule.steps == 0 || p.hidden == 0) return Status::ok();
  const SequencePlan plan = plan_sequence(p.hidden, dtype_size(p.dtype), kGates);
  Status status;
  with_dtype(p.dtype, [&](auto tag) {
    status = launch_cooperative(kRefusals, lstm_sequence_backward_kernel<decltype(tag)>, plan, p, stream);
  });
  return status;
}

}  // namespace seqops
