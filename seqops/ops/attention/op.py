"""Attention as torch.library ops over a fused implementation (fake kernels for tracing,
autograd for torch.compile), the differentiable entry point eager calls take (reverse and
forward mode, torch.func), and the mapping of torch's call shapes onto the 4-D operands
the fused contract takes."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from seqops import dispatch
from seqops.ops.attention import contract
from seqops.ops.autograd import differentiable, register_vmap_by_loop, to_front, without_double_backward
from seqops.ops.masks import causal_keep


@torch.library.custom_op("seqops::attention_forward", mutates_args=())
def attention_forward(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor],
    dropout_p: float, is_causal: bool, causal_offset: int, scale: float, impl: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """query [B, Hq, L, E], key [B, Hkv, S, E], value [B, Hkv, S, Ev] (Hkv divides Hq);
    attn_mask None or 4-D, bool or float, broadcastable to [B, Hq, L, S].
    Returns out [B, Hq, L, Ev], lse [B, Hq, L] (contract.lse_dtype, the rows' logsumexp) and the
    dropout seed (int64 scalar on the CPU), drawn from torch's default generator."""
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) if dropout_p > 0 else 0
    out, lse = dispatch.implementation(impl).forward(query, key, value, attn_mask, dropout_p, is_causal,
                                                     causal_offset, scale, seed)
    return out, lse, torch.tensor(seed, dtype=torch.int64)


@attention_forward.register_fake
def _attention_forward_fake(query, key, value, attn_mask, dropout_p, is_causal, causal_offset, scale, impl):
    B, Hq, L, _ = query.shape
    out = query.new_empty(B, Hq, L, value.shape[-1])
    lse = query.new_empty(B, Hq, L, dtype=contract.lse_dtype(query.dtype))
    return out, lse, torch.empty((), dtype=torch.int64)


