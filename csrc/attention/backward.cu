// The attention backward's checks, its table of compiled instances (launchers.h), the
// delta kernel every instance needs first, and the dispatch: delta, then the instance's
// dK/dV and dQ kernels (backward_kernel.cuh, compiled only by instances/backward_*.cu).
#include "attention/launchers.h"

#include <cstdint>

#include "attention/addressing.h"
#include "attention/instance_table.h"
#include "common/dispatch.cuh"

namespace seqops {

namespace {

using attention::aligned16;
using attention::kMaxGridDim;
using attention::kMaxLength;
using attention::mask_readable;
using attention::strides_aligned;

attention::InstanceTable<AttentionBackwardInstance>& backward_table() {
  static attention::InstanceTable<AttentionBackwardInstance> table;
  return table;
}

constexpr int kDeltaWarps = 8;  // rows per CTA of the delta kernel, one warp each

// delta[b, h, i] = sum_e grad_out[b, h, i, e] * out[b, h, i, e] in fp32, into a contiguous
// [B, H, L]; one warp per row. `rows` = B * H * L.
template <typename T>
__global__ void __launch_bounds__(kDeltaWarps * 32)
    attention_delta_kernel(const T* out, HeadStrides out_strides, const T* grad_out, HeadStrides grad_strides,
                           float* delta, int64_t heads, int64_t len_q, int64_t rows, int head_dim) {
  const int64_t row = int64_t(blockIdx.x) * kDeltaWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t i = row % len_q;
  const int64_t h = (row / len_q) % heads;
  const int64_t b = row / (len_q * heads);
  const T* o = out + b * out_strides.batch + h * out_strides.head + i * out_strides.row;
  const T* g = grad_out + b * grad_strides.batch + h * grad_strides.head + i * grad_strides.row;
  float sum = 0.0f;
  for (int e = lane; e < head_dim; e += 32) sum += to_float(o[e]) * to_float(g[e]);
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) delta[row] = sum;
}

Status launch_delta(const AttentionBackwardParams& p, cudaStream_t stream) {
  const int64_t rows = p.batch * p.heads_q * p.len_q;
  const unsigned blocks = static_cast<unsigned>((rows + kDeltaWarps - 1) / kDeltaWarps);
  with_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    attention_delta_kernel<T><<<blocks, kDeltaWarps * 32, 0, stream>>>(
        static_cast<const T*>(p.out), p.out_strides, static_cast<const T*>(p.grad_out), p.grad_out_strides, p.delta,
        p.heads_q, p.len_q, rows, static_cast<int>(p.head_dim));
  });
  return Status::from_cuda(cudaGetLastError());
}

}  // namespace

bool register_attention_backward(const AttentionBackwardInstance& instance) { return backward_table().add(instance); }

AttentionBackwardLauncher find_attention_backward(int head_dim, DType dtype, bool ordered_dq) {
  const AttentionBackwardInstance* instance = backward_table().find(head_dim, dtype);
  if (instance == nullptr) return nullptr;
  return ordered_dq ? instance->ordered_dq_launcher : instance->launcher;
}

int attention_backward_instance_count() { return backward_table().count; }

const AttentionBackwardInstance& attention_backward_instance(int i) { return backward_table().entries[i]; }

Status check_attention_backward(const AttentionBackwardParams& p) {
  const bool ordered_dq = p.dq_accum != nullptr;
  if (!p.q || !p.k || !p.v || !p.out || !p.grad_out || !p.lse || !p.delta || !p.dk || !p.dv ||
      (!ordered_dq && !p.dq)) {
    return Status::bad_argument("attention_backward: no tensor may be null (dq only with dq_accum)");
  }
  if (ordered_dq && (p.dq_turns == nullptr || reinterpret_cast<uintptr_t>(p.dq_accum) % 16 != 0 ||
                     reinterpret_cast<uintptr_t>(p.dq_turns) % 4 != 0)) {
    return Status::bad_argument("attention_backward: dq_accum needs dq_turns, and 16-byte (dq_accum) and "
                                "4-byte (dq_turns) alignment");
  }
  if (p.dtype != DType::float16 && p.dtype != DType::bfloat16) {
    return Status::bad_argument("attention_backward: the kernels take float16 and bfloat16");
  }
  if (p.batch < 1 || p.heads_q < 1 || p.heads_kv < 1 || p.len_q < 1 || p.len_kv < 1 || p.head_dim < 1) {
    return Status::bad_argument("attention_backward: batch, heads, L and S must be at least 1");
  }
  if (p.heads_q % p.heads_kv != 0) {
    return Status::bad_argument("attention_backward: the key/value heads must divide the query heads");
  }
  if (p.len_q >= kMaxLength || p.len_kv >= kMaxLength) {
    return Status::bad_argument("attention_backward: L and S must be below 2**30");
  }
  if (p.batch > kMaxGridDim || p.heads_q > kMaxGridDim) {
    return Status::bad_argument("attention_backward: batch and query heads must be at most 65535");
  }
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.grad_out) ||
      (!ordered_dq && !aligned16(p.dq)) || !aligned16(p.dk) || !aligned16(p.dv)) {
    return Status::bad_argument("attention_backward: q, k, v, grad_out, dq, dk and dv must be 16-byte aligned");
  }
  if (!strides_aligned(p.q_strides) || !strides_aligned(p.k_strides) || !strides_aligned(p.v_strides) ||
      !strides_aligned(p.grad_out_strides) || !strides_aligned(p.dq_strides) || !strides_aligned(p.dk_strides) ||
      !strides_aligned(p.dv_strides)) {
    return Status::bad_argument("attention_backward: the batch, head and row strides of q, k, v, grad_out, dq, dk "
                                "and dv must be multiples of 8 elements (16 bytes)");
  }
  if (!mask_readable(p.mask)) {
    return Status::bad_argument("attention_backward: the mask must be none, bool, or float32, float16 or bfloat16, and not null");
  }
  return Status::ok();
}

Status attention_backward(const AttentionBackwardParams& params, cudaStream_t stream) {
  const Status checked = check_attention_backward(params);
  if (!checked.is_ok()) return checked;
  const AttentionBackwardLauncher launcher =
      find_attention_backward(static_cast<int>(params.head_dim), params.dtype, params.dq_accum != nullptr);
  if (launcher == nullptr) {
    return Status::bad_argument("attention_backward: no instance for this head dim and dtype in this build");
  }
  const Status delta = launch_delta(params, stream);
  if (!delta.is_ok()) return delta;
  return launcher(params, stream);
}

}  // namespace seqops
