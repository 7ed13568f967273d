// The cells with one state, torch.gru_cell, rnn_tanh_cell and rnn_relu_cell: forward and
// backward kernels and their host launchers, on the LSTM cell's geometry (plan.h) and
// tiled product (cell_tiles.cuh). Forward: the input and recurrent products of a block's
// rows and units (kept apart: the GRU's r gates the recurrent n), biases, the cell's
// activations and h1, in one kernel. Backward: the pre-activation gate gradients and
// d_h0 (through w_hh, plus the GRU's direct path z * d_h1) in one kernel; the weight, bias
// and input gradients are plain GEMMs and sums the Python side runs. One kernel body per
// direction serves the three cells, the cell's math a policy (GruCell, RnnCell<act>).
// Everything accumulates in fp32, the products on tensor cores in fp16/bf16.
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
constexpr int kRowsPerThread = kCellRowsPerThread;

// r, z, n (torch's order); saved r, z, n and hn = h0 W_hn^T + b_hn.
struct GruCell {
  static constexpr int kGates = 3;
  static constexpr int kSaved = 4;
  static constexpr bool kReadsState = true;  // h1 and d_h0 take h0 itself (through z)

  // gi, gh: x W_i^T + b_i and h0 W_h^T + b_h of the three gates; h: h0. Returns h1.
  __device__ __forceinline__ static float step(const float (&gi)[kGates], const float (&gh)[kGates], float h,
                                               float (&saved)[kSaved]) {
    const float r = sigmoid(gi[0] + gh[0]);
    const float z = sigmoid(gi[1] + gh[1]);
    const float n = tanhf(gi[2] + r * gh[2]);
    saved[0] = r;
    saved[1] = z;
    saved[2] = n;
    saved[3] = gh[2];
    return n + z * (h - n);
  }

  // From dh (reaching h1), h (h0) and the saved values: the gradients to store, in saved's
  // layout (dr, dz, dn, dn * r), and the three that reach h0 through w_hh (dr, dz, dn * r).
  __device__ __forceinline__ static void gradients(float dh, float h, const float (&saved)[kSaved],
                                                   float (&dgates)[kSaved], float (&through_w_hh)[kGates]) {
    const float r = saved[0], z = saved[1], n = saved[2], hn = saved[3];
    const float d_n = dh * (1.0f - z) * (1.0f - n * n);
    const float d_z = dh * (h - n) * z * (1.0f - z);
    const float d_r = d_n * hn * r * (1.0f - r);
    dgates[0] = through_w_hh[0] = d_r;
    dgates[1] = through_w_hh[1] = d_z;
    dgates[2] = d_n;
    dgates[3] = through_w_hh[2] = d_n * r;
  }

  // d_h0's term that bypasses w_hh: h1 = (1 - z) n + z h0, so d_h1 * z.
  template <typename T>
  __device__ __forceinline__ static float direct(const HiddenCellBackwardParams& p, int64_t row, int64_t feature) {
    const float z = p.saved[row * p.saved_s.row + (p.hidden + feature) * p.saved_s.col];
    return load<T>(p.d_h1, row, feature, p.d_h1_s) * z;
  }
};

enum class Activation { tanh, relu };

// h1 = act(x W_ih^T + b_ih + h0 W_hh^T + b_hh); saved: h1 in fp32 (h1 itself may be fp16 or
// bf16, too coarse for tanh's derivative 1 - h1^2).
template <Activation kAct>
struct RnnCell {
  static constexpr int kGates = 1;
  static constexpr int kSaved = 1;
  static constexpr bool kReadsState = false;

  __device__ __forceinline__ static float step(const float (&gi)[kGates], const float (&gh)[kGates], float,
                                               float (&saved)[kSaved]) {
    const float pre = gi[0] + gh[0];
    // relu as torch's: NaN stays NaN.
    const float out = kAct == Activation::relu ? (pre < 0.0f ? 0.0f : pre) : tanhf(pre);
    saved[0] = out;
    return out;
  }

  __device__ __forceinline__ static void gradients(float dh, float, const float (&saved)[kSaved],
                                                   float (&dgates)[kSaved], float (&through_w_hh)[kGates]) {
    const float out = saved[0];
    // relu's gradient where its output is positive, as torch's threshold_backward.
    const float d_pre = kAct == Activation::relu ? (out > 0.0f ? dh : 0.0f) : dh * (1.0f - out * out);
    dgates[0] = through_w_hh[0] = d_pre;
  }

  template <typename T>
  __device__ __forceinline__ static float direct(const HiddenCellBackwardParams&, int64_t, int64_t) {
    return 0.0f;
  }
};

