// The attention forward's checks, its table of compiled instances (launchers.h) and the
// dispatch into it. The kernels themselves are in forward_kernel.cuh, compiled only by the
// generated files under instances/.
#include "attention/launchers.h"

#include <cmath>
#include <cstdint>

#include "attention/addressing.h"
#include "attention/instance_table.h"
#include "common/device.h"
#include "common/dispatch.cuh"

namespace seqops {

namespace {

using attention::aligned16;
using attention::kMaxGridDim;
using attention::kMaxLength;
using attention::mask_readable;
using attention::strides_aligned;
using attention::tma_describable;

// A function-local static: built on first use, so the instance files may register in any
// order of static initialisation across translation units.
attention::InstanceTable<AttentionForwardInstance>& forward_table() {
  static attention::InstanceTable<AttentionForwardInstance> table;
  return table;
}

constexpr int kCombineWarps = 8;  // rows per CTA of the combine kernel, one warp each
constexpr int64_t kMaxSplits = 256;

// Split-KV's second step: per row (b, h, i), the splits' partial outputs weighted by
// exp(lse_s - lse), lse = log sum_s exp(lse_s); a row no split saw writes 0 and -inf.
// `rows` = B * H * L; partials are [splits, rows(, E)], contiguous.
template <typename T>
__global__ void __launch_bounds__(kCombineWarps * 32, 1)
    attention_combine_kernel(const float* partial_out, const float* partial_lse, int splits, T* out,
                             HeadStrides out_strides, float* lse, int64_t lse_batch_stride, int64_t lse_head_stride,
                             int64_t heads, int64_t len_q, int64_t rows, int head_dim) {
  const int64_t row = int64_t(blockIdx.x) * kCombineWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t i = row % len_q;
  const int64_t h = (row / len_q) % heads;
  const int64_t b = row / (len_q * heads);
  float max_lse = -INFINITY;
  for (int s = 0; s < splits; ++s) max_lse = fmaxf(max_lse, partial_lse[s * rows + row]);
  float total = 0.0f;
  if (max_lse != -INFINITY) {
    for (int s = 0; s < splits; ++s) total += expf(partial_lse[s * rows + row] - max_lse);  // exp(-inf) = 0
  }
  T* out_row = out + b * out_strides.batch + h * out_strides.head + i * out_strides.row;
  for (int e = lane; e < head_dim; e += 32) {
    float value = 0.0f;
    if (total > 0.0f) {
      for (int s = 0; s < splits; ++s) {
        const float weight = expf(partial_lse[s * rows + row] - max_lse);
        if (weight > 0.0f) value += weight * partial_out[(s * rows + row) * head_dim + e];
      }
      value /= total;
    }
    out_row[e] = from_float<T>(value);
  }
  if (lane == 0) lse[b * lse_batch_stride + h * lse_head_stride + i] = total > 0.0f ? max_lse + logf(total) : -INFINITY;
}

Status launch_combine(const AttentionForwardParams& p, cudaStream_t stream) {
  const int64_t rows = p.batch * p.heads_q * p.len_q;
  const unsigned blocks = static_cast<unsigned>((rows + kCombineWarps - 1) / kCombineWarps);
  with_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    attention_combine_kernel<T><<<blocks, kCombineWarps * 32, 0, stream>>>(
        p.partial_out, p.partial_lse, static_cast<int>(p.splits), static_cast<T*>(p.out), p.out_strides, p.lse,
        p.lse_batch_stride, p.lse_head_stride, p.heads_q, p.len_q, rows, static_cast<int>(p.head_dim));
  });
  return Status::from_cuda(cudaGetLastError());
}

}  // namespace

bool register_attention_forward(const AttentionForwardInstance& instance) { return forward_table().add(instance); }

AttentionForwardLauncher find_attention_forward(int head_dim, DType dtype, int compute_capability) {
  const AttentionForwardInstance* instance = forward_table().find_for_device(head_dim, dtype, compute_capability);
  return instance == nullptr ? nullptr : instance->launcher;
}

int attention_forward_instance_count() { return forward_table().count; }

const AttentionForwardInstance& attention_forward_instance(int i) { return forward_table().entries[i]; }

Status check_attention_forward(const AttentionForwardParams& p) {
  if (!p.q || !p.k || !p.v || !p.out || !p.lse) {
    return Status::bad_argument("attention_forward: q, k, v, out and lse must not be null");
  }
  if (p.dtype != DType::float16 && p.dtype != DType::bfloat16) {
    return Status::bad_argument("attention_forward: the kernels take float16 and bfloat16");
  }
  if (p.batch < 1 || p.heads_q < 1 || p.heads_kv < 1 || p.len_q < 1 || p.len_kv < 0 || p.head_dim < 1) {
    return Status::bad_argument("attention_forward: batch, heads and L must be at least 1, S at least 0");
  }
  if (p.heads_q % p.heads_kv != 0) {
    return Status::bad_argument("attention_forward: the key/value heads must divide the query heads");
  }
  if (p.len_q >= kMaxLength || p.len_kv >= kMaxLength) {
    return Status::bad_argument("attention_forward: L and S must be below 2**30");
  }
  if (p.batch > kMaxGridDim || p.heads_q > kMaxGridDim) {
    return Status::bad_argument("attention_forward: batch and query heads must be at most 65535");
  }
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out)) {
    return Status::bad_argument("attention_forward: q, k, v and out must be 16-byte aligned");
  }
  if (!strides_aligned(p.q_strides) || !strides_aligned(p.k_strides) || !strides_aligned(p.v_strides) ||
      !strides_aligned(p.out_strides)) {
    return Status::bad_argument("attention_forward: the batch, head and row strides of q, k, v and out must be "
                                "multiples of 8 elements (16 bytes)");
  }
  if (!mask_readable(p.mask)) {
    return Status::bad_argument("attention_forward: the mask must be none, bool, or float32, float16 or bfloat16, and not null");
  }
  if (p.splits < 1 || p.splits > kMaxSplits) {
    return Status::bad_argument("attention_forward: splits must be in [1, 256]");
  }
  if (p.splits > 1 && (p.partial_out == nullptr || p.partial_lse == nullptr)) {
    return Status::bad_argument("attention_forward: a split launch needs partial_out and partial_lse");
  }
  return Status::ok();
}

Status attention_forward(const AttentionForwardParams& params, cudaStream_t stream, int arch_limit) {
  const Status checked = check_attention_forward(params);
  if (!checked.is_ok()) return checked;
  cudaError_t device_error = cudaSuccess;
  const DeviceSize device = current_device_size(&device_error);
  if (device_error != cudaSuccess) return Status::from_cuda(device_error);
  // Split-KV launches (decode: a few queries against long K/V) keep the sm80 kernel, whose
  // 64-key tiles the splits were sized by (seqops/backends/cuda_attention.py,
  // FORWARD_KEY_TILE; the sm90 kernel's are 128), and so do tensors TMA cannot describe;
  // the rest run on the device's own.
  int compute_capability = params.splits == 1 && tma_describable(params) ? device.compute_capability : 80;
  if (arch_limit > 0 && compute_capability > arch_limit) compute_capability = arch_limit;
  const AttentionForwardLauncher launcher =
      find_attention_forward(static_cast<int>(params.head_dim), params.dtype, compute_capability);
  if (launcher == nullptr) {
    return Status::bad_argument("attention_forward: no instance for this head dim and dtype in this build");
  }
  const Status launched = launcher(params, stream);
  if (!launched.is_ok() || params.splits == 1) return launched;
  return launch_combine(params, stream);
}

}  // namespace seqops
