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