// A block: kRows rows x kUnits units, every gate of them. Each thread holds its
// kRowsPerThread rows of one unit, the two products apart until the cell's math.
template <typename T, typename Cell>
__device__ __forceinline__ void hidden_cell_forward(const HiddenCellForwardParams& p) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  __shared__ CellTiles<T, G> tiles;
  const int64_t row0 = int64_t(blockIdx.x) * kRows, unit0 = int64_t(blockIdx.y) * kUnits;
  float gi[kRowsPerThread][G] = {}, gh[kRowsPerThread][G] = {};
  accumulate_gates<T, G>(p.x, p.x_s, p.w_ih, p.w_ih_s, p.input_size, p.batch, p.hidden, row0, unit0, gi, tiles);
  accumulate_gates<T, G>(p.h0, p.h0_s, p.w_hh, p.w_hh_s, p.hidden, p.batch, p.hidden, row0, unit0, gh, tiles);
  const int64_t unit = unit0 + threadIdx.x % kUnits;
  if (unit >= p.hidden) return;
  float b_i[G], b_h[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const int64_t j = g * p.hidden + unit;
    b_i[g] = p.b_ih != nullptr ? to_float(static_cast<const T*>(p.b_ih)[j * p.b_ih_s]) : 0.0f;
    b_h[g] = p.b_hh != nullptr ? to_float(static_cast<const T*>(p.b_hh)[j * p.b_hh_s]) : 0.0f;
  }
  const int r0 = (threadIdx.x / kUnits) * kRowsPerThread;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int64_t row = row0 + r0 + r;
    if (row >= p.batch) break;
    float in[G], rec[G], saved[S];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      in[g] = gi[r][g] + b_i[g];
      rec[g] = gh[r][g] + b_h[g];
    }
    const float h = Cell::kReadsState ? load<T>(p.h0, row, unit, p.h0_s) : 0.0f;
    const float h1 = Cell::step(in, rec, h, saved);
    static_cast<T*>(p.h1)[row * p.h1_s.row + unit * p.h1_s.col] = from_float<T>(h1);
    float* out = p.saved + row * p.saved_s.row;
#pragma unroll
    for (int s = 0; s < S; ++s) out[(s * p.hidden + unit) * p.saved_s.col] = saved[s];
  }
}

