"""Attention on torch.nn.functional.scaled_dot_product_attention: the default on the CPU
and `auto`'s fallback."""
from __future__ import annotations

from typing import Optional

import torch

from seqops import dispatch
from seqops.ops import torch_originals
from seqops.ops.masks import causal_keep


def scaled_dot_product_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False,
    causal_offset: int = 0,
) -> torch.Tensor:
    """torch's SDPA. What it does not take is rewritten into what it does: a causal mask
    with an offset, or beside attn_mask (which torch refuses), is merged into attn_mask;
    a mask of fewer than 2 dims, which torch fails on though it broadcasts, is lifted to 2."""
    if attn_mask is None and not (is_causal and causal_offset):
        return torch_originals.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p,
                                                            is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if attn_mask is not None and attn_mask.dim() < 2:
        attn_mask = attn_mask.reshape((1,) * (2 - attn_mask.dim()) + tuple(attn_mask.shape))
    if is_causal and (attn_mask is not None or causal_offset != 0):
        keep = causal_keep(query.shape[-2], key.shape[-2], query.device, causal_offset)
        if attn_mask is None:
            attn_mask = keep
        else:
            attn_mask = attn_mask & keep if attn_mask.dtype == torch.bool else attn_mask.masked_fill(~keep, float("-inf"))
        is_causal = False
    return torch_originals.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                                        is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


dispatch.register(dispatch.Impl("attention", "torch", "composite", {"run": scaled_dot_product_attention},
                                priority={"cpu": 10, "cuda": 10}))
