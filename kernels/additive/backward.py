"""The additive attention backward, recomputing the scores tile by tile from the saved
row statistics (max and sum). With P the probabilities, dO the context's gradient and G
the weights', dP_ij = dO_i . values_j + G_ij:
    delta_i = sum_j P_ij dP_ij,  dS_ij = P_ij (dP_ij - delta_i)
    d values_j = sum_i P_ij dO_i
and through the tanh, t_ijd = tanh(qp_id + kp_jd):
    d qp_id = v_d sum_j dS_ij (1 - t_ijd^2),  d kp_jd = v_d sum_i dS_ij (1 - t_ijd^2),
    d v_d = sum_ij dS_ij t_ijd.
delta is summed in the kernel from the recomputed P, not taken as dO . context: the
saved context and weights are rounded to the inputs' dtype, and an error in delta is the
same for every key of a row, so it does not cancel in d qp (whose exact terms sum to
about 0 over the keys, as dS's do); in fp16 it made d query several times less accurate
than the formulation in fp32. That costs one more pass over the scores.
One kernel per block of queries (delta, d qp and d v), one per block of keys (d kp and
d values), launched after it,
so that every program owns the rows it writes (no atomics: the result is the same every
run). The projections' gradients (weights, biases, inputs) are GEMMs in the launcher."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import cast_rounded, ceil_div, dot
from .common import (load_operand, load_row_stats, load_tile, mask_operand, pre_activation_chunk, probabilities, project, score_tile, value_block,
                     visible)
from .tiles import BLOCK_M, BLOCK_N, QUERY_VALUE_CHUNK, hidden_block_and_warps, key_backward_warps


@triton.jit
def probability_gradient_tile(qp_base, kp_base, v_ptr, values_base, mask_base, grad_context, grad_context_base,
                              grad_weights_base, row_max, row_sum, offs_m, offs_n, offs_dv, Lq, Lk, hidden,
                              value_dim, values_strides, mask_strides, grad_context_strides, grad_weights_strides,
                        MASKED: tl.constexpr, GRAD_CONTEXT: tl.constexpr, GRAD_WEIGHTS: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_DV: tl.constexpr, CHUNK_DV: tl.constexpr):
    """(P, dP) for one [BLOCK_M, BLOCK_N] tile: the recomputed probabilities and the
    gradient w.r.t. them. grad_context: the rows' context gradient [BLOCK_M, BLOCK_DV]
    (the values' dtype), loaded by the caller, when CHUNK_DV == BLOCK_DV; narrower,
    dO . values is summed CHUNK_DV value columns at a time, each chunk of dO read here
    (from grad_context_base) so that neither it nor the values tile lives whole. dO and
    the values meet in their own dtype (16-bit on tensor cores; exact products either
    way, accumulated in fp32)."""
    s = score_tile(qp_base, kp_base, v_ptr, offs_m, offs_n, Lq, Lk, hidden, BLOCK_M, BLOCK_N, BLOCK_D)
    keep = visible(mask_base, offs_m, offs_n, Lq, Lk, mask_strides, MASKED)
    p = probabilities(s, keep, row_max, row_sum)
    dp = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if GRAD_CONTEXT:
        if CHUNK_DV == BLOCK_DV:
            values = load_operand(values_base, offs_n, offs_dv, values_strides[1], values_strides[2], Lk, value_dim)
            dp += dot(grad_context, tl.trans(values))
        else:
            for start_dv in range(0, value_dim, CHUNK_DV):
                offs_c = start_dv + tl.arange(0, CHUNK_DV).to(tl.int64)
                grad_context_chunk = load_operand(grad_context_base, offs_m, offs_c, grad_context_strides[1],
                                                  grad_context_strides[2], Lq, value_dim)
                values = load_operand(values_base, offs_n, offs_c, values_strides[1], values_strides[2], Lk,
                                      value_dim)
                dp += dot(grad_context_chunk, tl.trans(values))
    if GRAD_WEIGHTS:
        dp += load_tile(grad_weights_base, offs_m, offs_n, grad_weights_strides[1], grad_weights_strides[2], Lq, Lk)
    return p, dp


@triton.jit
def load_grad_context(grad_context_base, offs_m, offs_dv, grad_context_strides, Lq, value_dim,
                      GRAD_CONTEXT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr):
    """The rows' context gradient [BLOCK_M, BLOCK_DV] in its dtype (zeros when none
    reached it)."""
    if GRAD_CONTEXT:
        return load_operand(grad_context_base, offs_m, offs_dv, grad_context_strides[1], grad_context_strides[2], Lq,
                            value_dim)
    return tl.zeros([BLOCK_M, BLOCK_DV], grad_context_base.dtype.element_ty)


@triton.jit
def additive_backward_query_kernel(
    qp_ptr, kp_ptr, v_ptr, values_ptr, mask_ptr, grad_context_ptr, grad_weights_ptr, stats_ptr, delta_ptr,
    grad_qp_ptr, grad_v_partial_ptr,
    Lq, Lk, hidden, value_dim,
    values_strides, mask_strides, grad_context_strides, grad_weights_strides,
    MASKED: tl.constexpr, GRAD_CONTEXT: tl.constexpr, GRAD_WEIGHTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CHUNK_DV: tl.constexpr,
):
    """For BLOCK_M queries of one batch entry: delta [B, Lq] (written for the key kernel),
    d qp [B, Lq, d] (zeros on entry), and this program's share of d v, into row
    (batch * query blocks + block) of grad_v_partial. CHUNK_DV: as probability_gradient_tile's
    (the rows' context gradient is loaded once, whole, only when it equals BLOCK_DV)."""
    b = tl.program_id(1).to(tl.int64)
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV).to(tl.int64)
    qp_base = qp_ptr + b * Lq * hidden
    kp_base = kp_ptr + b * Lk * hidden
    row_max, row_sum = load_row_stats(stats_ptr, b, offs_m, Lq)
    values_base = values_ptr + b * values_strides[0]
    mask_base = mask_ptr + b * mask_strides[0]
    grad_context_base = grad_context_ptr + b * grad_context_strides[0]
    grad_context = load_grad_context(grad_context_base, offs_m, offs_dv, grad_context_strides, Lq, value_dim,
                                     GRAD_CONTEXT and CHUNK_DV == BLOCK_DV, BLOCK_M, BLOCK_DV)
    grad_weights_base = grad_weights_ptr + b * grad_weights_strides[0]
    delta = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        p, dp = probability_gradient_tile(
            qp_base, kp_base, v_ptr, values_base, mask_base, grad_context, grad_context_base, grad_weights_base,
            row_max, row_sum, offs_m, offs_n, offs_dv, Lq, Lk, hidden, value_dim,
            values_strides, mask_strides, grad_context_strides, grad_weights_strides,
            MASKED, GRAD_CONTEXT, GRAD_WEIGHTS, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, CHUNK_DV)
        delta += tl.sum(p * dp, axis=1)
    tl.store(delta_ptr + b * Lq + offs_m, delta, mask=offs_m < Lq)

    grad_v_row = grad_v_partial_ptr + (b * tl.num_programs(0) + tl.program_id(0)) * hidden
    for start_n in range(0, Lk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        p, dp = probability_gradient_tile(
            qp_base, kp_base, v_ptr, values_base, mask_base, grad_context, grad_context_base, grad_weights_base,
            row_max, row_sum, offs_m, offs_n, offs_dv, Lq, Lk, hidden, value_dim,
            values_strides, mask_strides, grad_context_strides, grad_weights_strides,
            MASKED, GRAD_CONTEXT, GRAD_WEIGHTS, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, CHUNK_DV)
        ds = p * (dp - delta[:, None])
        for start_d in range(0, hidden, BLOCK_D):
            t, v, offs_d = pre_activation_chunk(qp_base, kp_base, v_ptr, offs_m, offs_n, start_d, Lq, Lk, hidden,
                                                BLOCK_D)
            inside = (offs_m < Lq)[:, None] & (offs_d < hidden)[None, :]
            grad_qp_pointers = grad_qp_ptr + b * Lq * hidden + offs_m[:, None] * hidden + offs_d[None, :]
            grad_qp = tl.sum(ds[:, :, None] * (1.0 - t * t), axis=1) * v[None, :]
            tl.store(grad_qp_pointers, tl.load(grad_qp_pointers, mask=inside, other=0.0) + grad_qp, mask=inside)
            grad_v = tl.sum(tl.sum(ds[:, :, None] * t, axis=1), axis=0)
            grad_v_pointers = grad_v_row + offs_d
            tl.store(grad_v_pointers, tl.load(grad_v_pointers, mask=offs_d < hidden, other=0.0) + grad_v,
                     mask=offs_d < hidden)


@triton.jit
def additive_backward_key_kernel(
    qp_ptr, kp_ptr, v_ptr, values_ptr, mask_ptr, grad_context_ptr, grad_weights_ptr, stats_ptr, delta_ptr,
    grad_kp_ptr, grad_values_ptr,
    Lq, Lk, hidden, value_dim,
    values_strides, mask_strides, grad_context_strides, grad_weights_strides, grad_values_strides,
    MASKED: tl.constexpr, GRAD_CONTEXT: tl.constexpr, GRAD_WEIGHTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """d kp [B, Lk, d] (zeros on entry) and d values for BLOCK_N keys of one batch entry."""
    b = tl.program_id(1).to(tl.int64)
    offs_n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_dv = tl.arange(0, BLOCK_DV).to(tl.int64)
    qp_base = qp_ptr + b * Lq * hidden
    kp_base = kp_ptr + b * Lk * hidden
    grad_values = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start_m in range(0, Lq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M).to(tl.int64)
        row_max, row_sum = load_row_stats(stats_ptr, b, offs_m, Lq)
        delta = tl.load(delta_ptr + b * Lq + offs_m, mask=offs_m < Lq, other=0.0)
        grad_context = load_grad_context(grad_context_ptr + b * grad_context_strides[0], offs_m, offs_dv,
                                         grad_context_strides, Lq, value_dim, GRAD_CONTEXT, BLOCK_M, BLOCK_DV)
        p, dp = probability_gradient_tile(
            qp_base, kp_base, v_ptr, values_ptr + b * values_strides[0], mask_ptr + b * mask_strides[0],
            grad_context, grad_context_ptr + b * grad_context_strides[0], grad_weights_ptr + b * grad_weights_strides[0],
            row_max, row_sum, offs_m, offs_n, offs_dv, Lq, Lk, hidden, value_dim,
            values_strides, mask_strides, grad_context_strides, grad_weights_strides,
            MASKED, GRAD_CONTEXT, GRAD_WEIGHTS, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, BLOCK_DV)
        ds = p * (dp - delta[:, None])
        if GRAD_CONTEXT:
            # P rounded to dO's dtype, as torch's weights are (16-bit tiles on tensor cores).
            grad_values += dot(tl.trans(cast_rounded(p, grad_context.dtype)), grad_context)
        for start_d in range(0, hidden, BLOCK_D):
            t, v, offs_d = pre_activation_chunk(qp_base, kp_base, v_ptr, offs_m, offs_n, start_d, Lq, Lk, hidden,
                                                BLOCK_D)
            inside = (offs_n < Lk)[:, None] & (offs_d < hidden)[None, :]
            grad_kp_pointers = grad_kp_ptr + b * Lk * hidden + offs_n[:, None] * hidden + offs_d[None, :]
            grad_kp = tl.sum(ds[:, :, None] * (1.0 - t * t), axis=0) * v[None, :]
            tl.store(grad_kp_pointers, tl.load(grad_kp_pointers, mask=inside, other=0.0) + grad_kp, mask=inside)
    grad_values_pointers = (grad_values_ptr + b * grad_values_strides[0] + offs_n[:, None] * grad_values_strides[1]
                            + offs_dv[None, :] * grad_values_strides[2])
    tl.store(grad_values_pointers, cast_rounded(grad_values, grad_values_ptr.dtype.element_ty),
             mask=(offs_n < Lk)[:, None] & (offs_dv < value_dim)[None, :])


def _projection_grads(grad_projected: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor]):
    """Gradients of projected = inputs weight^T + bias w.r.t. inputs, weight and bias (None
    without one), from grad_projected [B, L, d] fp32: GEMMs, in the operands' dtypes."""
    rows = grad_projected.shape[0] * grad_projected.shape[1]  # not -1: a size may be 0
    flat_grad = grad_projected.reshape(rows, grad_projected.shape[-1])
    grad_inputs = (grad_projected @ weight.float()).to(inputs.dtype)
    grad_weight = (flat_grad.t() @ inputs.reshape(rows, inputs.shape[-1]).float()).to(weight.dtype)
    grad_bias = None if bias is None else flat_grad.sum(0).to(bias.dtype)
    return grad_inputs, grad_weight, grad_bias


def additive_attention_backward(
    grad_context: Optional[torch.Tensor], grad_weights: Optional[torch.Tensor], query: torch.Tensor,
    keys: torch.Tensor, values: torch.Tensor, w_query: torch.Tensor, w_key: torch.Tensor, v: torch.Tensor,
    b_query: Optional[torch.Tensor], b_key: Optional[torch.Tensor], mask: Optional[torch.Tensor],
    context: torch.Tensor, stats: torch.Tensor, weights: Optional[torch.Tensor],
) -> tuple:
    """Gradients of the fused forward w.r.t. query, keys, values, w_query, w_key, v,
    b_query, b_key (None for an absent bias), in the inputs' shapes and dtypes.
    grad_context [B, Lq, Dv] and grad_weights [B, Lq, Lk] (with `weights`, the forward's)
    may each be None; stats [B, Lq, 2] is the forward's."""
    B, Lq, Lk, value_dim, hidden = query.shape[0], query.shape[1], keys.shape[1], values.shape[2], v.shape[0]
    projected_query = project(query, w_query, b_query)
    projected_keys = project(keys, w_key, b_key)
    grad_qp = torch.zeros_like(projected_query)
    grad_kp = torch.zeros_like(projected_keys)
    grad_values = torch.zeros(values.shape, dtype=values.dtype, device=values.device)
    query_blocks = ceil_div(Lq, BLOCK_M)
    grad_v_partial = torch.zeros(B * query_blocks, hidden, dtype=torch.float32, device=query.device)
    has_grad_context, has_grad_weights = grad_context is not None, grad_weights is not None
    if B * Lq > 0 and Lk > 0 and (has_grad_context or has_grad_weights):
        delta = torch.empty(B, Lq, dtype=torch.float32, device=query.device)  # the query kernel's
        masked, mask_arg, mask_strides = mask_operand(mask, (B, Lq, Lk), projected_query)
        hidden_block, warps = hidden_block_and_warps(value_block(value_dim))
        # dO meets the values in their dtype (the kernels' 16-bit dots).
        grad_context_arg = grad_context.to(values.dtype) if has_grad_context else context
        grad_weights_arg = grad_weights if has_grad_weights else context
        operands = (projected_query, projected_keys, v.float().contiguous(), values, mask_arg, grad_context_arg,
                    grad_weights_arg, stats, delta)
        sizes = (Lq, Lk, hidden, value_dim)
        strides = (values.stride(), mask_strides, grad_context_arg.stride(), grad_weights_arg.stride())
        flags = dict(MASKED=masked, GRAD_CONTEXT=has_grad_context, GRAD_WEIGHTS=has_grad_weights,
                     BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=hidden_block, BLOCK_DV=value_block(value_dim),
                     num_warps=warps)
        additive_backward_query_kernel[(query_blocks, B)](*operands, grad_qp, grad_v_partial, *sizes, *strides,
                                                          **flags, CHUNK_DV=min(flags["BLOCK_DV"], QUERY_VALUE_CHUNK))
        key_flags = dict(flags, num_warps=key_backward_warps(value_block(value_dim), has_grad_weights,
                                                             values.dtype == torch.float32))
        additive_backward_key_kernel[(ceil_div(Lk, BLOCK_N), B)](*operands, grad_kp, grad_values, *sizes,
                                                                    *strides, grad_values.stride(),
                                                                    **key_flags)
    grad_query, grad_w_query, grad_b_query = _projection_grads(grad_qp, query, w_query, b_query)
    grad_keys, grad_w_key, grad_b_key = _projection_grads(grad_kp, keys, w_key, b_key)
    grad_v = grad_v_partial.sum(0).to(v.dtype)
    return grad_query, grad_keys, grad_values, grad_w_query, grad_w_key, grad_v, grad_b_query, grad_b_key
