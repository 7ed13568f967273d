// One direction of one LSTM layer over a whole packed sequence in one launch, forward and
// backward (issue "Whole-sequence LSTM"), and their host launchers; the twin of the Triton
// sequence kernels (kernels/recurrent/sequence.py), with or without the projection
// (proj_size P < H: h = (o * tanh(c)) @ W_hr^T). With it each step takes two phases behind
// grid barriers, as the Triton kernels' do: forward, the cell over the units (h_raw), then
// the projection over the P features; backward, the gradient reaching the projected
// output over the features (d_total), then d_total @ W_hr and the gate gradients over the
// units. A block owns units [8b, 8b + 8) of H and features [8b, 8b + 8) of P (blocks past P
// idle in the features' phases), and keeps W_hr's slice in shared memory beside W_hh's.
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
// keeps its pass position from step to step. Everything accumulates in fp32: the products
// on tensor cores in fp16/bf16 (the gate gradients rounded to the dtype for theirs) and in
// FMAs in fp32, no TF32 (sequence_products.cuh); the exchanged h rounded to the layer's
// dtype as torch's LSTM rounds it.
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

constexpr int kGates = 4;

constexpr Refusals kRefusals = {"lstm_sequence: negative number of steps", "lstm_sequence: a schedule pointer is null",
                                "lstm_sequence: this GPU does not take cooperative launches",
                                "lstm_sequence: the blocks cannot all be resident at once on this GPU"};

// One (row, unit) of step `cur`: from dh (the gradient reaching h') and the cell-state
// gradient (the carry for a row that continues into the next processed step, else d_c_n),
// the pre-activation gate gradients, and dc * f to the carry (a row continued from an
// earlier step) or d_c0 (a row that starts at cur).
template <typename T>
__device__ __forceinline__ void lstm_gate_gradients(const LstmSequenceBackwardParams& p, const StepEntry& cur,
                                                    int64_t row, int64_t now, int64_t unit, float dh, bool continued,
                                                    const float* carry_in, float* carry_out) {
  const int64_t H = p.hidden;
  float dc = continued ? carry_in[row * H + unit]
                       : (p.d_c_n != nullptr ? load<T>(p.d_c_n, row, unit, p.d_c_n_s) : 0.0f);
  const float* gates = p.gates + now * p.gates_s.row;
  const float i = gates[unit * p.gates_s.col], f = gates[(H + unit) * p.gates_s.col];
  const float g = gates[(2 * H + unit) * p.gates_s.col], o = gates[(3 * H + unit) * p.gates_s.col];
  const float tanh_c = tanhf(p.cells[now * p.cells_s.row + unit * p.cells_s.col]);
  const bool carried = row < cur.carried;
  const float c_prev = carried ? p.cells[(cur.prev + row) * p.cells_s.row + unit * p.cells_s.col]
                               : load<T>(p.c0, row, unit, p.c0_s);
  dc += dh * o * (1.0f - tanh_c * tanh_c);
  float* dgates = p.dgates + now * kGates * H;
  dgates[unit] = dc * g * i * (1.0f - i);
  dgates[H + unit] = dc * c_prev * f * (1.0f - f);
  dgates[2 * H + unit] = dc * i * (1.0f - g * g);
  dgates[3 * H + unit] = dh * tanh_c * o * (1.0f - o);
  // The cell-state gradient to the step this row continues from, or to c0.
  (carried ? carry_out : p.d_c0)[row * H + unit] = dc * f;
}

