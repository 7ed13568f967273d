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


def lstm_cell(
    input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor], w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step, gate order i, f, g, o: input [B, I], hx = (h [B, P], c [B, H]),
    w_ih [4H, I], w_hh [4H, P]. Returns (h', c') [B, H]."""
    dtype = _compute_dtype(input.dtype)
    gates = input.to(dtype) @ w_ih.to(dtype).t() + hx[0].to(dtype) @ w_hh.to(dtype).t()
    if b_ih is not None:
        gates = gates + b_ih.to(dtype) + b_hh.to(dtype)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * hx[1].to(dtype) + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h.to(input.dtype), c.to(input.dtype)


def lstm(
    input: torch.Tensor, batch_sizes: Optional[torch.Tensor], hx: tuple[torch.Tensor, torch.Tensor],
    weights: list[torch.Tensor], has_biases: bool, num_layers: int, dropout: float, training: bool,
    bidirectional: bool, proj_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A multi-layer LSTM, one lstm_cell per step. input [T, B, I] (time-major), or the
    data [N, I] of a packed sequence with its batch_sizes [T]; hx = (h0 [L*D, B, P],
    c0 [L*D, B, H]); weights in torch's order (w_ih, w_hh, b_ih, b_hh, w_hr per layer and
    direction). Returns (output, h_n, c_n) as torch's LSTM."""
    if batch_sizes is None:
        T, B = input.shape[:2]
        data, sizes = input.reshape(T * B, input.shape[2]), [B] * T
    else:
        data, sizes = input, batch_sizes.tolist()
    offsets = [sum(sizes[:t]) for t in range(len(sizes))]
    directions = 2 if bidirectional else 1
    per_direction = 2 + 2 * has_biases + (proj_size > 0)
    h_n, c_n, layer_input = [], [], data
    for layer in range(num_layers):
        outs = []
        for direction in range(directions):
            index = layer * directions + direction
            w = weights[index * per_direction:(index + 1) * per_direction]
            b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
            h, c = hx[0][index], hx[1][index]
            steps = [None] * len(sizes)
            for t in (reversed(range(len(sizes))) if direction == 1 else range(len(sizes))):
                rows = sizes[t]
                x = layer_input[offsets[t]:offsets[t] + rows]
                h_t, c_t = lstm_cell(x, (h[:rows], c[:rows]), w[0], w[1], b_ih, b_hh)
                if proj_size > 0:
                    h_t = h_t @ w[-1].t()
                # Rows past `rows` have ended (forwards) or not started (reversed): they keep their state.
                h, c = torch.cat([h_t, h[rows:]]), torch.cat([c_t, c[rows:]])
                steps[t] = h_t
            outs.append(torch.cat(steps) if steps else layer_input.new_empty(0, h.shape[-1]))
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outs, -1) if directions == 2 else outs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = torch.nn.functional.dropout(layer_input, dropout, training=True)
    output = layer_input if batch_sizes is not None else layer_input.view(input.shape[0], input.shape[1], -1)
    return output, torch.stack(h_n), torch.stack(c_n)
