"""Additive attention as torch.library ops over a fused implementation (fake kernels for
tracing, autograd for torch.compile, a loop for torch.vmap) and the differentiable entry
point eager calls take (reverse mode and torch.func; forward mode raises clearly)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops import dispatch
from seqops.ops.autograd import differentiable, register_vmap_by_loop, without_double_backward


@torch.library.custom_op("seqops::additive_attention_forward", mutates_args=())
def additive_attention_forward(
    query: Tensor, keys: Tensor, values: Tensor, w_query: Tensor, w_key: Tensor, v: Tensor,
    b_query: Optional[Tensor], b_key: Optional[Tensor], mask: Optional[Tensor], need_weights: bool, impl: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """The contract's fused forward (contract.py): returns context [B, Lq, Dv], stats
    [B, Lq, 2] fp32, and weights [B, Lq, Lk] when need_weights, else an empty tensor."""
    context, stats, weights = dispatch.implementation(impl).forward(query, keys, values, w_query, w_key, v, b_query,
                                                                  b_key, mask, need_weights)
    return context, stats, (weights if weights is not None else query.new_empty(0))


@additive_attention_forward.register_fake
def _forward_fake(query, keys, values, w_query, w_key, v, b_query, b_key, mask, need_weights, impl):
    B, Lq, Lk = query.shape[0], query.shape[1], keys.shape[1]
    weights = query.new_empty(B, Lq, Lk) if need_weights else query.new_empty(0)
    return query.new_empty(B, Lq, values.shape[2]), query.new_empty(B, Lq, 2, dtype=torch.float32), weights


@torch.library.custom_op("seqops::additive_attention_backward", mutates_args=())
def additive_attention_backward(
    grad_context: Optional[Tensor], grad_weights: Optional[Tensor], query: Tensor, keys: Tensor, values: Tensor,
    w_query: Tensor, w_key: Tensor, v: Tensor, b_query: Optional[Tensor], b_key: Optional[Tensor],
    mask: Optional[Tensor], context: Tensor, stats: Tensor, weights: Optional[Tensor], impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients w.r.t. query, keys, values, w_query, w_key, v, b_query, b_key (an empty
    tensor for an absent bias)."""
    grads = dispatch.implementation(impl).backward(grad_context, grad_weights, query, keys, values, w_query, w_key,
                                                   v, b_query, b_key, mask, context, stats, weights)
    return tuple(g if g is not None else query.new_empty(0) for g in grads)


@additive_attention_backward.register_fake
def _backward_fake(grad_context, grad_weights, query, keys, values, w_query, w_key, v, b_query, b_key, mask,
                   context, stats, weights, impl):
    return tuple(t.new_empty(t.shape) if t is not None else query.new_empty(0)
                 for t in (query, keys, values, w_query, w_key, v, b_query, b_key))


def _setup_context(ctx, inputs, output):
    query, keys, values, w_query, w_key, v, b_query, b_key, mask, need_weights, impl = inputs
    context, stats, weights = output
    ctx.save_for_backward(query, keys, values, w_query, w_key, v, b_query, b_key, mask, context, stats,
                          weights if need_weights else None)
    ctx.mark_non_differentiable(*((stats,) if need_weights else (stats, weights)))
    ctx.set_materialize_grads(False)
    ctx.impl = impl


def _backward(ctx, grad_context, grad_stats, grad_weights):
    query, keys, values, w_query, w_key, v, b_query, b_key, mask, context, stats, weights = ctx.saved_tensors
    if grad_context is None and (grad_weights is None or weights is None):
        return (None,) * 11
    grads = differentiable_backward(grad_context, grad_weights if weights is not None else None, query, keys,
                                    values, w_query, w_key, v, b_query, b_key, mask, context, stats, weights, ctx.impl)
    present = (query, keys, values, w_query, w_key, v, b_query, b_key)
    return tuple(g if t is not None else None for g, t in zip(grads, present)) + (None, None, None)


additive_attention_forward.register_autograd(_backward, setup_context=_setup_context)
# No jvp: forward mode through the fused kernels raises a clear error (seqops.ops.autograd);
# seqops.backend("torch") differentiates in both modes.
differentiable_forward = differentiable("seqops.additive_attention_forward", additive_attention_forward,
                                        _setup_context, _backward)
differentiable_backward = without_double_backward("seqops.additive_attention_backward", additive_attention_backward)
# Per-sample weights (vmap over w_query, say) have no one-launch form: torch.vmap loops.
register_vmap_by_loop(additive_attention_forward)
register_vmap_by_loop(additive_attention_backward)


def run_fused(impl: dispatch.Impl, query: Tensor, keys: Tensor, values: Tensor, w_query: Tensor, w_key: Tensor,
              v: Tensor, b_query: Optional[Tensor], b_key: Optional[Tensor], mask: Optional[Tensor],
              need_weights: bool) -> tuple[Tensor, Optional[Tensor]]:
    """The checked call on a fused implementation, through the differentiable op."""
    context, _, weights = differentiable_forward(query, keys, values, w_query, w_key, v, b_query, b_key, mask,
                                                 need_weights, impl.key)
    return context, (weights if need_weights else None)