@torch.library.custom_op("seqops::attention_backward", mutates_args=())
def attention_backward(
    grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor, seed: Tensor,
    attn_mask: Optional[Tensor], dropout_p: float, is_causal: bool, causal_offset: int, scale: float,
    mask_needs_grad: bool, impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of attention_forward w.r.t. query, key, value and (a float attn_mask,
    when mask_needs_grad) the mask, in its own shape; else an empty tensor."""
    dq, dk, dv, dmask = dispatch.implementation(impl).backward(
        grad_out, query, key, value, out, lse, attn_mask, dropout_p, is_causal, causal_offset, scale,
        int(seed.item()), mask_needs_grad,
    )
    return dq, dk, dv, (dmask if dmask is not None else query.new_empty(0))


@attention_backward.register_fake
def _attention_backward_fake(grad_out, query, key, value, out, lse, seed, attn_mask, dropout_p, is_causal,
                             causal_offset, scale, mask_needs_grad, impl):
    dmask = attn_mask.new_empty(attn_mask.shape) if mask_needs_grad else query.new_empty(0)
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape), dmask


def _setup_context(ctx, inputs, output):
    query, key, value, attn_mask, dropout_p, is_causal, causal_offset, scale, impl = inputs
    out, lse, seed = output
    ctx.save_for_backward(query, key, value, out, lse, seed, attn_mask)
    ctx.save_for_forward(query, key, value, out, lse, seed, attn_mask)
    ctx.mark_non_differentiable(lse, seed)  # lse is saved for the backward, not returned to users
    ctx.set_materialize_grads(False)
    ctx.dropout_p, ctx.is_causal, ctx.causal_offset, ctx.scale, ctx.impl = (dropout_p, is_causal, causal_offset,
                                                                            scale, impl)


def _backward(ctx, grad_out, grad_lse, grad_seed):
    query, key, value, out, lse, seed, attn_mask = ctx.saved_tensors
    mask_needs_grad = bool(ctx.needs_input_grad[3])
    if grad_out is None:
        return None, None, None, None, None, None, None, None, None
    dq, dk, dv, dmask = differentiable_backward(
        grad_out, query, key, value, out, lse, seed, attn_mask, ctx.dropout_p, ctx.is_causal, ctx.causal_offset,
        ctx.scale, mask_needs_grad, ctx.impl,
    )
    return dq, dk, dv, (dmask if mask_needs_grad else None), None, None, None, None, None


def _jvp(ctx, t_query, t_key, t_value, t_mask, *_):
    """Tangent of the output: with P the probabilities and dS the tangent of the scores,
    dO = (P * (dS - rowsum(P * dS))) V + P dV. Computed in fp32 with the L x S matrices
    in memory (forward mode is for small, analytic uses; the fused kernels do reverse)."""
    query, key, value, out, lse, seed, attn_mask = ctx.saved_tensors
    if ctx.dropout_p > 0:
        raise RuntimeError("seqops.scaled_dot_product_attention: forward-mode AD with dropout_p > 0 is not "
                           "implemented (dropout's mask lives in the kernel); use reverse mode, or dropout_p=0")
    groups = query.shape[1] // key.shape[1]
    q, k, v = query.float(), key.float().repeat_interleave(groups, 1), value.float().repeat_interleave(groups, 1)
    scores = q @ k.transpose(-2, -1) * ctx.scale
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    if ctx.is_causal:
        scores = scores.masked_fill(~causal_keep(q.shape[-2], k.shape[-2], q.device, ctx.causal_offset), float("-inf"))
    seen = lse != float("-inf")
    # scores - lse in lse's dtype (float64 for fp32 inputs: contract.lse_dtype), then fp32
    p = torch.where(seen[..., None], torch.exp((scores - lse.masked_fill(~seen, 0.0)[..., None]).float()), 0.0)
    d_scores = torch.zeros_like(p)
    if t_query is not None:
        d_scores = d_scores + t_query.float() @ k.transpose(-2, -1) * ctx.scale
    if t_key is not None:
        d_scores = d_scores + q @ t_key.float().repeat_interleave(groups, 1).transpose(-2, -1) * ctx.scale
    if t_mask is not None:
        d_scores = d_scores + t_mask.float()
    d_scores = d_scores.masked_fill(p == 0, 0.0)  # unseen keys: their infinite scores have no tangent
    t_out = (p * (d_scores - (p * d_scores).sum(-1, keepdim=True))) @ v
    if t_value is not None:
        t_out = t_out + p @ t_value.float().repeat_interleave(groups, 1)
    return t_out.to(out.dtype), None, None


attention_forward.register_autograd(_backward, setup_context=_setup_context)
differentiable_forward = differentiable("seqops.attention_forward", attention_forward, _setup_context, _backward, _jvp)
differentiable_backward = without_double_backward("seqops.attention_backward", attention_backward)


def _forward_vmap(info, in_dims, query, key, value, attn_mask, dropout_p, is_causal, causal_offset, scale, impl):
    """torch.vmap of the forward: the vmapped dim folded into the batch dim, one launch."""
    n = info.batch_size
    q, k, v = (to_front(t, d, n) for t, d in zip((query, key, value), in_dims))
    batch = q.shape[1]
    fold = lambda t: t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])
    if attn_mask is not None and (in_dims[3] is not None or attn_mask.shape[0] != 1):
        mask = to_front(attn_mask, in_dims[3], n)
        attn_mask = fold(mask.expand(n, batch, *mask.shape[2:]))
    out, lse, seed = attention_forward(fold(q), fold(k), fold(v), attn_mask, dropout_p, is_causal, causal_offset,
                                       scale, impl)
    return (out.unflatten(0, (n, batch)), lse.unflatten(0, (n, batch)), seed), (0, 0, None)


torch.library.register_vmap(attention_forward, _forward_vmap)
register_vmap_by_loop(attention_backward)


def _mask_4d(attn_mask: Tensor, lead: tuple, batch: int) -> Tensor:
    """attn_mask (broadcastable to [*lead, L, S], lead non-empty, its last dim the heads)
    as 4-D [Bm, Hm, Lm, Sm], each dim either full or 1, so that the kernels read it in
    place and reduce its gradient themselves."""
    mask = attn_mask.reshape((1,) * (len(lead) + 2 - attn_mask.dim()) + tuple(attn_mask.shape))
    rest, mask_rest, tail = tuple(lead[:-1]), tuple(mask.shape[:-3]), tuple(mask.shape[-3:])
    if all(d == 1 for d in mask_rest):
        return mask.reshape(1, *tail)
    if mask_rest != rest:
        mask = mask.expand(*rest, *tail)
    return mask.reshape(batch, *tail)


def run_fused(impl: dispatch.Impl, query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor],
              dropout_p: float, is_causal: bool, scale: float, enable_gqa: bool, causal_offset: int) -> Tensor:
    """torch's SDPA call on a fused implementation: leading dims broadcast (as stride-0
    views, whose gradients autograd sums), then flattened to [batch, heads]."""
    L, E = query.shape[-2:]
    S, Ev = key.shape[-2], value.shape[-1]
    head_dims = 1 if enable_gqa else 0
    lead = torch.broadcast_shapes(*(t.shape[:t.dim() - 2 - head_dims] for t in (query, key, value)))
    if enable_gqa:
        q_lead, kv_lead = (*lead, query.shape[-3]), (*lead, key.shape[-3])
    else:
        q_lead = kv_lead = tuple(lead)
    heads_q = q_lead[-1] if q_lead else 1
    heads_kv = kv_lead[-1] if kv_lead else 1
    batch = math.prod(q_lead[:-1]) if q_lead else 1
    q = query.expand(*q_lead, L, E).reshape(batch, heads_q, L, E)
    k = key.expand(*kv_lead, S, E).reshape(batch, heads_kv, S, E)
    v = value.expand(*kv_lead, S, Ev).reshape(batch, heads_kv, S, Ev)
    mask = None if attn_mask is None else _mask_4d(attn_mask, q_lead or (1,), batch)
    out, _, _ = differentiable_forward(q, k, v, mask, dropout_p, is_causal, causal_offset, scale, impl.key)
    return out.reshape(*q_lead, L, Ev)