template <typename T, bool kProjected>
__global__ void __launch_bounds__(kThreads, 1) lstm_sequence_forward_kernel(const LstmSequenceForwardParams p) {
  extern __shared__ __align__(16) unsigned char shared[];
  unsigned char* staging = shared;
  // w: the units' gate rows of W_hh, row gate * U + u = W_hh[gate * H + unit0 + u, :P]; with a
  // projection, after it w_hr: the rows of the block's features (feature0 = unit0), row f =
  // W_hr[feature0 + f, :H] (layouts in sequence_products.cuh).
  T* w = reinterpret_cast<T*>(shared + sequence_staging_bytes(int(sizeof(T))));
  const int64_t H = p.hidden, P = kProjected ? p.proj : p.hidden, unit0 = int64_t(blockIdx.x) * kUnits;
  const int tid = threadIdx.x, u = tid % kUnits, lane = tid / kUnits;
  const int64_t unit = unit0 + u;
  // h before the projection: out itself without one.
  void* h_raw = kProjected ? p.h_raw : p.out;
  const Strides2 h_raw_s = kProjected ? p.h_raw_s : p.out_s;
  load_weight_rows<T, kGates>(w, p.w_hh, p.w_hh_s, H, P, unit0);
  T* w_hr = after_slice(w, int64_t(kGates) * kUnits, P);
  if constexpr (kProjected) load_weight_rows<T, 1>(w_hr, p.w_hr, p.w_hr_s, P, H, unit0);
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
      accumulate_recurrent<T, kGates>(step, r0, P, p.out, p.out_s, p.h0, p.h0_s, w, staging, acc);
      if (unit < H) {
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
          const int64_t row = r0 + lane + r * kLanes;
          if (row >= step.rows) continue;
          const int64_t now = step.offset + row;
          const float i = sigmoid(acc[r][0] + xw[r][0]);
          const float f = sigmoid(acc[r][1] + xw[r][1]);
          const float g = tanhf(acc[r][2] + xw[r][2]);
          const float o = sigmoid(acc[r][3] + xw[r][3]);
          // c_prev: this thread's own (row, unit) of an earlier step.
          const float c_prev = row < step.carried ? p.cells[(step.prev + row) * p.cells_s.row + unit * p.cells_s.col]
                                                  : load<T>(p.c0, row, unit, p.c0_s);
          const float c = f * c_prev + i * g;
          p.cells[now * p.cells_s.row + unit * p.cells_s.col] = c;
          static_cast<T*>(h_raw)[now * h_raw_s.row + unit * h_raw_s.col] = from_float<T>(o * tanhf(c));
          float* gates = p.gates + now * p.gates_s.row;
          gates[unit * p.gates_s.col] = i;
          gates[(H + unit) * p.gates_s.col] = f;
          gates[(2 * H + unit) * p.gates_s.col] = g;
          gates[(3 * H + unit) * p.gates_s.col] = o;
        }
      }
    }
    if constexpr (kProjected) {
      // out[step] = h_raw[step] @ W_hr^T for the block's features, once every block's units
      // of h_raw are written.
      grid.sync();
      for (int64_t r0 = 0; r0 < step.rows; r0 += kPassRows) {
        float acc[kRowsPerThread][1] = {};
        accumulate_staged<T, 1>(
            step.rows, r0, H,
            [&](int64_t row, int64_t col) { return load_exchanged<T>(h_raw, step.offset + row, col, h_raw_s); }, w_hr,
            staging, acc);
        if (unit >= P) continue;
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
          const int64_t row = r0 + lane + r * kLanes;
          if (row < step.rows) {
            static_cast<T*>(p.out)[(step.offset + row) * p.out_s.row + unit * p.out_s.col] = from_float<T>(acc[r][0]);
          }
        }
      }
    }
    if (t + 1 < p.schedule.steps) grid.sync();
  }
}

