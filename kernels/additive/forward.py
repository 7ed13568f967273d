"""The additive attention forward: per block of queries, key tiles streamed with their
scores computed on the fly and an online softmax; only each row's logsumexp is saved for
the backward. The weights, when asked for, are a second pass over the keys from it."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import cast_rounded, ceil_div, dot, exp_accurate
from .common import load_operand, mask_operand, probabilities, project, score_tile, value_block, visible
from .tiles import BLOCK_M, BLOCK_N, hidden_block_and_warps


@triton.jit
def additive_forward_kernel(
    qp_ptr, kp_ptr, v_ptr, values_ptr, mask_ptr, context_ptr, stats_ptr, weights_ptr,
    Lq, Lk, hidden, value_dim,
    values_strides, mask_strides, context_strides, weights_strides,
    MASKED: tl.constexpr, NEED_WEIGHTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """context = softmax_j(s_ij) values_j for BLOCK_M queries of one batch entry (program
    axis 1); stats = each row's (max score, sum of exp(score - max)), the sum 0 for a row
    that sees no key, whose context is 0; weights = the probabilities, when NEED_WEIGHTS.
    *_strides: the tensors' (batch, row, column) strides."""
    b = tl.program_id(1).to(tl.int64)
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV).to(tl.int64)
    qp_base = qp_ptr + b * Lq * hidden
    kp_base = kp_ptr + b * Lk * hidden
    values_base = values_ptr + b * values_strides[0]
    mask_base = mask_ptr + b * mask_strides[0]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        s = score_tile(qp_base, kp_base, v_ptr, offs_m, offs_n, Lq, Lk, hidden, BLOCK_M, BLOCK_N, BLOCK_D)
        keep = visible(mask_base, offs_m, offs_n, Lq, Lk, mask_strides, MASKED)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row that has seen only masked keys keeps max -inf; shifting it by 0 makes its
        # probabilities exp(-inf) = 0 rather than exp(-inf - -inf) = NaN.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = exp_accurate(s - shift[:, None])
        alpha = exp_accurate(m_i - shift)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        # In the values' dtype: 16-bit tiles on tensor cores, p rounded to it as torch's
        # weights are; fp32 exact.
        values = load_operand(values_base, offs_n, offs_dv, values_strides[1], values_strides[2], Lk, value_dim)
        acc = acc * alpha[:, None] + dot(cast_rounded(p, values.dtype), values)
        m_i = m_new

    empty = l_i == 0.0
    context = acc / tl.where(empty, 1.0, l_i)[:, None]
    context_pointers = (context_ptr + b * context_strides[0] + offs_m[:, None] * context_strides[1]
                        + offs_dv[None, :] * context_strides[2])
    tl.store(context_pointers, cast_rounded(context, context_ptr.dtype.element_ty),
             mask=(offs_m < Lq)[:, None] & (offs_dv < value_dim)[None, :])
    stats_pointers = stats_ptr + (b * Lq + offs_m) * 2
    tl.store(stats_pointers, tl.where(empty, 0.0, m_i), mask=offs_m < Lq)
    tl.store(stats_pointers + 1, l_i, mask=offs_m < Lq)

    if NEED_WEIGHTS:
        for start_n in range(0, Lk, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
            s = score_tile(qp_base, kp_base, v_ptr, offs_m, offs_n, Lq, Lk, hidden, BLOCK_M, BLOCK_N, BLOCK_D)
            keep = visible(mask_base, offs_m, offs_n, Lq, Lk, mask_strides, MASKED)
            p = probabilities(s, keep, tl.where(empty, 0.0, m_i), l_i)
            weights_pointers = (weights_ptr + b * weights_strides[0] + offs_m[:, None] * weights_strides[1]
                                + offs_n[None, :] * weights_strides[2])
            tl.store(weights_pointers, cast_rounded(p, weights_ptr.dtype.element_ty),
                     mask=(offs_m < Lq)[:, None] & (offs_n < Lk)[None, :])


def additive_attention_forward(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, w_query: torch.Tensor, w_key: torch.Tensor,
    v: torch.Tensor, b_query: Optional[torch.Tensor], b_key: Optional[torch.Tensor], mask: Optional[torch.Tensor],
    need_weights: bool,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Fused additive attention forward.

    query [B, Lq, Dq], keys [B, Lk, Dk], values [B, Lk, Dv] (any strides), w_query [d, Dq],
    w_key [d, Dk], v [d], biases [d] or None; mask None or bool 3-D broadcastable to
    [B, Lq, Lk]. Returns context [B, Lq, Dv] (query's dtype, contiguous), stats [B, Lq, 2]
    fp32 (each row's max score and sum of exp(score - max); 0 and 0 for a row that sees
    no key) and weights [B, Lq, Lk] when need_weights.
    """
    B, Lq, Lk, value_dim, hidden = query.shape[0], query.shape[1], keys.shape[1], values.shape[2], v.shape[0]
    context = torch.zeros(B, Lq, value_dim, dtype=query.dtype, device=query.device)
    stats = torch.zeros(B, Lq, 2, dtype=torch.float32, device=query.device)
    weights = torch.zeros(B, Lq, Lk, dtype=query.dtype, device=query.device) if need_weights else None
    if B * Lq == 0 or Lk == 0:
        return context, stats, weights
    projected_query = project(query, w_query, b_query)
    projected_keys = project(keys, w_key, b_key)
    masked, mask_arg, mask_strides = mask_operand(mask, (B, Lq, Lk), projected_query)
    weights_arg = weights if need_weights else context
    hidden_block, warps = hidden_block_and_warps(value_block(value_dim))
    additive_forward_kernel[(ceil_div(Lq, BLOCK_M), B)](
        projected_query, projected_keys, v.float().contiguous(), values, mask_arg, context, stats, weights_arg,
        Lq, Lk, hidden, value_dim,
        values.stride(), mask_strides, context.stride(), weights_arg.stride(),
        MASKED=masked, NEED_WEIGHTS=need_weights,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=hidden_block, BLOCK_DV=value_block(value_dim), num_warps=warps,
    )
    return context, stats, weights
