"""The `torch` backend: each seqops op expressed with PyTorch's own operators, fused where
PyTorch has a fused one. The default on the CPU, and the fallback of `auto` elsewhere."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from seqops.masks import causal_keep


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
        return torch.softmax(input, dim, dtype=dtype)
    z = input if dtype is None else input.to(dtype)
    if scale != 1.0:
        z = z * scale
    if mask is not None:
        z = z.masked_fill(~mask, float("-inf"))
    if causal:
        z = z.masked_fill(~causal_keep(z.shape[-2], z.shape[-1], z.device), float("-inf"))
    return torch.softmax(z, dim)


def scaled_dot_product_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False,
) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention. Given both a mask and is_causal,
    which torch refuses, the causal mask is merged into attn_mask (seqops applies both);
    a mask of fewer than 2 dims, which torch fails on though it broadcasts, is lifted to 2."""
    if attn_mask is not None and attn_mask.dim() < 2:
        attn_mask = attn_mask.reshape((1,) * (2 - attn_mask.dim()) + tuple(attn_mask.shape))
    if attn_mask is not None and is_causal:
        keep = causal_keep(query.shape[-2], key.shape[-2], query.device)
        attn_mask = attn_mask & keep if attn_mask.dtype == torch.bool else attn_mask.masked_fill(~keep, float("-inf"))
        is_causal = False
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                          is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


def lstm_cell(
    input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor], w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.lstm_cell (its pointwise part fused, the GEMMs apart)."""
    return torch.lstm_cell(input, hx, w_ih, w_hh, b_ih, b_hh)


def lstm(
    input: torch.Tensor, batch_sizes: Optional[torch.Tensor], hx: tuple[torch.Tensor, torch.Tensor],
    weights: list[torch.Tensor], has_biases: bool, num_layers: int, dropout: float, training: bool,
    bidirectional: bool, proj_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch's own LSTM (cuDNN on a GPU), through the entry point torch.nn.LSTM calls;
    time-major input or packed data, as seqops.reference.lstm."""
    if batch_sizes is None:
        output, h_n, c_n = torch._VF.lstm(input, hx, weights, has_biases, num_layers, dropout, training,
                                          bidirectional, False)
    else:
        output, h_n, c_n = torch._VF.lstm(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training,
                                          bidirectional)
    return output, h_n, c_n
