"""Additive attention written out in eager PyTorch, the [B, Lq, Lk, d] pre-activations in
memory, as every seq2seq tutorial computes it: the float64 oracle of the tests, the
O(Lq * Lk * d) baseline of the benchmarks, and the `reference` backend (in the caller's
dtype; float16 and bfloat16 computed in float32)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops import dispatch


def masked_softmax(scores: Tensor, mask: Optional[Tensor]) -> Tensor:
    """softmax over the last dim with masked entries (mask False) at 0; a row with every
    entry masked (or no entry) is all 0, not NaN, and passes no gradient."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    row_max = scores.amax(-1, keepdim=True) if scores.shape[-1] else scores.sum(-1, keepdim=True)
    row_max = row_max.masked_fill(row_max == float("-inf"), 0.0)
    e = torch.exp(scores - row_max.detach())
    total = e.sum(-1, keepdim=True)
    return e / total.masked_fill(total == 0, 1.0)


def additive_attention(query: Tensor, keys: Tensor, values: Tensor, w_query: Tensor, w_key: Tensor, v: Tensor,
                       b_query: Optional[Tensor] = None, b_key: Optional[Tensor] = None,
                       mask: Optional[Tensor] = None, need_weights: bool = False
                       ) -> tuple[Tensor, Optional[Tensor]]:
    """context_i = sum_j softmax_j(v . tanh(W_q q_i + b_q + W_k k_j + b_k)) values_j.

    query [B, Lq, Dq], keys [B, Lk, Dk], values [B, Lk, Dv], w_query [d, Dq], w_key
    [d, Dk], v [d], biases [d] or None; mask bool broadcastable to [B, Lq, Lk] (3-D, as
    the contract leaves it). Returns (context [B, Lq, Dv], weights [B, Lq, Lk] or None).
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    projected_query = torch.nn.functional.linear(query.to(dtype), w_query.to(dtype),
                                                 None if b_query is None else b_query.to(dtype))
    projected_keys = torch.nn.functional.linear(keys.to(dtype), w_key.to(dtype),
                                                None if b_key is None else b_key.to(dtype))
    hidden = torch.tanh(projected_query[:, :, None, :] + projected_keys[:, None, :, :])  # [B, Lq, Lk, d]
    weights = masked_softmax(hidden @ v.to(dtype), mask)
    context = (weights @ values.to(dtype)).to(query.dtype)
    return context, (weights.to(query.dtype) if need_weights else None)


dispatch.register(dispatch.Impl("additive_attention", "reference", "composite", {"run": additive_attention}))
