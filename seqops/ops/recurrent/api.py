"""seqops.lstm_cell and the multi-layer LSTM behind seqops.nn.LSTM: check the call
(contract.py), pick an implementation, run it."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops import dispatch
from seqops.ops.recurrent import contract, op


def lstm_cell(
    input: Tensor,
    hx: tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step, as torch.lstm_cell: gates = input @ w_ih^T + b_ih + h @ w_hh^T + b_hh,
    in the order i, f, g, o; c' = sigmoid(f) c + sigmoid(i) tanh(g); h' = sigmoid(o) tanh(c').

    input [B, I] (or [I]); hx = (h [B, H], c [B, H]) (or [H] each); w_ih [4H, I];
    w_hh [4H, H]; b_ih, b_hh [4H] or None. Returns (h', c'), shaped like hx.
    """
    input, h, c, batched = contract.check_cell(input, hx, w_ih, w_hh, b_ih, b_hh)
    impl = dispatch.select("lstm_cell", input.device, input, h, c, w_ih, w_hh, b_ih, b_hh)
    if impl.composite:
        h1, c1 = impl.run(input, (h, c), w_ih, w_hh, b_ih, b_hh)
    else:
        if (b_ih is None) != (b_hh is None):  # the fused step adds both biases or neither
            b_ih, b_hh = (b if b is not None else torch.zeros_like(b_ih if b_hh is None else b_hh) for b in (b_ih, b_hh))
        h1, c1, _ = op.differentiable_cell(input, h, c, w_ih, w_hh, b_ih, b_hh, impl.key)
    return (h1, c1) if batched else (h1.squeeze(0), c1.squeeze(0))


def lstm(
    input: Tensor,
    batch_sizes: Optional[Tensor],
    hx: tuple[Tensor, Tensor],
    weights: list[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
    proj_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """A multi-layer LSTM as torch.nn.LSTM runs it (its arguments already checked by the
    module: seqops.nn.LSTM is the way in). input [T, B, I] time-major, or packed data [N, I]
    with batch_sizes [T]; hx = (h0 [layers * directions, B, P], c0 [..., B, H]); weights
    in the module's _flat_weights order. Returns (output, h_n, c_n)."""
    args = (input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional, proj_size)
    impl = dispatch.select("lstm", input.device, *args)
    if impl.composite:
        return impl.run(*args)
    return op.run_fused_lstm(impl, *args)
