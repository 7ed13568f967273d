"""Additive attention in plain PyTorch, as lean as it gets without a kernel: the default on
the CPU and `auto`'s fallback. The [Lq, Lk, d] pre-activations exist one block of queries
at a time, and, under autograd, each block is recomputed in the backward instead of kept
(activation checkpointing), so memory grows as one block's, not as Lq * Lk * d."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from seqops import dispatch
from seqops.ops.additive.reference import masked_softmax

# Elements of the [block, Lk, d] pre-activations one block of queries may hold: 16 Mi
# fp32 values, 64 MiB.
BLOCK_ELEMENTS = 2**24


def _block(projected_query: Tensor, projected_keys: Tensor, values: Tensor, v: Tensor,
           mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(context, weights) of one block of queries: projected_query [B, m, d],
    projected_keys [B, Lk, d], mask broadcastable to [B, m, Lk] or None."""
    scores = torch.tanh(projected_query[:, :, None, :] + projected_keys[:, None, :, :]) @ v
    weights = masked_softmax(scores, mask)
    return weights @ values, weights


def additive_attention(query: Tensor, keys: Tensor, values: Tensor, w_query: Tensor, w_key: Tensor, v: Tensor,
                       b_query: Optional[Tensor] = None, b_key: Optional[Tensor] = None,
                       mask: Optional[Tensor] = None, need_weights: bool = False
                       ) -> tuple[Tensor, Optional[Tensor]]:
    """As reference.additive_attention (the contract's composite call), blocked over Lq;
    float16 and bfloat16 computed in float32."""
    dtype = torch.promote_types(query.dtype, torch.float32)
    projected_query = torch.nn.functional.linear(query.to(dtype), w_query.to(dtype),
                                                 None if b_query is None else b_query.to(dtype))
    projected_keys = torch.nn.functional.linear(keys.to(dtype), w_key.to(dtype),
                                                None if b_key is None else b_key.to(dtype))
    values32, v32 = values.to(dtype), v.to(dtype)
    B, Lq, Lk, hidden = query.shape[0], query.shape[1], keys.shape[1], v.shape[0]
    block = max(1, BLOCK_ELEMENTS // max(1, B * Lk * hidden))
    # Checkpointing needs saved-tensor hooks, which torch.func's transforms refuse: under
    # them (and under torch.compile) the blocks keep their activations.
    recompute = (torch.is_grad_enabled() and not torch.compiler.is_compiling()
                 and not torch._C._are_functorch_transforms_active()
                 and any(t is not None and t.requires_grad
                         for t in (query, keys, values, w_query, w_key, v, b_query, b_key)))
    contexts, weights = [], []
    for start in range(0, Lq, block) if Lq else [0]:
        rows = slice(start, start + block)
        block_mask = None if mask is None else (mask if mask.shape[1] == 1 else mask[:, rows])
        args = (projected_query[:, rows], projected_keys, values32, v32, block_mask)
        if recompute and Lq > block:
            context, weight = checkpoint(_block, *args, use_reentrant=False)
        else:
            context, weight = _block(*args)
        contexts.append(context)
        weights.append(weight)
    context = torch.cat(contexts, 1) if len(contexts) > 1 else contexts[0]
    weight = None
    if need_weights:
        weight = (torch.cat(weights, 1) if len(weights) > 1 else weights[0]).to(query.dtype)
    return context.to(query.dtype), weight


dispatch.register(dispatch.Impl("additive_attention", "torch", "composite", {"run": additive_attention},
                                priority={"cpu": 10, "cuda": 10}))
