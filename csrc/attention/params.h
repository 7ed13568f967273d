// What the attention launchers take: plain pointers, a dtype code, sizes and int64
// strides, filled by the Python CUDA Impl (seqops/backends/cuda_attention.py) from the
// fused contract's tensors: q [B, Hq, L, E], k [B, Hkv, S, E], v [B, Hkv, S, E],
// out [B, Hq, L, E], lse [B, Hq, L] (fp32), and for the backward grad_out like out, and
// dq, dk, dv like q, k, v. The head dim has stride 1 in every tensor;
// the other strides are taken as given. GQA is by index: query head h reads key/value
// head h / (Hq / Hkv), nothing is copied.
#pragma once

#include <cstdint>

#include "common/dtypes.h"

namespace seqops {

// Element strides of a [batch, head, row, head dim] tensor whose head dim has stride 1.
struct HeadStrides {
  int64_t batch = 0, head = 0, row = 0;
};

enum class MaskKind : int {
  none = 0,
  boolean = 1,  // bytes, 0 hides the key
  additive = 2,  // float32, float16 or bfloat16, added to the scaled scores
};

// An attn_mask broadcast to [B, Hq, L, S] by its element strides (0 on a broadcast dim).
// The kernels read it only at positions below L and S.
struct MaskParams {
  const void* ptr = nullptr;
  MaskKind kind = MaskKind::none;
  DType dtype = DType::float32;  // of an additive mask
  int64_t batch = 0, head = 0, row = 0, col = 0;
};

struct AttentionForwardParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;   // q's dtype
  float* lse = nullptr;  // natural log of each row's softmax denominator; -inf for a row that sees no key
  DType dtype = DType::float16;  // of q, k, v and out
  int64_t batch = 0, heads_q = 0, heads_kv = 0;
  int64_t len_q = 0, len_kv = 0;  // L, S
  int64_t head_dim = 0;           // E (value head dim too)
  HeadStrides q_strides, k_strides, v_strides, out_strides;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;  // its rows have stride 1
  float scale = 1.0f;  // the scores are scale * q.k
  // Causal: query i sees key j iff j <= i + causal_offset (0: upper-left; S - L:
  // bottom-right). With an offset below 0 the first rows see no key: their output is 0.
  bool causal = false;
  int64_t causal_offset = 0;
  MaskParams mask;  // with or without causal
  // Dropout on the probabilities (attention/dropout.h: the Triton backend's draw for the
  // same seed), kept ones scaled by 1 / (1 - dropout_p); 0 for none.
  float dropout_p = 0.0f;
  int64_t seed = 0;
  // Split-KV, for decode steps (few queries, long S): splits > 1 divides each query
  // block's key tiles into that many contiguous chunks, one CTA each, which write fp32
  // partials (normalised output and logsumexp per chunk); the combine kernel merges them
  // by their logsumexp into out and lse. Rows of a chunk that sees no key have lse -inf.
  int64_t splits = 1;
  float* partial_out = nullptr;  // [splits, B, Hq, L, E], contiguous
  float* partial_lse = nullptr;  // [splits, B, Hq, L], contiguous
};

struct AttentionBackwardParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;       // the forward's output
  const void* grad_out = nullptr;  // dL/d out
  const float* lse = nullptr;      // the forward's, natural log; -inf for a row that sees no key
  float* delta = nullptr;          // workspace [B, Hq, L], contiguous: rowsum(grad_out * out), written first
  void* dq = nullptr;              // outputs, in the inputs' dtype; dk and dv summed over
  void* dk = nullptr;              // the query heads of a GQA group
  void* dv = nullptr;
  DType dtype = DType::float16;    // of every tensor above but lse and delta
  int64_t batch = 0, heads_q = 0, heads_kv = 0;
  int64_t len_q = 0, len_kv = 0;
  int64_t head_dim = 0;
  HeadStrides q_strides, k_strides, v_strides, out_strides, grad_out_strides, dq_strides, dk_strides, dv_strides;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;
  float scale = 1.0f;
  bool causal = false;
  int64_t causal_offset = 0;  // as in the forward
  MaskParams mask;            // as in the forward
  float dropout_p = 0.0f;     // as in the forward, with its seed
  int64_t seed = 0;
  // For an additive mask's gradient: the dQ kernel writes dS, the gradient of the scores
  // (scale * q.k + mask), into this zero-filled fp32 [B, Hq, L, S] (contiguous); null for none.
  float* dscores = nullptr;
  // Ordered dQ (backward_kernel.cuh): set, the dK/dV kernel adds dQ (unscaled, fp32) into
  // dq_accum, a zero-filled contiguous [B, Hq, L, E], in key-block order, taking turns at
  // dq_turns, zero-filled int32 [2 + B * Hq * ceil(L / kv_block_m) * kv_column_split]: a
  // ticket counter; a poison word, the bits of a float the host adds to every dq entry
  // (0.0f, or NaN written by a key block whose turn never came: a bug made visible); then
  // a turn counter per (batch, head, query tile, block of columns). dq is then not written (and may be null). Null: the dQ
  // kernel writes dq. For a mask's gradient, dscores is then [B, Hq, S, L] (dS^T).
  float* dq_accum = nullptr;
  int* dq_turns = nullptr;
};

}  // namespace seqops
