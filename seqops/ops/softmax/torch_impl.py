"""softmax on PyTorch's own operators: the default on the CPU and `auto`'s fallback."""
from __future__ import annotations

from typing import Optional

import torch

from seqops import dispatch
from seqops.ops import torch_originals
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
    """torch.softmax, with the scale and masks applied to its input first."""
    if scale == 1.0 and mask is None and not causal:
        return torch_originals.softmax(input, dim, dtype=dtype)
    z = input if dtype is None else input.to(dtype)
    if scale != 1.0:
        z = z * scale
    if mask is not None:
        z = z.masked_fill(~mask, float("-inf"))
    if causal:
        z = z.masked_fill(~causal_keep(z.shape[-2], z.shape[-1], z.device), float("-inf"))
    return torch_originals.softmax(z, dim)


dispatch.register(dispatch.Impl("softmax", "torch", "composite", {"run": softmax}, priority={"cpu": 10, "cuda": 10}))
