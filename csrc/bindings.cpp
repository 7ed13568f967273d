// The Python module `_cuda_ext`: pybind11 over plain values only (data pointers as ints,
// sizes, int64 strides, dtype codes, the CUDA stream as an int), so that the extension
// builds with nvcc, pybind11 and the Python headers alone and never sees torch. The
// Python CUDA Impl (seqops/backends/cuda_softmax.py) checks tensors and fills these.
//
// Every failure is a `CudaError` (a RuntimeError) naming the call and the cause: a refused
// argument, or the CUDA runtime's own error, e.g. "insufficient driver" or "no CUDA-capable
// device" when called on a machine without a GPU.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention/addressing.h"
#include "attention/dropout.h"
#include "attention/launchers.h"
#include "attention/schedule.h"
#include "common/device.h"
#include "common/dtypes.h"
#include "common/status.h"
#include "recurrent/launchers.h"
#include "recurrent/plan.h"
#include "softmax/launchers.h"
#include "softmax/plan.h"

namespace py = pybind11;

namespace {

using Strides = std::array<int64_t, 4>;  // (a, b, c, column), in elements
using MatrixStrides = std::array<int64_t, 2>;  // (row, column), in elements
using HeadStrideArray = std::array<int64_t, 3>;  // (batch, head, row) of a [B, H, rows, head dim] tensor, in elements

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string cuda_message(cudaError_t error) {
  return std::string(cudaGetErrorName(error)) + ": " + cudaGetErrorString(error);
}

void raise_on_error(const char* call, const seqops::Status& status) {
  if (status.code == seqops::StatusCode::bad_argument) {
    throw CudaError(std::string("seqops CUDA extension, bad argument: ") + status.message);
  }
  if (status.code == seqops::StatusCode::cuda_error) {
    const bool no_gpu = status.cuda == cudaErrorInsufficientDriver || status.cuda == cudaErrorNoDevice;
    throw CudaError(std::string("seqops CUDA extension, ") + call + ": the CUDA runtime failed (" +
                    cuda_message(status.cuda) + ")" +
                    (no_gpu ? "; this machine has no usable NVIDIA GPU and driver" : ""));
  }
}

seqops::DType dtype_of(const char* call, const char* name, int code) {
  if (!seqops::is_known_dtype(code)) {
    throw CudaError(std::string("seqops CUDA extension, ") + call + ": unknown dtype code " + std::to_string(code) +
                    " for " + name);
  }
  return static_cast<seqops::DType>(code);
}

seqops::RowStrides row_strides(const Strides& s) { return {s[0], s[1], s[2], s[3]}; }

// Runs `launch` with `device` current, as the tensors' device, restoring the caller's
// device after: this module's CUDA runtime (linked statically) keeps its own notion of
// the current device, apart from torch's.
template <typename Launch>
seqops::Status on_device(int device, Launch&& launch) {
  int previous = -1;
  cudaError_t error = cudaGetDevice(&previous);
  if (error != cudaSuccess) return seqops::Status::from_cuda(error);
  if (previous != device && (error = cudaSetDevice(device)) != cudaSuccess) return seqops::Status::from_cuda(error);
  const seqops::Status status = launch();
  if (previous != device) cudaSetDevice(previous);
  return status;
}

cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

void softmax_forward(uintptr_t x, int x_dtype, const Strides& x_strides, uintptr_t y, int y_dtype,
                     const Strides& y_strides, uintptr_t mask, const Strides& mask_strides, int64_t n_rows,
                     int64_t n_cols, int64_t rows_b, int64_t rows_c, int64_t causal_rows, double scale, int device,
                     uintptr_t stream) {
  seqops::SoftmaxForwardParams p;
  p.x = reinterpret_cast<const void*>(x);
  p.y = reinterpret_cast<void*>(y);
  p.mask = reinterpret_cast<const uint8_t*>(mask);
  p.x_dtype = dtype_of("softmax_forward", "x", x_dtype);
  p.y_dtype = dtype_of("softmax_forward", "y", y_dtype);
  p.shape = {n_rows, n_cols, rows_b, rows_c};
  p.x_strides = row_strides(x_strides);
  p.y_strides = row_strides(y_strides);
  p.mask_strides = row_strides(mask_strides);
  p.causal_rows = causal_rows;
  p.scale = static_cast<float>(scale);
  raise_on_error("softmax_forward", seqops::check_softmax_forward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("softmax_forward", on_device(device, [&] { return seqops::softmax_forward(p, as_stream(stream)); }));
}

void softmax_backward(uintptr_t dy, int dy_dtype, const Strides& dy_strides, uintptr_t y, int y_dtype,
                      const Strides& y_strides, uintptr_t mask, const Strides& mask_strides, uintptr_t dx, int dx_dtype,
                      const Strides& dx_strides, int64_t n_rows, int64_t n_cols, int64_t rows_b, int64_t rows_c,
                      int64_t causal_rows, double scale, int device, uintptr_t stream) {
  seqops::SoftmaxBackwardParams p;
  p.dy = reinterpret_cast<const void*>(dy);
  p.y = reinterpret_cast<const void*>(y);
  p.mask = reinterpret_cast<const uint8_t*>(mask);
  p.dx = reinterpret_cast<void*>(dx);
  p.dy_dtype = dtype_of("softmax_backward", "dy", dy_dtype);
  p.y_dtype = dtype_of("softmax_backward", "y", y_dtype);
  p.dx_dtype = dtype_of("softmax_backward", "dx", dx_dtype);
  p.shape = {n_rows, n_cols, rows_b, rows_c};
  p.dy_strides = row_strides(dy_strides);
  p.y_strides = row_strides(y_strides);
  p.mask_strides = row_strides(mask_strides);
  p.dx_strides = row_strides(dx_strides);
  p.causal_rows = causal_rows;
  p.scale = static_cast<float>(scale);
  raise_on_error("softmax_backward", seqops::check_softmax_backward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("softmax_backward", on_device(device, [&] { return seqops::softmax_backward(p, as_stream(stream)); }));
}

const char* dtype_name(seqops::DType dtype) {
  switch (dtype) {
    case seqops::DType::float32: return "float32";
    case seqops::DType::float16: return "float16";
    case seqops::DType::bfloat16: return "bfloat16";
  }
  return "unknown";
}

seqops::HeadStrides head_strides(const HeadStrideArray& s) { return {s[0], s[1], s[2]}; }

// An attn_mask's plain values: kind 0 none, 1 bool (bytes), 2 additive (mask_dtype's code);
// strides (batch, head, row, col) of it broadcast to [B, Hq, L, S].
seqops::MaskParams mask_params(const char* call, uintptr_t mask, int kind, int dtype, const Strides& strides) {
  if (kind < 0 || kind > 2) {
    throw CudaError(std::string("seqops CUDA extension, ") + call + ": unknown mask kind " + std::to_string(kind));
  }
  seqops::MaskParams m;
  m.ptr = reinterpret_cast<const void*>(mask);
  m.kind = static_cast<seqops::MaskKind>(kind);
  m.dtype = kind == 2 ? dtype_of(call, "the mask", dtype) : seqops::DType::float32;
  m.batch = strides[0];
  m.head = strides[1];
  m.row = strides[2];
  m.col = strides[3];
  return m;
}

void attention_forward(uintptr_t q, const HeadStrideArray& q_strides, uintptr_t k, const HeadStrideArray& k_strides,
                       uintptr_t v, const HeadStrideArray& v_strides, uintptr_t out, const HeadStrideArray& out_strides,
                       uintptr_t lse, const MatrixStrides& lse_strides, int dtype, int64_t batch, int64_t heads_q,
                       int64_t heads_kv, int64_t len_q, int64_t len_kv, int64_t head_dim, double scale, bool causal,
                       int64_t causal_offset, int device, uintptr_t stream, uintptr_t mask, int mask_kind,
                       int mask_dtype, const Strides& mask_strides, int64_t splits, uintptr_t partial_out,
                       uintptr_t partial_lse, double dropout_p, int64_t seed, int arch_limit) {
  seqops::AttentionForwardParams p;
  p.dropout_p = static_cast<float>(dropout_p);
  p.seed = seed;
  p.splits = splits;
  p.partial_out = reinterpret_cast<float*>(partial_out);
  p.partial_lse = reinterpret_cast<float*>(partial_lse);
  p.mask = mask_params("attention_forward", mask, mask_kind, mask_dtype, mask_strides);
  p.q = reinterpret_cast<const void*>(q);
  p.k = reinterpret_cast<const void*>(k);
  p.v = reinterpret_cast<const void*>(v);
  p.out = reinterpret_cast<void*>(out);
  p.lse = reinterpret_cast<float*>(lse);
  p.dtype = dtype_of("attention_forward", "q, k, v and out", dtype);
  p.batch = batch;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.len_q = len_q;
  p.len_kv = len_kv;
  p.head_dim = head_dim;
  p.q_strides = head_strides(q_strides);
  p.k_strides = head_strides(k_strides);
  p.v_strides = head_strides(v_strides);
  p.out_strides = head_strides(out_strides);
  p.lse_batch_stride = lse_strides[0];
  p.lse_head_stride = lse_strides[1];
  p.scale = static_cast<float>(scale);
  p.causal = causal;
  p.causal_offset = causal_offset;
  raise_on_error("attention_forward", seqops::check_attention_forward(p));
  if (seqops::find_attention_forward(static_cast<int>(head_dim), p.dtype) == nullptr) {
    throw CudaError("seqops CUDA extension, attention_forward: no instance for head dim " + std::to_string(head_dim) +
                    " dtype " + dtype_name(p.dtype) + " in this build (csrc/attention/instances/ lists them)");
  }
  py::gil_scoped_release no_gil;
  raise_on_error("attention_forward",
                 on_device(device, [&] { return seqops::attention_forward(p, as_stream(stream), arch_limit); }));
}

// Every forward instance this build registered: its key and launch geometry.
py::list attention_forward_instances() {
  py::list out;
  for (int i = 0; i < seqops::attention_forward_instance_count(); ++i) {
    const seqops::AttentionForwardInstance& instance = seqops::attention_forward_instance(i);
    py::dict entry;
    entry["head_dim"] = instance.head_dim;
    entry["dtype"] = static_cast<int>(instance.dtype);
    entry["arch"] = instance.arch;
    entry["block_m"] = instance.block_m;
    entry["block_n"] = instance.block_n;
    entry["threads"] = instance.threads;
    entry["smem_bytes"] = instance.smem_bytes;
    out.append(entry);
  }
  return out;
}

void attention_backward(uintptr_t grad_out, const HeadStrideArray& grad_out_strides, uintptr_t q,
                        const HeadStrideArray& q_strides, uintptr_t k, const HeadStrideArray& k_strides, uintptr_t v,
                        const HeadStrideArray& v_strides, uintptr_t out, const HeadStrideArray& out_strides,
                        uintptr_t lse, const MatrixStrides& lse_strides, uintptr_t delta, uintptr_t dq,
                        const HeadStrideArray& dq_strides, uintptr_t dk, const HeadStrideArray& dk_strides, uintptr_t dv,
                        const HeadStrideArray& dv_strides, int dtype, int64_t batch, int64_t heads_q, int64_t heads_kv,
                        int64_t len_q, int64_t len_kv, int64_t head_dim, double scale, bool causal,
                        int64_t causal_offset, int device, uintptr_t stream, uintptr_t mask, int mask_kind,
                        int mask_dtype, const Strides& mask_strides, double dropout_p, int64_t seed,
                        uintptr_t dscores, uintptr_t dq_accum, uintptr_t dq_turns) {
  seqops::AttentionBackwardParams p;
  p.dscores = reinterpret_cast<float*>(dscores);
  p.dq_accum = reinterpret_cast<float*>(dq_accum);
  p.dq_turns = reinterpret_cast<int*>(dq_turns);
  p.dropout_p = static_cast<float>(dropout_p);
  p.seed = seed;
  p.mask = mask_params("attention_backward", mask, mask_kind, mask_dtype, mask_strides);
  p.grad_out = reinterpret_cast<const void*>(grad_out);
  p.q = reinterpret_cast<const void*>(q);
  p.k = reinterpret_cast<const void*>(k);
  p.v = reinterpret_cast<const void*>(v);
  p.out = reinterpret_cast<const void*>(out);
  p.lse = reinterpret_cast<const float*>(lse);
  p.delta = reinterpret_cast<float*>(delta);
  p.dq = reinterpret_cast<void*>(dq);
  p.dk = reinterpret_cast<void*>(dk);
  p.dv = reinterpret_cast<void*>(dv);
  p.dtype = dtype_of("attention_backward", "every tensor but lse and delta", dtype);
  p.batch = batch;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.len_q = len_q;
  p.len_kv = len_kv;
  p.head_dim = head_dim;
  p.grad_out_strides = head_strides(grad_out_strides);
  p.q_strides = head_strides(q_strides);
  p.k_strides = head_strides(k_strides);
  p.v_strides = head_strides(v_strides);
  p.out_strides = head_strides(out_strides);
  p.dq_strides = head_strides(dq_strides);
  p.dk_strides = head_strides(dk_strides);
  p.dv_strides = head_strides(dv_strides);
  p.lse_batch_stride = lse_strides[0];
  p.lse_head_stride = lse_strides[1];
  p.scale = static_cast<float>(scale);
  p.causal = causal;
  p.causal_offset = causal_offset;
  raise_on_error("attention_backward", seqops::check_attention_backward(p));
  if (seqops::find_attention_backward(static_cast<int>(head_dim), p.dtype, p.dq_accum != nullptr) == nullptr) {
    throw CudaError("seqops CUDA extension, attention_backward: no instance for head dim " + std::to_string(head_dim) +
                    " dtype " + dtype_name(p.dtype) + " in this build (csrc/attention/instances/ lists them)");
  }
  py::gil_scoped_release no_gil;
  raise_on_error("attention_backward",
                 on_device(device, [&] { return seqops::attention_backward(p, as_stream(stream)); }));
}

// Every backward instance this build registered: its key and both kernels' geometry.
py::list attention_backward_instances() {
  py::list out;
  for (int i = 0; i < seqops::attention_backward_instance_count(); ++i) {
    const seqops::AttentionBackwardInstance& instance = seqops::attention_backward_instance(i);
    py::dict entry;
    entry["head_dim"] = instance.head_dim;
    entry["dtype"] = static_cast<int>(instance.dtype);
    entry["kv_block_n"] = instance.kv_block_n;
    entry["kv_block_m"] = instance.kv_block_m;
    entry["kv_threads"] = instance.kv_threads;
    entry["kv_smem_bytes"] = instance.kv_smem_bytes;
    entry["q_block_m"] = instance.q_block_m;
    entry["q_block_n"] = instance.q_block_n;
    entry["q_threads"] = instance.q_threads;
    entry["q_smem_bytes"] = instance.q_smem_bytes;
    entry["ordered_dq_smem_bytes"] = instance.ordered_dq_smem_bytes;
    entry["kv_column_split"] = instance.kv_column_split;
    out.append(entry);
  }
  return out;
}

// The tiles one CTA of the attention kernels visits, as the kernels compute them
// (attention/schedule.h): for "keys", the key tiles of query block `block` (the forward
// and dQ); for "queries", the query tiles of key block `block` (dK/dV). Each as
// (tile, needs_mask), in the order given by the schedule's range (ascending); for "keys",
// split `split` of `splits` of them (split-KV).
py::list attention_schedule(const std::string& kind, int64_t block, int64_t block_m, int64_t block_n, int64_t len_q,
                            int64_t len_kv, bool causal, int64_t causal_offset, int64_t split, int64_t splits) {
  if (splits < 1 || split < 0 || split >= splits || (kind != "keys" && splits != 1)) {
    throw std::invalid_argument("attention_schedule: split must be in [0, splits), and splits 1 for 'queries'");
  }
  if (kind != "keys" && kind != "queries") {
    throw std::invalid_argument("attention_schedule: kind must be 'keys' or 'queries', got '" + kind + "'");
  }
  if (block < 0 || block_m < 1 || block_n < 1 || len_q < 1 || len_kv < 1 || len_q >= (int64_t(1) << 30) ||
      len_kv >= (int64_t(1) << 30) || block * (kind == "keys" ? block_m : block_n) >= (kind == "keys" ? len_q : len_kv)) {
    throw std::invalid_argument("attention_schedule: the block must lie inside L (keys) or S (queries), lengths in "
                                "[1, 2**30), block sizes at least 1");
  }
  const int offset = static_cast<int>(seqops::attention::clamp_causal_offset(causal_offset, len_q, len_kv));
  const int m = static_cast<int>(block_m), n = static_cast<int>(block_n), b = static_cast<int>(block);
  const int lq = static_cast<int>(len_q), lkv = static_cast<int>(len_kv);
  py::list out;
  if (kind == "keys") {
    const seqops::attention::TileRange range = seqops::attention::split_tiles(
        seqops::attention::key_tiles(b, m, n, lq, lkv, causal, offset), static_cast<int>(split),
        static_cast<int>(splits));
    for (int t = range.begin; t < range.end; ++t) {
      out.append(py::make_tuple(t, seqops::attention::tile_needs_mask(b * m, t * n, n, lkv, causal, offset)));
    }
  } else {
    const seqops::attention::TileRange range = seqops::attention::query_tiles(b, n, m, lq, causal, offset);
    for (int t = range.begin; t < range.end; ++t) {
      out.append(py::make_tuple(t, seqops::attention::tile_needs_mask(t * m, b * n, n, lkv, causal, offset)));
    }
  }
  return out;
}

py::list attention_dropout_uniform(int64_t seed, int64_t batch_head, const std::vector<int64_t>& counters) {
  const int32_t stream = seqops::attention::dropout_stream(seed, batch_head);
  py::list out;
  for (const int64_t counter : counters) out.append(seqops::attention::dropout_uniform(stream, counter));
  return out;
}

seqops::Strides2 matrix_strides(const MatrixStrides& s) { return {s[0], s[1]}; }

void lstm_cell_forward(uintptr_t x, const MatrixStrides& x_strides, uintptr_t h0, const MatrixStrides& h0_strides, uintptr_t c0,
                       const MatrixStrides& c0_strides, uintptr_t w_ih, const MatrixStrides& w_ih_strides, uintptr_t w_hh,
                       const MatrixStrides& w_hh_strides, uintptr_t b_ih, int64_t b_ih_stride, uintptr_t b_hh,
                       int64_t b_hh_stride, uintptr_t h1, const MatrixStrides& h1_strides, uintptr_t c1,
                       const MatrixStrides& c1_strides, uintptr_t gates, const MatrixStrides& gates_strides, int dtype,
                       int64_t batch, int64_t input_size, int64_t hidden, int device, uintptr_t stream) {
  seqops::LstmCellForwardParams p;
  p.x = reinterpret_cast<const void*>(x);
  p.h0 = reinterpret_cast<const void*>(h0);
  p.c0 = reinterpret_cast<const void*>(c0);
  p.w_ih = reinterpret_cast<const void*>(w_ih);
  p.w_hh = reinterpret_cast<const void*>(w_hh);
  p.b_ih = reinterpret_cast<const void*>(b_ih);
  p.b_hh = reinterpret_cast<const void*>(b_hh);
  p.h1 = reinterpret_cast<void*>(h1);
  p.c1 = reinterpret_cast<void*>(c1);
  p.gates = reinterpret_cast<float*>(gates);
  p.dtype = dtype_of("lstm_cell_forward", "the cell's tensors", dtype);
  p.batch = batch;
  p.input_size = input_size;
  p.hidden = hidden;
  p.x_s = matrix_strides(x_strides);
  p.h0_s = matrix_strides(h0_strides);
  p.c0_s = matrix_strides(c0_strides);
  p.w_ih_s = matrix_strides(w_ih_strides);
  p.w_hh_s = matrix_strides(w_hh_strides);
  p.h1_s = matrix_strides(h1_strides);
  p.c1_s = matrix_strides(c1_strides);
  p.gates_s = matrix_strides(gates_strides);
  p.b_ih_s = b_ih_stride;
  p.b_hh_s = b_hh_stride;
  raise_on_error("lstm_cell_forward", seqops::check_lstm_cell_forward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("lstm_cell_forward",
                 on_device(device, [&] { return seqops::lstm_cell_forward(p, as_stream(stream)); }));
}

void lstm_cell_backward(uintptr_t d_h1, const MatrixStrides& d_h1_strides, uintptr_t d_c1, const MatrixStrides& d_c1_strides,
                        uintptr_t gates, const MatrixStrides& gates_strides, uintptr_t c1, const MatrixStrides& c1_strides,
                        uintptr_t c0, const MatrixStrides& c0_strides, uintptr_t w_hh, const MatrixStrides& w_hh_strides,
                        uintptr_t dgates, const MatrixStrides& dgates_strides, uintptr_t d_c0, const MatrixStrides& d_c0_strides,
                        uintptr_t d_h0, const MatrixStrides& d_h0_strides, uintptr_t dbias, const MatrixStrides& dbias_strides,
                        int dtype, int64_t batch, int64_t hidden, int device, uintptr_t stream) {
  seqops::LstmCellBackwardParams p;
  p.d_h1 = reinterpret_cast<const void*>(d_h1);
  p.d_c1 = reinterpret_cast<const void*>(d_c1);
  p.gates = reinterpret_cast<const float*>(gates);
  p.c1 = reinterpret_cast<const void*>(c1);
  p.c0 = reinterpret_cast<const void*>(c0);
  p.w_hh = reinterpret_cast<const void*>(w_hh);
  p.dgates = reinterpret_cast<float*>(dgates);
  p.d_c0 = reinterpret_cast<float*>(d_c0);
  p.d_h0 = reinterpret_cast<float*>(d_h0);
  p.dbias = reinterpret_cast<float*>(dbias);
  p.dtype = dtype_of("lstm_cell_backward", "the cell's tensors", dtype);
  p.batch = batch;
  p.hidden = hidden;
  p.d_h1_s = matrix_strides(d_h1_strides);
  p.d_c1_s = matrix_strides(d_c1_strides);
  p.gates_s = matrix_strides(gates_strides);
  p.c1_s = matrix_strides(c1_strides);
  p.c0_s = matrix_strides(c0_strides);
  p.w_hh_s = matrix_strides(w_hh_strides);
  p.dgates_s = matrix_strides(dgates_strides);
  p.d_c0_s = matrix_strides(d_c0_strides);
  p.d_h0_s = matrix_strides(d_h0_strides);
  p.dbias_s = matrix_strides(dbias_strides);
  raise_on_error("lstm_cell_backward", seqops::check_lstm_cell_backward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("lstm_cell_backward",
                 on_device(device, [&] { return seqops::lstm_cell_backward(p, as_stream(stream)); }));
}

py::dict lstm_cell_plan(int64_t batch, int64_t hidden) {
  const seqops::CellPlan plan = seqops::plan_cell(batch, hidden);
  py::dict out;
  out["row_blocks"] = plan.row_blocks;
  out["unit_blocks"] = plan.unit_blocks;
  out["threads"] = plan.threads;
  out["rows_per_block"] = seqops::kCellRows;
  out["units_per_block"] = seqops::kCellUnits;
  return out;
}

seqops::HiddenCell hidden_cell_of(const char* call, const std::string& cell) {
  if (cell == "gru_cell") return seqops::HiddenCell::gru;
  if (cell == "rnn_tanh_cell") return seqops::HiddenCell::rnn_tanh;
  if (cell == "rnn_relu_cell") return seqops::HiddenCell::rnn_relu;
  throw CudaError(std::string("seqops CUDA extension, ") + call + ": unknown cell '" + cell +
                  "' (gru_cell, rnn_tanh_cell or rnn_relu_cell)");
}

void hidden_cell_forward(const std::string& cell, uintptr_t x, const MatrixStrides& x_strides, uintptr_t h0,
                         const MatrixStrides& h0_strides, uintptr_t w_ih, const MatrixStrides& w_ih_strides,
                         uintptr_t w_hh, const MatrixStrides& w_hh_strides, uintptr_t b_ih, int64_t b_ih_stride,
                         uintptr_t b_hh, int64_t b_hh_stride, uintptr_t h1, const MatrixStrides& h1_strides,
                         uintptr_t saved, const MatrixStrides& saved_strides, int dtype, int64_t batch,
                         int64_t input_size, int64_t hidden, int device, uintptr_t stream) {
  seqops::HiddenCellForwardParams p;
  p.cell = hidden_cell_of("hidden_cell_forward", cell);
  p.x = reinterpret_cast<const void*>(x);
  p.h0 = reinterpret_cast<const void*>(h0);
  p.w_ih = reinterpret_cast<const void*>(w_ih);
  p.w_hh = reinterpret_cast<const void*>(w_hh);
  p.b_ih = reinterpret_cast<const void*>(b_ih);
  p.b_hh = reinterpret_cast<const void*>(b_hh);
  p.h1 = reinterpret_cast<void*>(h1);
  p.saved = reinterpret_cast<float*>(saved);
  p.dtype = dtype_of("hidden_cell_forward", "the cell's tensors", dtype);
  p.batch = batch;
  p.input_size = input_size;
  p.hidden = hidden;
  p.x_s = matrix_strides(x_strides);
  p.h0_s = matrix_strides(h0_strides);
  p.w_ih_s = matrix_strides(w_ih_strides);
  p.w_hh_s = matrix_strides(w_hh_strides);
  p.h1_s = matrix_strides(h1_strides);
  p.saved_s = matrix_strides(saved_strides);
  p.b_ih_s = b_ih_stride;
  p.b_hh_s = b_hh_stride;
  raise_on_error("hidden_cell_forward", seqops::check_hidden_cell_forward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("hidden_cell_forward",
                 on_device(device, [&] { return seqops::hidden_cell_forward(p, as_stream(stream)); }));
}

void hidden_cell_backward(const std::string& cell, uintptr_t d_h1, const MatrixStrides& d_h1_strides, uintptr_t h0,
                          const MatrixStrides& h0_strides, uintptr_t saved, const MatrixStrides& saved_strides,
                          uintptr_t w_hh, const MatrixStrides& w_hh_strides, uintptr_t dgates,
                          const MatrixStrides& dgates_strides, uintptr_t d_h0, const MatrixStrides& d_h0_strides,
                          int dtype, int64_t batch, int64_t hidden, int device, uintptr_t stream) {
  seqops::HiddenCellBackwardParams p;
  p.cell = hidden_cell_of("hidden_cell_backward", cell);
  p.d_h1 = reinterpret_cast<const void*>(d_h1);
  p.h0 = reinterpret_cast<const void*>(h0);
  p.saved = reinterpret_cast<const float*>(saved);
  p.w_hh = reinterpret_cast<const void*>(w_hh);
  p.dgates = reinterpret_cast<float*>(dgates);
  p.d_h0 = reinterpret_cast<float*>(d_h0);
  p.dtype = dtype_of("hidden_cell_backward", "the cell's tensors", dtype);
  p.batch = batch;
  p.hidden = hidden;
  p.d_h1_s = matrix_strides(d_h1_strides);
  p.h0_s = matrix_strides(h0_strides);
  p.saved_s = matrix_strides(saved_strides);
  p.w_hh_s = matrix_strides(w_hh_strides);
  p.dgates_s = matrix_strides(dgates_strides);
  p.d_h0_s = matrix_strides(d_h0_strides);
  raise_on_error("hidden_cell_backward", seqops::check_hidden_cell_backward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("hidden_cell_backward",
                 on_device(device, [&] { return seqops::hidden_cell_backward(p, as_stream(stream)); }));
}

seqops::SequenceSchedule sequence_schedule(uintptr_t offsets, uintptr_t rows, uintptr_t prev, uintptr_t carried,
                                           int64_t steps) {
  seqops::SequenceSchedule s;
  s.offsets = reinterpret_cast<const int32_t*>(offsets);
  s.rows = reinterpret_cast<const int32_t*>(rows);
  s.prev = reinterpret_cast<const int32_t*>(prev);
  s.carried = reinterpret_cast<const int32_t*>(carried);
  s.steps = steps;
  return s;
}

void lstm_sequence_forward(uintptr_t xw, const MatrixStrides& xw_strides, uintptr_t h0, const MatrixStrides& h0_strides,
                           uintptr_t c0, const MatrixStrides& c0_strides, uintptr_t w_hh,
                           const MatrixStrides& w_hh_strides, uintptr_t w_hr, const MatrixStrides& w_hr_strides,
                           uintptr_t out, const MatrixStrides& out_strides, uintptr_t h_raw,
                           const MatrixStrides& h_raw_strides, uintptr_t cells, const MatrixStrides& cells_strides,
                           uintptr_t gates, const MatrixStrides& gates_strides, uintptr_t offsets, uintptr_t rows,
                           uintptr_t prev, uintptr_t carried, int64_t steps, int dtype, int64_t batch, int64_t hidden,
                           int64_t proj, int device, uintptr_t stream) {
  seqops::LstmSequenceForwardParams p;
  p.xw = reinterpret_cast<const void*>(xw);
  p.h0 = reinterpret_cast<const void*>(h0);
  p.c0 = reinterpret_cast<const void*>(c0);
  p.w_hh = reinterpret_cast<const void*>(w_hh);
  p.w_hr = reinterpret_cast<const void*>(w_hr);
  p.h_raw = reinterpret_cast<void*>(h_raw);
  p.proj = proj;
  p.w_hr_s = matrix_strides(w_hr_strides);
  p.h_raw_s = matrix_strides(h_raw_strides);
  p.out = reinterpret_cast<void*>(out);
  p.cells = reinterpret_cast<float*>(cells);
  p.gates = reinterpret_cast<float*>(gates);
  p.schedule = sequence_schedule(offsets, rows, prev, carried, steps);
  p.dtype = dtype_of("lstm_sequence_forward", "the layer's tensors", dtype);
  p.batch = batch;
  p.hidden = hidden;
  p.xw_s = matrix_strides(xw_strides);
  p.h0_s = matrix_strides(h0_strides);
  p.c0_s = matrix_strides(c0_strides);
  p.w_hh_s = matrix_strides(w_hh_strides);
  p.out_s = matrix_strides(out_strides);
  p.cells_s = matrix_strides(cells_strides);
  p.gates_s = matrix_strides(gates_strides);
  raise_on_error("lstm_sequence_forward", seqops::check_lstm_sequence_forward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("lstm_sequence_forward",
                 on_device(device, [&] { return seqops::lstm_sequence_forward(p, as_stream(stream)); }));
}

void lstm_sequence_backward(uintptr_t d_out, const MatrixStrides& d_out_strides, uintptr_t d_h_n,
                            const MatrixStrides& d_h_n_strides, uintptr_t d_c_n, const MatrixStrides& d_c_n_strides,
                            uintptr_t gates, const MatrixStrides& gates_strides, uintptr_t cells,
                            const MatrixStrides& cells_strides, uintptr_t c0, const MatrixStrides& c0_strides,
                            uintptr_t w_hh, const MatrixStrides& w_hh_strides, uintptr_t w_hr,
                            const MatrixStrides& w_hr_strides, uintptr_t dgates, uintptr_t d_total, uintptr_t d_h0,
                            uintptr_t d_c0, uintptr_t carry, uintptr_t offsets, uintptr_t rows, uintptr_t prev,
                            uintptr_t carried, int64_t steps, int dtype, int64_t batch, int64_t hidden, int64_t proj,
                            int device, uintptr_t stream) {
  seqops::LstmSequenceBackwardParams p;
  p.w_hr = reinterpret_cast<const void*>(w_hr);
  p.w_hr_s = matrix_strides(w_hr_strides);
  p.d_total = reinterpret_cast<float*>(d_total);
  p.proj = proj;
  p.d_out = reinterpret_cast<const void*>(d_out);
  p.d_h_n = reinterpret_cast<const void*>(d_h_n);
  p.d_c_n = reinterpret_cast<const void*>(d_c_n);
  p.gates = reinterpret_cast<const float*>(gates);
  p.cells = reinterpret_cast<const float*>(cells);
  p.c0 = reinterpret_cast<const void*>(c0);
  p.w_hh = reinterpret_cast<const void*>(w_hh);
  p.dgates = reinterpret_cast<float*>(dgates);
  p.d_h0 = reinterpret_cast<float*>(d_h0);
  p.d_c0 = reinterpret_cast<float*>(d_c0);
  p.carry = reinterpret_cast<float*>(carry);
  p.schedule = sequence_schedule(offsets, rows, prev, carried, steps);
  p.dtype = dtype_of("lstm_sequence_backward", "the layer's tensors", dtype);
  p.batch = batch;
  p.hidden = hidden;
  p.d_out_s = matrix_strides(d_out_strides);
  p.d_h_n_s = matrix_strides(d_h_n_strides);
  p.d_c_n_s = matrix_strides(d_c_n_strides);
  p.gates_s = matrix_strides(gates_strides);
  p.cells_s = matrix_strides(cells_strides);
  p.c0_s = matrix_strides(c0_strides);
  p.w_hh_s = matrix_strides(w_hh_strides);
  raise_on_error("lstm_sequence_backward", seqops::check_lstm_sequence_backward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("lstm_sequence_backward",
                 on_device(device, [&] { return seqops::lstm_sequence_backward(p, as_stream(stream)); }));
}

void hidden_sequence_forward(const std::string& cell, uintptr_t xw, const MatrixStrides& xw_strides, uintptr_t h0,
                             const MatrixStrides& h0_strides, uintptr_t w_hh, const MatrixStrides& w_hh_strides,
                             uintptr_t b_hh, int64_t b_hh_stride, uintptr_t out, const MatrixStrides& out_strides,
                             uintptr_t saved, const MatrixStrides& saved_strides, uintptr_t offsets, uintptr_t rows,
                             uintptr_t prev, uintptr_t carried, int64_t steps, int dtype, int64_t batch,
                             int64_t hidden, int device, uintptr_t stream) {
  seqops::HiddenSequenceForwardParams p;
  p.cell = hidden_cell_of("hidden_sequence_forward", cell);
  p.xw = reinterpret_cast<const void*>(xw);
  p.h0 = reinterpret_cast<const void*>(h0);
  p.w_hh = reinterpret_cast<const void*>(w_hh);
  p.b_hh = reinterpret_cast<const void*>(b_hh);
  p.out = reinterpret_cast<void*>(out);
  p.saved = reinterpret_cast<float*>(saved);
  p.schedule = sequence_schedule(offsets, rows, prev, carried, steps);
  p.dtype = dtype_of("hidden_sequence_forward", "the layer's tensors", dtype);
  p.batch = batch;
  p.hidden = hidden;
  p.xw_s = matrix_strides(xw_strides);
  p.h0_s = matrix_strides(h0_strides);
  p.w_hh_s = matrix_strides(w_hh_strides);
  p.out_s = matrix_strides(out_strides);
  p.saved_s = matrix_strides(saved_strides);
  p.b_hh_s = b_hh_stride;
  raise_on_error("hidden_sequence_forward", seqops::check_hidden_sequence_forward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("hidden_sequence_forward",
                 on_device(device, [&] { return seqops::hidden_sequence_forward(p, as_stream(stream)); }));
}

void hidden_sequence_backward(const std::string& cell, uintptr_t d_out, const MatrixStrides& d_out_strides,
                              uintptr_t d_h_n, const MatrixStrides& d_h_n_strides, uintptr_t out,
                              const MatrixStrides& out_strides, uintptr_t h0, const MatrixStrides& h0_strides,
                              uintptr_t saved, const MatrixStrides& saved_strides, uintptr_t w_hh,
                              const MatrixStrides& w_hh_strides, uintptr_t dgates, uintptr_t d_h0, uintptr_t carry,
                              uintptr_t offsets, uintptr_t rows, uintptr_t prev, uintptr_t carried, int64_t steps,
                              int dtype, int64_t batch, int64_t hidden, int device, uintptr_t stream) {
  seqops::HiddenSequenceBackwardParams p;
  p.cell = hidden_cell_of("hidden_sequence_backward", cell);
  p.d_out = reinterpret_cast<const void*>(d_out);
  p.d_h_n = reinterpret_cast<const void*>(d_h_n);
  p.out = reinterpret_cast<const void*>(out);
  p.h0 = reinterpret_cast<const void*>(h0);
  p.saved = reinterpret_cast<const float*>(saved);
  p.w_hh = reinterpret_cast<const void*>(w_hh);
  p.dgates = reinterpret_cast<float*>(dgates);
  p.d_h0 = reinterpret_cast<float*>(d_h0);
  p.carry = reinterpret_cast<float*>(carry);
  p.schedule = sequence_schedule(offsets, rows, prev, carried, steps);
  p.dtype = dtype_of("hidden_sequence_backward", "the layer's tensors", dtype);
  p.batch = batch;
  p.hidden = hidden;
  p.d_out_s = matrix_strides(d_out_strides);
  p.d_h_n_s = matrix_strides(d_h_n_strides);
  p.out_s = matrix_strides(out_strides);
  p.h0_s = matrix_strides(h0_strides);
  p.saved_s = matrix_strides(saved_strides);
  p.w_hh_s = matrix_strides(w_hh_strides);
  raise_on_error("hidden_sequence_backward", seqops::check_hidden_sequence_backward(p));
  py::gil_scoped_release no_gil;
  raise_on_error("hidden_sequence_backward",
                 on_device(device, [&] { return seqops::hidden_sequence_backward(p, as_stream(stream)); }));
}

// The sequence kernels' plan for `hidden` units of `dtype` and `gates` gate rows a unit
// (4 for the LSTM, 3 for the GRU, 1 for the RNNs), and why a GPU of these limits cannot
// run it (None: it can). Host only.
py::dict sequence_plan(int64_t hidden, int dtype, int gates, int64_t multiprocessors, int64_t max_shared_bytes,
                       int64_t projection) {
  if (gates != 1 && gates != 3 && gates != 4) {
    throw CudaError("seqops CUDA extension, sequence_plan: gates must be 1, 3 or 4, got " + std::to_string(gates));
  }
  const seqops::SequencePlan plan = seqops::plan_sequence(
      hidden, seqops::dtype_size(dtype_of("sequence_plan", "the layer's tensors", dtype)), gates, projection);
  py::dict out;
  out["blocks"] = plan.blocks;
  out["threads"] = plan.threads;
  out["shared_bytes"] = plan.shared_bytes;
  out["units_per_block"] = seqops::kSequenceUnits;
  const char* reason = seqops::sequence_unfit_reason(plan, multiprocessors, max_shared_bytes);
  out["reason"] = reason == nullptr ? py::object(py::none()) : py::object(py::str(reason));
  return out;
}

// What a device offers the cooperative sequence kernels: multiprocessors, the opt-in
// shared memory a block may have, and whether it takes cooperative launches.
py::dict device_limits(int device) {
  cudaError_t error = cudaSuccess;
  const seqops::DeviceSize size = seqops::device_size(device, &error);
  raise_on_error("device_limits", seqops::Status::from_cuda(error));
  py::dict out;
  out["multiprocessors"] = size.multiprocessors;
  out["max_shared_bytes"] = size.max_shared_bytes;
  out["cooperative_launch"] = size.cooperative_launch;
  return out;
}

// What this module's CUDA runtime sees: its version, the driver's, the device count, and
// the error that stops it using the GPU ("" when none), e.g. a driver older than the
// runtime linked in.
py::dict cuda_status() {
  int runtime = 0, driver = 0, devices = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  const cudaError_t error = cudaGetDeviceCount(&devices);
  py::dict out;
  out["runtime_version"] = runtime;
  out["driver_version"] = driver;
  out["device_count"] = error == cudaSuccess ? devices : 0;
  out["error"] = error == cudaSuccess ? std::string() : cuda_message(error);
  return out;
}

// col_bytes (a column's bytes over every tensor read or written, and the mask), l2_bytes,
// multiprocessors: as seqops::bounded_online (0: the unbounded plan; the launchers pass
// the device's).
py::dict softmax_plan(int64_t n_rows, int64_t n_cols, bool backward, int64_t col_bytes, int64_t l2_bytes,
                      int64_t multiprocessors) {
  const seqops::SoftmaxPlan plan = seqops::bounded_online(
      backward ? seqops::plan_softmax_backward(n_rows, n_cols) : seqops::plan_softmax(n_rows, n_cols), n_rows,
      n_cols, col_bytes, l2_bytes, multiprocessors);
  static const char* const kernel_names[] = {"warp_per_row", "block_per_row", "online"};
  py::dict out;
  out["kernel"] = kernel_names[static_cast<int>(plan.kernel)];
  out["threads"] = plan.threads;
  out["values_per_lane"] = plan.values_per_lane;
  out["rows_per_block"] = plan.rows_per_block;
  out["blocks"] = plan.blocks;
  out["splits"] = plan.splits;
  out["chunk"] = plan.chunk;
  return out;
}

}  // namespace

PYBIND11_MODULE(_cuda_ext, m) {
  m.doc() = "seqops CUDA C++ kernels over plain values (pointers, sizes, strides, dtype codes, stream)";
  py::register_exception<CudaError>(m, "CudaError", PyExc_RuntimeError);
#ifdef SEQOPS_SOURCE_HASH
  m.attr("source_hash") = SEQOPS_SOURCE_HASH;
#else
  m.attr("source_hash") = "";
#endif
  m.def("dtype_codes", [] {
    return py::dict(py::arg("float32") = int(seqops::DType::float32), py::arg("float16") = int(seqops::DType::float16),
                    py::arg("bfloat16") = int(seqops::DType::bfloat16));
  }, "dtype name -> the code the kernels take");
  m.def("softmax_forward", &softmax_forward, "y = softmax(scale * x) per row, hidden entries masked",
        py::arg("x"), py::arg("x_dtype"), py::arg("x_strides"), py::arg("y"), py::arg("y_dtype"), py::arg("y_strides"),
        py::arg("mask"), py::arg("mask_strides"), py::arg("n_rows"), py::arg("n_cols"), py::arg("rows_b"),
        py::arg("rows_c"), py::arg("causal_rows"), py::arg("scale"), py::arg("device"), py::arg("stream"));
  m.def("softmax_backward", &softmax_backward, "dx = scale * y * (dy - sum(dy * y)) per row, 0 where hidden",
        py::arg("dy"), py::arg("dy_dtype"), py::arg("dy_strides"), py::arg("y"), py::arg("y_dtype"),
        py::arg("y_strides"), py::arg("mask"), py::arg("mask_strides"), py::arg("dx"), py::arg("dx_dtype"),
        py::arg("dx_strides"), py::arg("n_rows"), py::arg("n_cols"), py::arg("rows_b"), py::arg("rows_c"),
        py::arg("causal_rows"), py::arg("scale"), py::arg("device"), py::arg("stream"));
  m.def("attention_forward", &attention_forward,
        "out = softmax(scale * q k^T + mask, causal if asked) v and lse (fp32, natural log, -inf for a row that sees no "
        "key), per (batch, query head); GQA by index",
        py::arg("q"), py::arg("q_strides"), py::arg("k"), py::arg("k_strides"), py::arg("v"), py::arg("v_strides"),
        py::arg("out"), py::arg("out_strides"), py::arg("lse"), py::arg("lse_strides"), py::arg("dtype"),
        py::arg("batch"), py::arg("heads_q"), py::arg("heads_kv"), py::arg("len_q"), py::arg("len_kv"),
        py::arg("head_dim"), py::arg("scale"), py::arg("causal"), py::arg("causal_offset"), py::arg("device"),
        py::arg("stream"), py::arg("mask") = 0, py::arg("mask_kind") = 0, py::arg("mask_dtype") = 0,
        py::arg("mask_strides") = Strides{0, 0, 0, 0}, py::arg("splits") = 1, py::arg("partial_out") = 0,
        py::arg("partial_lse") = 0, py::arg("dropout_p") = 0.0, py::arg("seed") = 0, py::arg("arch_limit") = 0);
  m.def("attention_forward_instances", &attention_forward_instances,
        "every attention forward instance compiled into this build: head_dim, dtype (code), arch (80: mma.sync, any "
        "device; 90: wgmma and TMA, compute capability 9.0), block_m, block_n, threads, smem_bytes (dynamic, per CTA)");
  m.def("attention_backward", &attention_backward,
        "dq, dk, dv of attention_forward (dk, dv summed over each GQA group), from grad_out, the forward's out "
        "and lse; delta is an fp32 [B, Hq, L] workspace. With dq_accum (and dq_turns; both zero-filled, shapes in "
        "attention/params.h) the five-product kernel adds dQ / scale into dq_accum in key-block order and dq is "
        "not written",
        py::arg("grad_out"), py::arg("grad_out_strides"), py::arg("q"), py::arg("q_strides"), py::arg("k"),
        py::arg("k_strides"), py::arg("v"), py::arg("v_strides"), py::arg("out"), py::arg("out_strides"),
        py::arg("lse"), py::arg("lse_strides"), py::arg("delta"), py::arg("dq"), py::arg("dq_strides"), py::arg("dk"),
        py::arg("dk_strides"), py::arg("dv"), py::arg("dv_strides"), py::arg("dtype"), py::arg("batch"),
        py::arg("heads_q"), py::arg("heads_kv"), py::arg("len_q"), py::arg("len_kv"), py::arg("head_dim"),
        py::arg("scale"), py::arg("causal"), py::arg("causal_offset"), py::arg("device"), py::arg("stream"),
        py::arg("mask") = 0, py::arg("mask_kind") = 0, py::arg("mask_dtype") = 0,
        py::arg("mask_strides") = Strides{0, 0, 0, 0}, py::arg("dropout_p") = 0.0, py::arg("seed") = 0,
        py::arg("dscores") = 0, py::arg("dq_accum") = 0, py::arg("dq_turns") = 0);
  m.def("attention_dropout_uniform", &attention_dropout_uniform,
        "the attention kernels' dropout draws (in [0, 1); kept when >= dropout_p) for one (seed, batch * Hq + "
        "head) at the given counters (query * S + key)",
        py::arg("seed"), py::arg("batch_head"), py::arg("counters"));
  m.def("attention_backward_instances", &attention_backward_instances,
        "every attention backward instance compiled into this build: head_dim, dtype (code), and per kernel its "
        "block sizes, threads and dynamic smem bytes");
  m.def("attention_tma_strides",
        [](const HeadStrideArray& strides, int64_t rows, int64_t heads, int64_t batch, int64_t head_dim) {
          const seqops::HeadStrides out = seqops::attention::tma_strides(head_strides(strides), rows, heads, batch,
                                                                          head_dim);
          return py::make_tuple(out.batch, out.head, out.row);
        },
        "the (batch, head, row) strides the sm90a forward's TMA descriptors get for a [batch, heads, rows, "
        "head_dim] tensor of these strides (a 0 left in them sends the call to the sm80 kernel)",
        py::arg("strides"), py::arg("rows"), py::arg("heads"), py::arg("batch"), py::arg("head_dim"));
  m.def("attention_schedule", &attention_schedule,
        "the (tile, needs_mask) pairs a CTA of the attention kernels visits: kind 'keys' for query block `block` "
        "(forward, dQ), 'queries' for key block `block` (dK/dV)",
        py::arg("kind"), py::arg("block"), py::arg("block_m"), py::arg("block_n"), py::arg("len_q"),
        py::arg("len_kv"), py::arg("causal"), py::arg("causal_offset"), py::arg("split") = 0, py::arg("splits") = 1);
  m.def("cuda_status", &cuda_status, "runtime and driver versions, device count, and why the GPU is unusable");
  m.def("softmax_plan", &softmax_plan,
        "the launch geometry the softmax kernels take for rows of n_cols (online: the grid bounded by the L2 share, "
        "or the rows split, on a GPU of l2_bytes and multiprocessors for columns of col_bytes; 0: a block a row)",
        py::arg("n_rows"), py::arg("n_cols"), py::arg("backward") = false, py::arg("col_bytes") = 0,
        py::arg("l2_bytes") = 0, py::arg("multiprocessors") = 0);
  m.def("lstm_cell_forward", &lstm_cell_forward,
        "h1, c1 and the fp32 gate activations of torch.lstm_cell; a bias pointer 0 is no bias", py::arg("x"),
        py::arg("x_strides"), py::arg("h0"), py::arg("h0_strides"), py::arg("c0"), py::arg("c0_strides"),
        py::arg("w_ih"), py::arg("w_ih_strides"), py::arg("w_hh"), py::arg("w_hh_strides"), py::arg("b_ih"),
        py::arg("b_ih_stride"), py::arg("b_hh"), py::arg("b_hh_stride"), py::arg("h1"), py::arg("h1_strides"),
        py::arg("c1"), py::arg("c1_strides"), py::arg("gates"), py::arg("gates_strides"), py::arg("dtype"),
        py::arg("batch"), py::arg("input_size"), py::arg("hidden"), py::arg("device"), py::arg("stream"));
  m.def("lstm_cell_backward", &lstm_cell_backward,
        "fp32 dgates, d_c0, d_h0 = dgates @ w_hh and per-block bias sums of the LSTM cell; d_h1, d_c1 or dbias 0 "
        "is none",
        py::arg("d_h1"), py::arg("d_h1_strides"), py::arg("d_c1"), py::arg("d_c1_strides"), py::arg("gates"),
        py::arg("gates_strides"), py::arg("c1"), py::arg("c1_strides"), py::arg("c0"), py::arg("c0_strides"),
        py::arg("w_hh"), py::arg("w_hh_strides"), py::arg("dgates"), py::arg("dgates_strides"), py::arg("d_c0"),
        py::arg("d_c0_strides"), py::arg("d_h0"), py::arg("d_h0_strides"), py::arg("dbias"),
        py::arg("dbias_strides"), py::arg("dtype"), py::arg("batch"), py::arg("hidden"), py::arg("device"),
        py::arg("stream"));
  m.def("lstm_cell_plan", &lstm_cell_plan, "the launch geometry of the LSTM cell kernels", py::arg("batch"),
        py::arg("hidden"));
  m.def("lstm_sequence_forward", &lstm_sequence_forward,
        "one direction of one LSTM layer over every step in one cooperative launch: out, the fp32 cell states and "
        "gate activations, from xw (the input projection, biases included); with proj > 0 (w_hr), h_raw too",
        py::arg("xw"), py::arg("xw_strides"), py::arg("h0"), py::arg("h0_strides"), py::arg("c0"),
        py::arg("c0_strides"), py::arg("w_hh"), py::arg("w_hh_strides"), py::arg("w_hr"), py::arg("w_hr_strides"),
        py::arg("out"), py::arg("out_strides"), py::arg("h_raw"), py::arg("h_raw_strides"), py::arg("cells"),
        py::arg("cells_strides"), py::arg("gates"), py::arg("gates_strides"), py::arg("offsets"), py::arg("rows"),
        py::arg("prev"), py::arg("carried"), py::arg("steps"), py::arg("dtype"), py::arg("batch"), py::arg("hidden"),
        py::arg("proj"), py::arg("device"), py::arg("stream"));
  m.def("lstm_sequence_backward", &lstm_sequence_backward,
        "fp32 dgates of every step, d_h0 and d_c0 of lstm_sequence_forward in one cooperative launch, and with proj "
        "> 0 d_total (the gradient reaching the projected output); d_out, d_h_n or d_c_n 0 is none",
        py::arg("d_out"), py::arg("d_out_strides"), py::arg("d_h_n"), py::arg("d_h_n_strides"), py::arg("d_c_n"),
        py::arg("d_c_n_strides"), py::arg("gates"), py::arg("gates_strides"), py::arg("cells"),
        py::arg("cells_strides"), py::arg("c0"), py::arg("c0_strides"), py::arg("w_hh"), py::arg("w_hh_strides"),
        py::arg("w_hr"), py::arg("w_hr_strides"), py::arg("dgates"), py::arg("d_total"), py::arg("d_h0"),
        py::arg("d_c0"), py::arg("carry"), py::arg("offsets"), py::arg("rows"), py::arg("prev"), py::arg("carried"),
        py::arg("steps"), py::arg("dtype"), py::arg("batch"), py::arg("hidden"), py::arg("proj"), py::arg("device"),
        py::arg("stream"));
  m.def("hidden_sequence_forward", &hidden_sequence_forward,
        "one direction of one GRU or RNN layer (`cell`: gru_cell, rnn_tanh_cell, rnn_relu_cell) over every step in "
        "one cooperative launch: out and the fp32 values the backward needs, from xw (the input projection); b_hh 0 "
        "is none (the GRU's only)",
        py::arg("cell"), py::arg("xw"), py::arg("xw_strides"), py::arg("h0"), py::arg("h0_strides"), py::arg("w_hh"),
        py::arg("w_hh_strides"), py::arg("b_hh"), py::arg("b_hh_stride"), py::arg("out"), py::arg("out_strides"),
        py::arg("saved"), py::arg("saved_strides"), py::arg("offsets"), py::arg("rows"), py::arg("prev"),
        py::arg("carried"), py::arg("steps"), py::arg("dtype"), py::arg("batch"), py::arg("hidden"),
        py::arg("device"), py::arg("stream"));
  m.def("hidden_sequence_backward", &hidden_sequence_backward,
        "fp32 gate gradients of every step and d_h0 of hidden_sequence_forward in one cooperative launch; d_out or "
        "d_h_n 0 is none",
        py::arg("cell"), py::arg("d_out"), py::arg("d_out_strides"), py::arg("d_h_n"), py::arg("d_h_n_strides"),
        py::arg("out"), py::arg("out_strides"), py::arg("h0"), py::arg("h0_strides"), py::arg("saved"),
        py::arg("saved_strides"), py::arg("w_hh"), py::arg("w_hh_strides"), py::arg("dgates"), py::arg("d_h0"),
        py::arg("carry"), py::arg("offsets"), py::arg("rows"), py::arg("prev"), py::arg("carried"), py::arg("steps"),
        py::arg("dtype"), py::arg("batch"), py::arg("hidden"), py::arg("device"), py::arg("stream"));
  m.def("sequence_plan", &sequence_plan,
        "the launch geometry of the sequence kernels (gates: 4 LSTM, 3 GRU, 1 RNN) and why a GPU of these limits "
        "cannot run it (None: it can)",
        py::arg("hidden"), py::arg("dtype"), py::arg("gates"), py::arg("multiprocessors"),
        py::arg("max_shared_bytes"), py::arg("projection") = 0);
  m.def("device_limits", &device_limits,
        "a device's multiprocessors, opt-in shared memory a block and whether it takes cooperative launches",
        py::arg("device"));
  m.def("hidden_cell_forward", &hidden_cell_forward,
        "h1 and the fp32 values the backward needs of torch.gru_cell, rnn_tanh_cell or rnn_relu_cell (`cell`); a "
        "bias pointer 0 is no bias",
        py::arg("cell"), py::arg("x"), py::arg("x_strides"), py::arg("h0"), py::arg("h0_strides"), py::arg("w_ih"),
        py::arg("w_ih_strides"), py::arg("w_hh"), py::arg("w_hh_strides"), py::arg("b_ih"), py::arg("b_ih_stride"),
        py::arg("b_hh"), py::arg("b_hh_stride"), py::arg("h1"), py::arg("h1_strides"), py::arg("saved"),
        py::arg("saved_strides"), py::arg("dtype"), py::arg("batch"), py::arg("input_size"), py::arg("hidden"),
        py::arg("device"), py::arg("stream"));
  m.def("hidden_cell_backward", &hidden_cell_backward,
        "fp32 pre-activation gate gradients and d_h0 of the GRU or RNN cell (`cell`); h0 0 for the RNNs",
        py::arg("cell"), py::arg("d_h1"), py::arg("d_h1_strides"), py::arg("h0"), py::arg("h0_strides"),
        py::arg("saved"), py::arg("saved_strides"), py::arg("w_hh"), py::arg("w_hh_strides"), py::arg("dgates"),
        py::arg("dgates_strides"), py::arg("d_h0"), py::arg("d_h0_strides"), py::arg("dtype"), py::arg("batch"),
        py::arg("hidden"), py::arg("device"), py::arg("stream"));
  m.def("rows_vector_aligned",
        [](uintptr_t data, int64_t stride_a, int64_t stride_b, int64_t stride_c, int64_t stride_col, int element_size,
           int bytes) {
          return seqops::rows_vector_aligned(reinterpret_cast<const void*>(data), stride_a, stride_b, stride_c,
                                             stride_col, element_size, bytes);
        },
        "whether rows at `data` with these strides take the kernels' vector loads", py::arg("data"),
        py::arg("stride_a"), py::arg("stride_b"), py::arg("stride_c"), py::arg("stride_col"), py::arg("element_size"),
        py::arg("bytes"));
}
