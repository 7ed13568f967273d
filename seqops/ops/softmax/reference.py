"""softmax written out in eager PyTorch: the float64 oracle of the tests, the naive
baseline of the benchmarks, and the `reference` backend (in the caller's dtype, reduced
precision computed in fp32 as torch does)."""
from __future__ import annotations

from typing import Optional

import torch

from seqops import dispatch
from seqops.ops.masks import causal_keep


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
    z = input.to(out_dtype).to(torch.promote_types(out_dtype, torch.float32)) * scale
    if mask is not None:
        z = z.masked_fill(~mask, float("-inf"))
    if causal:
        z = z.masked_fill(~causal_keep(z.shape[-2], z.shape[-1], z.device), float("-inf"))
    if z.numel() == 0:
        return z.to(out_dtype)
    e = torch.exp(z - z.amax(dim, keepdim=True))
    return (e / e.sum(dim, keepdim=True)).to(out_dtype)


dispatch.register(dispatch.Impl("softmax", "reference", "composite", {"run": softmax}))
