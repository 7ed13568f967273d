// The attention forward's checks, its table of compiled instances (launchers.h) and the
// dispatch into it. The kernels themselves are in forward_kernel.cuh, compiled only by the
// generated files under instances/.
#include "attention/launchers.h"

#include <cstdint>

#include "attention/addressing.h"
#include "attention/instance_table.h"

namespace seqops {

namespace {

using attention::aligned16;
using attention::kMaxGridDim;
using attention::kMaxLength;
using attention::mask_readable;
using attention::strides_aligned;

// A function-local static: built on first use, so the instance files may register in any
// order of static initialisation across translation units.
attention::InstanceTable<AttentionForwardInstance>& forward_table() {
  static attention::InstanceTable<AttentionForwardInstance> table;
  return table;
}

}  // namespace

bool register_attention_forward(const AttentionForwardInstance& instance) { return forward_table().add(instance); }

AttentionForwardLauncher find_attention_forward(int head_dim, DType dtype) {
  const AttentionForwardInstance* instance = forward_table().find(head_dim, dtype);
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
  return Status::ok();
}

Status attention_forward(const AttentionForwardParams& params, cudaStream_t stream) {
  const Status checked = check_attention_forward(params);
  if (!checked.is_ok()) return checked;
  const AttentionForwardLauncher launcher = find_attention_forward(static_cast<int>(params.head_dim), params.dtype);
  if (launcher == nullptr) {
    return Status::bad_argument("attention_forward: no instance for this head dim and dtype in this build");
  }
  return launcher(params, stream);
}

}  // namespace seqops
