"""Attention written out in eager PyTorch, the full score matrix in memory: the float64
oracle of the tests, the O(L*S) baseline of the benchmarks, and the `reference` backend
(in the caller's dtype, reduced precision computed in fp32 as torch does)."""
from __future__ import annotations

from typing import Optional

import torch

from seqops import dispatch
from seqops.ops.attention.contract import default_scale
from seqops.ops.masks import causal_keep


def scaled_dot_product_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False,
    causal_offset: int = 0, *, dropout_keep: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """softmax(scale * q k^T + mask) v, with the full [..., L, S] score matrix in memory.

    query [..., L, E], key [..., S, E], value [..., S, Ev]; leading dims broadcast; with
    enable_gqa, dim -3 holds heads and key/value heads repeat to the query's. Both
    attn_mask (bool: True = attend; float: added) and is_causal (key j <= query i +
    causal_offset) apply when given. A row with every key masked gives 0 (and no
    gradient), as torch does. Dropout keeps probabilities where `dropout_keep` (bool,
    broadcastable to the scores) is True, or where torch.rand >= dropout_p when it is not
    given; dropout_p = 1 keeps none and gives 0, as torch does.
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
    if enable_gqa:
        repeats = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(repeats, -3), v.repeat_interleave(repeats, -3)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if is_causal:
        scores = scores.masked_fill(~causal_keep(q.shape[-2], k.shape[-2], q.device, causal_offset), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    row_max = scores.amax(-1, keepdim=True) if scores.shape[-1] else scores.sum(-1, keepdim=True)
    row_max = row_max.masked_fill(row_max == float("-inf"), 0.0)
    e = torch.exp(scores - row_max)
    total = e.sum(-1, keepdim=True)
    p = e / total.masked_fill(total == 0, 1.0)
    if dropout_p >= 1.0:
        p = p * 0.0
    elif dropout_p > 0:
        keep = torch.rand_like(p) >= dropout_p if dropout_keep is None else dropout_keep
        p = p * keep / (1 - dropout_p)
    return (p @ v).to(query.dtype)


dispatch.register(dispatch.Impl("attention", "reference", "composite", {"run": scaled_dot_product_attention}))
