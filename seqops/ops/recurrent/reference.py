"""The recurrent ops written out in eager PyTorch, one cell per step: the float64 oracle of
the tests, the naive baseline of the benchmarks, and the `reference` backend (in the
caller's dtype, reduced precision computed in fp32 as torch does)."""
from __future__ import annotations

from typing import Optional

import torch

from seqops import dispatch
from seqops.ops.recurrent.stacking import run_stack


def lstm_cell(
    input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor], w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step, gate order i, f, g, o: input [B, I], hx = (h [B, P], c [B, H]),
    w_ih [4H, I], w_hh [4H, P]. Returns (h', c') [B, H]."""
    dtype = torch.promote_types(input.dtype, torch.float32)
    gates = input.to(dtype) @ w_ih.to(dtype).t() + hx[0].to(dtype) @ w_hh.to(dtype).t()
    for bias in (b_ih, b_hh):
        if bias is not None:
            gates = gates + bias.to(dtype)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * hx[1].to(dtype) + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h.to(input.dtype), c.to(input.dtype)


def lstm(
    input: torch.Tensor, batch_sizes: Optional[torch.Tensor], hx: tuple[torch.Tensor, torch.Tensor],
    weights: list[torch.Tensor], has_biases: bool, num_layers: int, dropout: float, training: bool,
    bidirectional: bool, proj_size: int, *, cell=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A multi-layer LSTM, one lstm_cell per step (`cell`: another function with
    lstm_cell's signature to step with, e.g. torch.lstm_cell). input [T, B, I] (time-major), or the
    data [N, I] of a packed sequence with its batch_sizes [T]; hx = (h0 [L*D, B, P],
    c0 [L*D, B, H]); weights in torch's order (w_ih, w_hh, b_ih, b_hh, w_hr per layer and
    direction). Returns (output, h_n, c_n) as torch's LSTM."""
    def run_direction(layer_input, steps, direction):
        sizes = steps.as_list()
        offsets = [sum(sizes[:t]) for t in range(len(sizes))]
        w = direction.weights
        b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
        h, c = hx[0][direction.index], hx[1][direction.index]
        steps = [None] * len(sizes)
        for t in (reversed(range(len(sizes))) if direction.reverse else range(len(sizes))):
            rows = sizes[t]
            x = layer_input[offsets[t]:offsets[t] + rows]
            h_t, c_t = (cell or lstm_cell)(x, (h[:rows], c[:rows]), w[0], w[1], b_ih, b_hh)
            if proj_size > 0:
                h_t = h_t @ w[-1].t()
            # Rows past `rows` have ended (forwards) or not started (reversed): they keep their state.
            h, c = torch.cat([h_t, h[rows:]]), torch.cat([c_t, c[rows:]])
            steps[t] = h_t
        return (torch.cat(steps) if steps else layer_input.new_empty(0, h.shape[-1])), h, c

    output, (h_n, c_n) = run_stack(input, batch_sizes, weights, 2 + 2 * has_biases + (proj_size > 0), num_layers,
                                   bidirectional, dropout, training, run_direction)
    return output, h_n, c_n


def gru_cell(
    input: torch.Tensor, hx: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One GRU step, gate order r, z, n: input [B, I], hx [B, H], w_ih [3H, I], w_hh [3H, H],
    biases [3H] or None. n = tanh(gi_n + r * gh_n); returns h' = (1 - z) n + z h [B, H]."""
    dtype = torch.promote_types(input.dtype, torch.float32)
    h = hx.to(dtype)
    gi, gh = input.to(dtype) @ w_ih.to(dtype).t(), h @ w_hh.to(dtype).t()
    if b_ih is not None:
        gi = gi + b_ih.to(dtype)
    if b_hh is not None:
        gh = gh + b_hh.to(dtype)
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return ((1 - z) * n + z * h).to(input.dtype)


def _rnn_cell(activation):
    def cell(input: torch.Tensor, hx: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = torch.promote_types(input.dtype, torch.float32)
        pre = input.to(dtype) @ w_ih.to(dtype).t() + hx.to(dtype) @ w_hh.to(dtype).t()
        for bias in (b_ih, b_hh):
            if bias is not None:
                pre = pre + bias.to(dtype)
        return activation(pre).to(input.dtype)

    cell.__doc__ = (f"One Elman RNN step: input [B, I], hx [B, H], w_ih [H, I], w_hh [H, H], biases [H] or None. "
                    f"Returns {activation.__name__}(input w_ih^T + b_ih + hx w_hh^T + b_hh) [B, H].")
    return cell


rnn_tanh_cell = _rnn_cell(torch.tanh)
rnn_relu_cell = _rnn_cell(torch.relu)


def hidden_rnn(
    input: torch.Tensor, batch_sizes: Optional[torch.Tensor], hx: torch.Tensor, weights: list[torch.Tensor],
    has_biases: bool, num_layers: int, dropout: float, training: bool, bidirectional: bool, *, cell,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A multi-layer GRU or RNN (cells with one state), one `cell(x, h, w_ih, w_hh, b_ih,
    b_hh) -> h'` per step. input [T, B, I] (time-major), or the data [N, I] of a packed
    sequence with its batch_sizes [T]; hx: h0 [L*D, B, H]; weights in torch's order (w_ih,
    w_hh, b_ih, b_hh per layer and direction). Returns (output, h_n) as torch's GRU/RNN."""
    def run_direction(layer_input, steps, direction):
        sizes = steps.as_list()
        offsets = [sum(sizes[:t]) for t in range(len(sizes))]
        w = direction.weights
        b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
        h = hx[direction.index]
        steps = [None] * len(sizes)
        for t in (reversed(range(len(sizes))) if direction.reverse else range(len(sizes))):
            rows = sizes[t]
            h_t = cell(layer_input[offsets[t]:offsets[t] + rows], h[:rows], w[0], w[1], b_ih, b_hh)
            # Rows past `rows` have ended (forwards) or not started (reversed): they keep their state.
            h = torch.cat([h_t, h[rows:]]) if rows < h.shape[0] else h_t
            steps[t] = h_t
        return (torch.cat(steps) if steps else layer_input.new_empty(0, h.shape[-1])), h

    output, (h_n,) = run_stack(input, batch_sizes, weights, 4 if has_biases else 2, num_layers, bidirectional,
                               dropout, training, run_direction)
    return output, h_n


def _layers_of(cell):
    def run(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional):
        return hidden_rnn(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional,
                          cell=cell)

    return run


dispatch.register(dispatch.Impl("lstm_cell", "reference", "composite", {"run": lstm_cell}))
dispatch.register(dispatch.Impl("lstm", "reference", "composite", {"run": lstm}))
for _name, _cell in (("gru", gru_cell), ("rnn_tanh", rnn_tanh_cell), ("rnn_relu", rnn_relu_cell)):
    dispatch.register(dispatch.Impl(f"{_name}_cell", "reference", "composite", {"run": _cell}))
    dispatch.register(dispatch.Impl(_name, "reference", "composite", {"run": _layers_of(_cell)}))
