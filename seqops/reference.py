"""The math of every seqops op written out in plain eager PyTorch: the ground truth.

Tests run these in float64 on the CPU as the oracle; the `reference` backend runs them in
the caller's dtype (reduced precision computed in fp32, as torch does); the benchmarks
use them as the naive baseline (attention here materialises the full score matrix).
"""
from __future__ import annotations

from typing import Optional

import torch

from seqops.masks import causal_keep


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def softmax(
    input: torch.Tensor,
    dim: int,
    dtype: Optional[torch.dtype] = None,
    *,
    scale: float = 1.0,
    mask: Optional[torch.Tensor] = None,
    causal: bool = False,
) -> torch.Tensor:
    """exp(z - max z) / sum exp(z - max z) along `dim`, z = scale * input with masked
    entries (mask False, or key j > query i of the last two dims when causal) at -inf."""
    out_dtype = dtype or input.dtype
    z = input.to(dtype or input.dtype).to(_compute_dtype(out_dtype)) * scale
    if mask is not None:
        z = z.masked_fill(~mask, float("-inf"))
    if causal:
        z = z.masked_fill(~causal_keep(z.shape[-2], z.shape[-1], z.device), float("-inf"))
    if z.numel() == 0:
        return z.to(out_dtype)
    e = torch.exp(z - z.amax(dim, keepdim=True))
    return (e / e.sum(dim, keepdim=True)).to(out_dtype)


def scaled_dot_product_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False,
    *, dropout_keep: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """softmax(scale * q k^T + mask) v, with the full [..., L, S] score matrix in memory.

    query [..., L, E], key [..., S, E], value [..., S, Ev]; leading dims broadcast; with
    enable_gqa, dim -3 holds heads and key/value heads repeat to the query's. Both
    attn_mask (bool: True = attend; float: added) and is_causal apply when given. A row
    with every key masked gives 0 (and no gradient), as torch does. Dropout keeps
    probabilities where `dropout_keep` (bool, broadcastable to the scores) is True, or
    where torch.rand >= dropout_p when it is not given.
    """
    dtype = _compute_dtype(query.dtype)
    q, k, v = query.to(dtype), key.to(dtype), value.to(dtype)
    if enable_gqa:
        repeats = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(repeats, -3), v.repeat_interleave(repeats, -3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if is_causal:
        scores = scores.masked_fill(~causal_keep(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    row_max = scores.amax(-1, keepdim=True) if scores.shape[-1] else scores.sum(-1, keepdim=True)
    row_max = row_max.masked_fill(row_max == float("-inf"), 0.0)
    e = torch.exp(scores - row_max)
    total = e.sum(-1, keepdim=True)
    p = e / total.masked_fill(total == 0, 1.0)
    if dropout_p > 0:
        keep = torch.rand_like(p) >= dropout_p if dropout_keep is None else dropout_keep
        p = p * keep / (1 - dropout_p)
    return (p @ v).to(query.dtype)
