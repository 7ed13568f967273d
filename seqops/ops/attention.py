"""Scaled-dot-product attention as torch ops: the fused kernels registered with
torch.library (autograd, fake kernels), the mapping of torch's call shapes onto them, and
the table of backends that can run seqops.scaled_dot_product_attention."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from seqops import backends, reference, torch_backend

FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256  # as seqops.kernels.attention.MAX_HEAD_DIM, without importing triton
FP32_MAX_HEAD_DIM = 128  # as seqops.kernels.attention.FP32_MAX_HEAD_DIM


def _launchers(backend: str):
    """The module holding attention_forward / attention_backward of a fused backend."""
    if backend == "triton":
        from seqops.kernels import attention as triton_attention

        return triton_attention
    raise ValueError(f"seqops::attention has no fused backend {backend!r}")


@torch.library.custom_op("seqops::attention_forward", mutates_args=())
def fused_attention_forward(
    query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor],
    dropout_p: float, is_causal: bool, scale: float, backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """query [B, Hq, L, E], key [B, Hkv, S, E], value [B, Hkv, S, Ev] (Hkv divides Hq);
    attn_mask None or 4-D, bool or float, broadcastable to [B, Hq, L, S].
    Returns out [B, Hq, L, Ev], lse [B, Hq, L] (fp32, the rows' logsumexp) and the
    dropout seed (int64 scalar on the CPU), drawn from torch's default generator."""
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) if dropout_p > 0 else 0
    out, lse = _launchers(backend).attention_forward(query, key, value, attn_mask, dropout_p, is_causal, scale, seed)
    return out, lse, torch.tensor(seed, dtype=torch.int64)


@fused_attention_forward.register_fake
def _fused_attention_forward_fake(query, key, value, attn_mask, dropout_p, is_causal, scale, backend):
    B, Hq, L, _ = query.shape
    out = query.new_empty(B, Hq, L, value.shape[-1])
    lse = query.new_empty(B, Hq, L, dtype=torch.float32)
    return out, lse, torch.empty((), dtype=torch.int64)


@torch.library.custom_op("seqops::attention_backward", mutates_args=())
def fused_attention_backward(
    grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor, seed: Tensor,
    attn_mask: Optional[Tensor], dropout_p: float, is_causal: bool, scale: float, mask_needs_grad: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of fused_attention_forward w.r.t. query, key, value and (a float
    attn_mask, when mask_needs_grad) the mask, in its own shape; else an empty tensor."""
    dq, dk, dv, dmask = _launchers(backend).attention_backward(
        grad_out, query, key, value, out, lse, attn_mask, dropout_p, is_causal, scale, int(seed.item()),
        mask_needs_grad,
    )
    return dq, dk, dv, (dmask if dmask is not None else query.new_empty(0))


@fused_attention_backward.register_fake
def _fused_attention_backward_fake(grad_out, query, key, value, out, lse, seed, attn_mask, dropout_p, is_causal,
                                   scale, mask_needs_grad, backend):
    dmask = attn_mask.new_empty(attn_mask.shape) if mask_needs_grad else query.new_empty(0)
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape), dmask


def _attention_setup_context(ctx, inputs, output):
    query, key, value, attn_mask, dropout_p, is_causal, scale, backend = inputs
    out, lse, seed = output
    ctx.save_for_backward(query, key, value, out, lse, seed, attn_mask)
    ctx.dropout_p, ctx.is_causal, ctx.scale, ctx.backend = dropout_p, is_causal, scale, backend


def _attention_backward(ctx, grad_out, grad_lse, grad_seed):
    query, key, value, out, lse, seed, attn_mask = ctx.saved_tensors
    mask_needs_grad = bool(ctx.needs_input_grad[3])
    dq, dk, dv, dmask = fused_attention_backward(
        grad_out, query, key, value, out, lse, seed, attn_mask, ctx.dropout_p, ctx.is_causal, ctx.scale,
        mask_needs_grad, ctx.backend,
    )
    return dq, dk, dv, (dmask if mask_needs_grad else None), None, None, None, None


fused_attention_forward.register_autograd(_attention_backward, setup_context=_attention_setup_context)


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


def _fused(backend: str):
    def run(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor], dropout_p: float,
            is_causal: bool, scale: float, enable_gqa: bool) -> Tensor:
        """torch's SDPA call on the fused op: leading dims broadcast (as stride-0 views,
        whose gradients autograd sums), then flattened to [batch, heads]."""
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
        out, _, _ = fused_attention_forward(q, k, v, mask, dropout_p, is_causal, scale, backend)
        return out.reshape(*q_lead, L, Ev)

    return run


def _fused_supports(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor], dropout_p: float,
                    is_causal: bool, scale: float, enable_gqa: bool) -> Optional[str]:
    if query.dtype not in FUSED_DTYPES:
        return f"the fused attention takes float32, float16 and bfloat16, got {query.dtype} (float64 runs on torch)"
    head_dims = (query.shape[-1], value.shape[-1])
    if max(head_dims) > MAX_HEAD_DIM:
        return f"the fused attention takes head dims up to {MAX_HEAD_DIM}, got {head_dims[0]} and {head_dims[1]}"
    if query.dtype == torch.float32 and max(head_dims) > FP32_MAX_HEAD_DIM:
        return (f"the fused attention takes float32 head dims up to {FP32_MAX_HEAD_DIM}, got {head_dims[0]} and "
                f"{head_dims[1]} (its float32 backward spills registers above that; float16 and bfloat16 go to "
                f"{MAX_HEAD_DIM})")
    if dropout_p >= 1.0:
        return "dropout_p = 1 drops everything; the torch backend returns its zeros"
    if dropout_p > 0 and query.shape[-2] * key.shape[-2] >= 2**31:
        return "dropout's random counters are 32-bit: L * S must stay below 2**31"
    return None


ATTENTION = backends.OpBackends("scaled_dot_product_attention")
ATTENTION.register("triton", _fused("triton"), supports=_fused_supports)
ATTENTION.register("torch", torch_backend.scaled_dot_product_attention)
ATTENTION.register("reference", reference.scaled_dot_product_attention)
