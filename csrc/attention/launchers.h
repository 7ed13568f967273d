// Host side of the attention kernels: the params' checks, the launch, and the tables of
// compiled instances the launches look in. No torch, no Python.
//
// Each (head dim, dtype) instance of the forward (and of the backward) is compiled in its own generated
// file under instances/ (generate_instances.py writes them), which adds its launcher to the
// table at static-initialisation time (when the extension is loaded). A build made from a
// subset of those files therefore still links and imports; a call for an instance it
// lacks is refused with "no instance for head dim X dtype Y in this build".
#pragma once

#include <cuda_runtime_api.h>

#include "attention/params.h"
#include "common/status.h"

namespace seqops {

using AttentionForwardLauncher = Status (*)(const AttentionForwardParams&, cudaStream_t);

// One compiled forward: its key, its launch geometry (ptxas reports no dynamic smem, so the
// table carries it), its launcher.
struct AttentionForwardInstance {
  int head_dim = 0;
  DType dtype = DType::float16;
  int arch = 80;  // 80: mma.sync, any target; 90: wgmma, compute capability 9.0 only
  int block_m = 0, block_n = 0;  // queries per CTA, keys per tile
  int threads = 0;
  int smem_bytes = 0;  // dynamic shared memory per CTA
  AttentionForwardLauncher launcher = nullptr;
};

// Called once per instance file, before main; returns true so that it can initialise a
// namespace-scope constant.
bool register_attention_forward(const AttentionForwardInstance& instance);
// The launcher compiled for this head dim and dtype that a device of this compute
// capability (major * 10 + minor) runs, or null when this build has none.
AttentionForwardLauncher find_attention_forward(int head_dim, DType dtype, int compute_capability = 80);
// The instances this build registered (for the bindings' listing).
int attention_forward_instance_count();
const AttentionForwardInstance& attention_forward_instance(int i);

// The checks that touch no GPU (pointers, sizes, strides, alignment); the launcher runs
// them first too. An instance missing from the build is not checked here.
Status check_attention_forward(const AttentionForwardParams& params);

// arch_limit: 0 runs the device's best instance (the sm90a one on compute capability 9.0);
// 80 keeps the sm80 kernel on any device (the backend's "sm80" variant, so that a Hopper
// GPU tests both).
Status attention_forward(const AttentionForwardParams& params, cudaStream_t stream, int arch_limit = 0);

// The backward: backward.cu's delta kernel, then the instance's dK/dV and dQ kernels (or,
// with params.dq_accum set, its ordered-dQ dK/dV kernel alone).
using AttentionBackwardLauncher = Status (*)(const AttentionBackwardParams&, cudaStream_t);

struct AttentionBackwardInstance {
  int head_dim = 0;
  DType dtype = DType::float16;
  int arch = 80;
  int kv_block_n = 0, kv_block_m = 0, kv_threads = 0, kv_smem_bytes = 0;  // keys per CTA, queries per tile
  int kv_column_split = 1;  // dK/dV CTAs a key block, each taking a block of the head dim's columns
  int q_block_m = 0, q_block_n = 0, q_threads = 0, q_smem_bytes = 0;      // queries per CTA, keys per tile
  AttentionBackwardLauncher launcher = nullptr;  // the dK/dV and dQ kernels (delta already written)
  // The ordered-dQ form (params.dq_accum set): the dK/dV kernel alone, adding dQ into the
  // fp32 workspace in key-block order; its CTAs have kv_* geometry and this much smem.
  int ordered_dq_smem_bytes = 0;
  AttentionBackwardLauncher ordered_dq_launcher = nullptr;
};

bool register_attention_backward(const AttentionBackwardInstance& instance);
// The launcher for this head dim and dtype (the ordered-dQ one when ordered_dq), or null.
AttentionBackwardLauncher find_attention_backward(int head_dim, DType dtype, bool ordered_dq = false);
int attention_backward_instance_count();
const AttentionBackwardInstance& attention_backward_instance(int i);

Status check_attention_backward(const AttentionBackwardParams& params);

Status attention_backward(const AttentionBackwardParams& params, cudaStream_t stream);

}  // namespace seqops