template <typename T, bool kProjected>
__global__ void __launch_bounds__(kThreads, 1) lstm_sequence_backward_kernel(const LstmSequenceBackwardParams p) {
  extern __shared__ __align__(16) unsigned char shared[];
  unsigned char* staging = shared;
  // w: row f = W_hh[:, feature0 + f] over the 4H gate rows, the columns of the block's
  // features of h (its units, without a projection; feature0 = unit0); with a projection,
  // after it w_hr: row u = W_hr[:, unit0 + u] over the P features, its units' columns.
  T* w = reinterpret_cast<T*>(shared + sequence_staging_bytes(int(sizeof(T))));
  const int64_t H = p.hidden, P = kProjected ? p.proj : p.hidden, G = kGates * p.hidden;
  const int64_t unit0 = int64_t(blockIdx.x) * kUnits;
  const int tid = threadIdx.x, u = tid % kUnits, lane = tid / kUnits;
  const int64_t unit = unit0 + u;  // also the block's feature of h: a column of P
  load_weight_columns<T>(w, p.w_hh, p.w_hh_s, G, P, unit0);
  T* w_hr = after_slice(w, kUnits, G);
  if constexpr (kProjected) load_weight_columns<T>(w_hr, p.w_hr, p.w_hr_s, P, H, unit0);
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
      // dgates[done] @ W_hh[:, features], over the 4H gate columns.
      float reaching[kRowsPerThread] = {};
      accumulate_reaching<T>(done, r0, G, p.dgates, G, [](int64_t j) { return j; }, w, staging, reaching);
      if (unit >= P) continue;
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int64_t row = r0 + lane + r * kLanes;
        // Rows that started at `done` (from h0): their gradient is h0's.
        if (row < done.rows && row >= done.carried) p.d_h0[row * P + unit] = reaching[r];
        if (row >= cur.rows) continue;
        // The gradient reaching cur's output: d_out, and the carry for the rows of cur that
        // continue into done, d_h_n for the rest (which end at cur).
        const bool continued = row < done.carried;
        const int64_t now = cur.offset + row;
        float dh = p.d_out != nullptr ? load<T>(p.d_out, now, unit, p.d_out_s) : 0.0f;
        if (continued) {
          dh += reaching[r];
        } else if (p.d_h_n != nullptr) {
          dh += load<T>(p.d_h_n, row, unit, p.d_h_n_s);
        }
        if constexpr (kProjected) {
          p.d_total[now * P + unit] = dh;
        } else {
          lstm_gate_gradients<T>(p, cur, row, now, unit, dh, continued, carry_in, carry_out);
        }
      }
    }
    if constexpr (kProjected) {
      // The gradient reaching h' (before the projection): d_total[cur] @ W_hr[:, units], once
      // every block's features of d_total are written.
      if (has_cur) grid.sync();
      for (int64_t r0 = 0; r0 < cur.rows; r0 += kPassRows) {
        float acc[kRowsPerThread][1] = {};
        accumulate_staged<T, 1>(
            cur.rows, r0, P, [&](int64_t row, int64_t f) { return __ldcg(p.d_total + (cur.offset + row) * P + f); },
            w_hr, staging, acc);
        if (unit >= H) continue;
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
          const int64_t row = r0 + lane + r * kLanes;
          if (row < cur.rows) {
            lstm_gate_gradients<T>(p, cur, row, cur.offset + row, unit, acc[r][0], row < done.carried, carry_in,
                                   carry_out);
          }
        }
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
       p.cells == nullptr || p.gates == nullptr || (p.proj > 0 && (p.w_hr == nullptr || p.h_raw == nullptr)))) {
    return Status::bad_argument("lstm_sequence_forward: a tensor pointer is null");
  }
  if (p.proj < 0 || (p.proj > 0 && p.proj >= p.hidden)) {
    return Status::bad_argument("lstm_sequence_forward: the projection's size must be below the hidden size");
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
       p.d_h0 == nullptr || p.d_c0 == nullptr || p.carry == nullptr ||
       (p.proj > 0 && (p.w_hr == nullptr || p.d_total == nullptr)))) {
    return Status::bad_argument("lstm_sequence_backward: a tensor pointer is null");
  }
  if (p.proj < 0 || (p.proj > 0 && p.proj >= p.hidden)) {
    return Status::bad_argument("lstm_sequence_backward: the projection's size must be below the hidden size");
  }
  return Status::ok();
}

Status lstm_sequence_forward(const LstmSequenceForwardParams& p, cudaStream_t stream) {
  const Status checked = check_lstm_sequence_forward(p);
  if (!checked.is_ok()) return checked;
  if (p.schedule.steps == 0 || p.hidden == 0) return Status::ok();
  const SequencePlan plan = plan_sequence(p.hidden, dtype_size(p.dtype), kGates, p.proj);
  Status status;
  with_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    status = p.proj > 0 ? launch_cooperative(kRefusals, lstm_sequence_forward_kernel<T, true>, plan, p, stream)
                        : launch_cooperative(kRefusals, lstm_sequence_forward_kernel<T, false>, plan, p, stream);
  });
  return status;
}

Status lstm_sequence_backward(const LstmSequenceBackwardParams& p, cudaStream_t stream) {
  const Status checked = check_lstm_sequence_backward(p);
  if (!checked.is_ok()) return checked;
  if (p.schedule.steps == 0 || p.hidden == 0) return Status::ok();
  const SequencePlan plan = plan_sequence(p.hidden, dtype_size(p.dtype), kGates, p.proj);
  Status status;
  with_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    status = p.proj > 0 ? launch_cooperative(kRefusals, lstm_sequence_backward_kernel<T, true>, plan, p, stream)
                        : launch_cooperative(kRefusals, lstm_sequence_backward_kernel<T, false>, plan, p, stream);
  });
  return status;
}

}  // namespace seqops