// A block: kRows rows x kUnits features of h0. Over the H units kUnits at a time: the gate
// gradients of its rows (stored by the blocks of feature block 0 only), then
// d_h0 += (the gradients through w_hh) @ w_hh through shared memory, as the LSTM's backward.
template <typename T, typename Cell>
__device__ __forceinline__ void hidden_cell_backward(const HiddenCellBackwardParams& p) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  __shared__ float grad_tile[G * kUnits][kRows + 1];
  __shared__ float w_tile[G * kUnits][kUnits + 1];
  const int64_t row0 = int64_t(blockIdx.x) * kRows, feature0 = int64_t(blockIdx.y) * kUnits;
  const bool writes_gates = blockIdx.y == 0;
  const int tid = threadIdx.x;
  ThroughWeights<T, G> d_h0;
  for (int64_t unit0 = 0; unit0 < p.hidden; unit0 += kUnits) {
    for (int e = tid; e < kRows * kUnits; e += kThreads) {
      const int j = e % kUnits, r = e / kUnits;
      const int64_t row = row0 + r, unit = unit0 + j;
      float through_w_hh[G] = {};
      if (row < p.batch && unit < p.hidden) {
        const float* in = p.saved + row * p.saved_s.row;
        float saved[S], dgates[S];
#pragma unroll
        for (int s = 0; s < S; ++s) saved[s] = in[(s * p.hidden + unit) * p.saved_s.col];
        const float dh = load<T>(p.d_h1, row, unit, p.d_h1_s);
        const float h = Cell::kReadsState ? load<T>(p.h0, row, unit, p.h0_s) : 0.0f;
        Cell::gradients(dh, h, saved, dgates, through_w_hh);
        if (writes_gates) {
          float* out = p.dgates + row * p.dgates_s.row;
#pragma unroll
          for (int s = 0; s < S; ++s) out[(s * p.hidden + unit) * p.dgates_s.col] = dgates[s];
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g) grad_tile[g * kUnits + j][r] = through_w_hh[g];
    }
    load_weight_block<T, G>(p.w_hh, p.w_hh_s, p.hidden, unit0, feature0, w_tile);
    __syncthreads();
    d_h0.add(grad_tile, w_tile);
    __syncthreads();
  }
  d_h0.for_each([&](int r, int f, float value) {
    const int64_t row = row0 + r, feature = feature0 + f;
    if (row < p.batch && feature < p.hidden) {
      p.d_h0[row * p.d_h0_s.row + feature * p.d_h0_s.col] = value + Cell::template direct<T>(p, row, feature);
    }
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads) gru_cell_forward_kernel(const HiddenCellForwardParams p) {
  hidden_cell_forward<T, GruCell>(p);
}

// At least 6 blocks an SM (85 registers a thread at most): with the thread count alone,
// ptxas for sm_90a settled at 72 registers and spilled (fp16, bf16).
template <typename T, Activation kAct>
__global__ void __launch_bounds__(kThreads, 6) rnn_cell_forward_kernel(const HiddenCellForwardParams p) {
  hidden_cell_forward<T, RnnCell<kAct>>(p);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) gru_cell_backward_kernel(const HiddenCellBackwardParams p) {
  hidden_cell_backward<T, GruCell>(p);
}

template <typename T, Activation kAct>
__global__ void __launch_bounds__(kThreads) rnn_cell_backward_kernel(const HiddenCellBackwardParams p) {
  hidden_cell_backward<T, RnnCell<kAct>>(p);
}

}  // namespace

Status check_hidden_cell_forward(const HiddenCellForwardParams& p) {
  if (!is_known_hidden_cell(int(p.cell))) return Status::bad_argument("hidden_cell_forward: unknown cell code");
  if (!is_known_dtype(int(p.dtype))) return Status::bad_argument("hidden_cell_forward: unknown dtype code");
  if (p.batch < 0 || p.input_size < 0 || p.hidden < 0) {
    return Status::bad_argument("hidden_cell_forward: negative size");
  }
  if (p.batch > 0 && p.hidden > 0 &&
      (p.h0 == nullptr || p.w_hh == nullptr || p.h1 == nullptr || p.saved == nullptr ||
       (p.input_size > 0 && (p.x == nullptr || p.w_ih == nullptr)))) {
    return Status::bad_argument("hidden_cell_forward: a tensor pointer is null");
  }
  if (!cell_grid_fits(p.batch, p.hidden)) {
    return Status::bad_argument("hidden_cell_forward: batch or hidden size past the launch grid (hidden over 2097120 "
                                "units)");
  }
  return Status::ok();
}

Status check_hidden_cell_backward(const HiddenCellBackwardParams& p) {
  if (!is_known_hidden_cell(int(p.cell))) return Status::bad_argument("hidden_cell_backward: unknown cell code");
  if (!is_known_dtype(int(p.dtype))) return Status::bad_argument("hidden_cell_backward: unknown dtype code");
  if (p.batch < 0 || p.hidden < 0) return Status::bad_argument("hidden_cell_backward: negative size");
  if (p.batch > 0 && p.hidden > 0 &&
      (p.d_h1 == nullptr || p.saved == nullptr || p.w_hh == nullptr || p.dgates == nullptr || p.d_h0 == nullptr ||
       (p.cell == HiddenCell::gru && p.h0 == nullptr))) {
    return Status::bad_argument("hidden_cell_backward: a tensor pointer is null");
  }
  if (!cell_grid_fits(p.batch, p.hidden)) {
    return Status::bad_argument("hidden_cell_backward: batch or hidden size past the launch grid (hidden over "
                                "2097120 units)");
  }
  return Status::ok();
}

Status hidden_cell_forward(const HiddenCellForwardParams& p, cudaStream_t stream) {
  const Status checked = check_hidden_cell_forward(p);
  if (!checked.is_ok()) return checked;
  if (p.batch == 0 || p.hidden == 0) return Status::ok();
  const CellPlan plan = plan_cell(p.batch, p.hidden);
  const dim3 grid(unsigned(plan.row_blocks), unsigned(plan.unit_blocks));
  with_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (p.cell) {
      case HiddenCell::gru: gru_cell_forward_kernel<T><<<grid, plan.threads, 0, stream>>>(p); break;
      case HiddenCell::rnn_tanh:
        rnn_cell_forward_kernel<T, Activation::tanh><<<grid, plan.threads, 0, stream>>>(p);
        break;
      case HiddenCell::rnn_relu:
        rnn_cell_forward_kernel<T, Activation::relu><<<grid, plan.threads, 0, stream>>>(p);
        break;
    }
  });
  return Status::from_cuda(cudaGetLastError());
}

Status hidden_cell_backward(const HiddenCellBackwardParams& p, cudaStream_t stream) {
  const Status checked = check_hidden_cell_backward(p);
  if (!checked.is_ok()) return checked;
  if (p.batch == 0 || p.hidden == 0) return Status::ok();
  const CellPlan plan = plan_cell(p.batch, p.hidden);
  const dim3 grid(unsigned(plan.row_blocks), unsigned(plan.unit_blocks));
  with_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (p.cell) {
      case HiddenCell::gru: gru_cell_backward_kernel<T><<<grid, plan.threads, 0, stream>>>(p); break;
      case HiddenCell::rnn_tanh:
        rnn_cell_backward_kernel<T, Activation::tanh><<<grid, plan.threads, 0, stream>>>(p);
        break;
      case HiddenCell::rnn_relu:
        rnn_cell_backward_kernel<T, Activation::relu><<<grid, plan.threads, 0, stream>>>(p);
        break;
    }
  });
  return Status::from_cuda(cudaGetLastError());
}

}  // namespace seqops
