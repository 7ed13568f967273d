// The LSTM cell step (torch.lstm_cell) forward and backward kernels and their host
// launchers. Forward: the gate pre-activations x @ w_ih^T + h0 @ w_hh^T + biases of a
// block's rows and units, then the activations, c1 = f * c0 + i * g and h1 = o * tanh(c1),
// in one kernel. Backward: the pre-activation gate gradients, d_c0 and
// d_h0 = dgates @ w_hh in one kernel (the weight and input gradients are plain GEMMs the
// Python side runs). Geometry in plan.h, the tiled products in cell_tiles.cuh (on tensor
// cores in fp16/bf16); everything accumulates in fp32.
#include <cuda_runtime.h>

#include <cmath>

#include "common/dispatch.cuh"
#include "recurrent/cell_tiles.cuh"
#include "recurrent/launchers.h"

namespace seqops {
namespace {

constexpr int kRows = kCellRows;
constexpr int kUnits = kCellUnits;
constexpr int kThreads = kCellThreads;
constexpr int kGates = 4;  // i, f, g, o: rows gate * H + unit of the weights

template <typename T>
__global__ void __launch_bounds__(kThreads) lstm_cell_forward_kernel(const LstmCellForwardParams p) {
  __shared__ CellTiles<T, kGates> tiles;
  const int64_t row0 = int64_t(blockIdx.x) * kRows, unit0 = int64_t(blockIdx.y) * kUnits;
  float acc[kCellRowsPerThread][kGates] = {};
  accumulate_gates<T, kGates>(p.x, p.x_s, p.w_ih, p.w_ih_s, p.input_size, p.batch, p.hidden, row0, unit0, acc, tiles);
  accumulate_gates<T, kGates>(p.h0, p.h0_s, p.w_hh, p.w_hh_s, p.hidden, p.batch, p.hidden, row0, unit0, acc, tiles);
  const int64_t unit = unit0 + threadIdx.x % kUnits;
  if (unit >= p.hidden) return;
  float bias[kGates];
#pragma unroll
  for (int g = 0; g < kGates; ++g) {
    const int64_t j = g * p.hidden + unit;
    bias[g] = (p.b_ih != nullptr ? to_float(static_cast<const T*>(p.b_ih)[j * p.b_ih_s]) : 0.0f) +
              (p.b_hh != nullptr ? to_float(static_cast<const T*>(p.b_hh)[j * p.b_hh_s]) : 0.0f);
  }
  const int r0 = (threadIdx.x / kUnits) * kCellRowsPerThread;
#pragma unroll
  for (int r = 0; r < kCellRowsPerThread; ++r) {
    const int64_t row = row0 + r0 + r;
    if (row >= p.batch) break;
    const float i = sigmoid(acc[r][0] + bias[0]);
    const float f = sigmoid(acc[r][1] + bias[1]);
    const float g = tanhf(acc[r][2] + bias[2]);
    const float o = sigmoid(acc[r][3] + bias[3]);
    const float c = f * load<T>(p.c0, row, unit, p.c0_s) + i * g;
    static_cast<T*>(p.c1)[row * p.c1_s.row + unit * p.c1_s.col] = from_float<T>(c);
    static_cast<T*>(p.h1)[row * p.h1_s.row + unit * p.h1_s.col] = from_float<T>(o * tanhf(c));
    float* gates = p.gates + row * p.gates_s.row;
    gates[unit * p.gates_s.col] = i;
    gates[(p.hidden + unit) * p.gates_s.col] = f;
    gates[(2 * p.hidden + unit) * p.gates_s.col] = g;
    gates[(3 * p.hidden + unit) * p.gates_s.col] = o;
  }
}

// The pre-activation gate gradients of one (row, unit), and d_c0, from what reaches h1
// and c1: dc = d_c1 + d_h1 * o * (1 - tanh(c1)^2).
struct GateGradients {
  float i, f, g, o, c0;
};

template <typename T>
__device__ __forceinline__ GateGradients gate_gradients(const LstmCellBackwardParams& p, int64_t row, int64_t unit) {
  const float* gates = p.gates + row * p.gates_s.row;
  const float i = gates[unit * p.gates_s.col], f = gates[(p.hidden + unit) * p.gates_s.col];
  const float g = gates[(2 * p.hidden + unit) * p.gates_s.col], o = gates[(3 * p.hidden + unit) * p.gates_s.col];
  const float dh = p.d_h1 != nullptr ? load<T>(p.d_h1, row, unit, p.d_h1_s) : 0.0f;
  const float dc_in = p.d_c1 != nullptr ? load<T>(p.d_c1, row, unit, p.d_c1_s) : 0.0f;
  const float tanh_c = tanhf(load<T>(p.c1, row, unit, p.c1_s));
  const float dc = dc_in + dh * o * (1.0f - tanh_c * tanh_c);
  return {dc * g * i * (1.0f - i), dc * load<T>(p.c0, row, unit, p.c0_s) * f * (1.0f - f), dc * i * (1.0f - g * g),
          dh * tanh_c * o * (1.0f - o), dc * f};
}

// A block: kRows rows x kUnits features of h0. Over the H units kUnits at a time: the
// gate gradients of its rows (written out, with d_c0 and the bias sums, by the blocks of
// feature block 0 only), then d_h0 += dgates @ w_hh through shared memory.
template <typename T>
__global__ void __launch_bounds__(kThreads) lstm_cell_backward_kernel(const LstmCellBackwardParams p) {
  __shared__ float dgates_tile[kGates * kUnits][kRows + 1];
  __shared__ float w_tile[kGates * kUnits][kUnits + 1];
  const int64_t row0 = int64_t(blockIdx.x) * kRows, feature0 = int64_t(blockIdx.y) * kUnits;
  const bool writes_gates = blockIdx.y == 0;
  const int tid = threadIdx.x;
  ThroughWeights<T, kGates> d_h0;
  for (int64_t unit0 = 0; unit0 < p.hidden; unit0 += kUnits) {
    for (int e = tid; e < kRows * kUnits; e += kThreads) {
      const int j = e % kUnits, r = e / kUnits;
      const int64_t row = row0 + r, unit = unit0 + j;
      GateGradients d{0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      if (row < p.batch && unit < p.hidden) {
        d = gate_gradients<T>(p, row, unit);
        if (writes_gates) {
          float* dgates = p.dgates + row * p.dgates_s.row;
          dgates[unit * p.dgates_s.col] = d.i;
          dgates[(p.hidden + unit) * p.dgates_s.col] = d.f;
          dgates[(2 * p.hidden + unit) * p.dgates_s.col] = d.g;
          dgates[(3 * p.hidden + unit) * p.dgates_s.col] = d.o;
          p.d_c0[row * p.d_c0_s.row + unit * p.d_c0_s.col] = d.c0;
        }
      }
      dgates_tile[0 * kUnits + j][r] = d.i;
      dgates_tile[1 * kUnits + j][r] = d.f;
      dgates_tile[2 * kUnits + j][r] = d.g;
      dgates_tile[3 * kUnits + j][r] = d.o;
    }
    load_weight_block<T, kGates>(p.w_hh, p.w_hh_s, p.hidden, unit0, feature0, w_tile);
    __syncthreads();
    if (writes_gates && p.dbias != nullptr) {
      static_assert(kThreads == kGates * kUnits, "one thread sums one gate column");
      const int64_t unit = unit0 + tid % kUnits;
      if (unit < p.hidden) {
        float sum = 0.0f;
#pragma unroll
        for (int r = 0; r < kRows; ++r) sum += dgates_tile[tid][r];
        p.dbias[int64_t(blockIdx.x) * p.dbias_s.row + ((tid / kUnits) * p.hidden + unit) * p.dbias_s.col] = sum;
      }
    }
    d_h0.add(dgates_tile, w_tile);
    __syncthreads();
  }
  d_h0.for_each([&](int r, int f, float value) {
    const int64_t row = row0 + r, feature = feature0 + f;
    if (row < p.batch && feature < p.hidden) p.d_h0[row * p.d_h0_s.row + feature * p.d_h0_s.col] = value;
  });
}

Status check_grid(int64_t batch, int64_t hidden) {
  if (!cell_grid_fits(batch, hidden)) {
    return Status::bad_argument("lstm_cell: batch or hidden size past the launch grid (hidden over 2097120 units)");
  }
  return Status::ok();
}

}  // namespace

Status check_lstm_cell_forward(const LstmCellForwardParams& p) {
  if (!is_known_dtype(int(p.dtype))) return Status::bad_argument("lstm_cell_forward: unknown dtype code");
  if (p.batch < 0 || p.input_size < 0 || p.hidden < 0) return Status::bad_argument("lstm_cell_forward: negative size");
  if (p.batch > 0 && p.hidden > 0 &&
      (p.h0 == nullptr || p.c0 == nullptr || p.w_hh == nullptr || p.h1 == nullptr || p.c1 == nullptr ||
       p.gates == nullptr || (p.input_size > 0 && (p.x == nullptr || p.w_ih == nullptr)))) {
    return Status::bad_argument("lstm_cell_forward: a tensor pointer is null");
  }
  return check_grid(p.batch, p.hidden);
}

Status check_lstm_cell_backward(const LstmCellBackwardParams& p) {
  if (!is_known_dtype(int(p.dtype))) return Status::bad_argument("lstm_cell_backward: unknown dtype code");
  if (p.batch < 0 || p.hidden < 0) return Status::bad_argument("lstm_cell_backward: negative size");
  if (p.batch > 0 && p.hidden > 0 &&
      (p.gates == nullptr || p.c1 == nullptr || p.c0 == nullptr || p.w_hh == nullptr || p.dgates == nullptr ||
       p.d_c0 == nullptr || p.d_h0 == nullptr)) {
    return Status::bad_argument("lstm_cell_backward: a tensor pointer is null");
  }
  return check_grid(p.batch, p.hidden);
}

Status lstm_cell_forward(const LstmCellForwardParams& p, cudaStream_t stream) {
  const Status checked = check_lstm_cell_forward(p);
  if (!checked.is_ok()) return checked;
  if (p.batch == 0 || p.hidden == 0) return Status::ok();
  const CellPlan plan = plan_cell(p.batch, p.hidden);
  const dim3 grid(unsigned(plan.row_blocks), unsigned(plan.unit_blocks));
  with_dtype(p.dtype, [&](auto tag) {
    lstm_cell_forward_kernel<decltype(tag)><<<grid, plan.threads, 0, stream>>>(p);
  });
  return Status::from_cuda(cudaGetLastError());
}

Status lstm_cell_backward(const LstmCellBackwardParams& p, cudaStream_t stream) {
  const Status checked = check_lstm_cell_backward(p);
  if (!checked.is_ok()) return checked;
  if (p.batch == 0 || p.hidden == 0) return Status::ok();
  const CellPlan plan = plan_cell(p.batch, p.hidden);
  const dim3 grid(unsigned(plan.row_blocks), unsigned(plan.unit_blocks));
  with_dtype(p.dtype, [&](auto tag) {
    lstm_cell_backward_kernel<decltype(tag)><<<grid, plan.threads, 0, stream>>>(p);
  });
  return Status::from_cuda(cudaGetLastError());
}

}  // namespace seqops
