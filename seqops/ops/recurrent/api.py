"""seqops.lstm_cell, gru_cell, rnn_tanh_cell, rnn_relu_cell and the multi-layer LSTM, GRU
and RNN behind seqops.nn: check the call (contract.py), pick an implementation, run it."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops import dispatch
from seqops.ops.recurrent import contract, hidden_cell_op, hidden_layer_op, op


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
    contract.check_sequence("seqops.lstm", input, batch_sizes)
    args = (input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional, proj_size)
    impl = dispatch.select("lstm", input.device, *args)
    if impl.composite:
        return impl.run(*args)
    return op.run_fused_lstm(impl, *args)


def _hidden_cell(op_name: str, input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                 b_hh: Optional[Tensor]) -> Tensor:
    """A checked call of a cell with one state (contract.HIDDEN_CELL_GATES) on the chosen
    implementation."""
    input, h, batched = contract.check_hidden_cell(op_name, input, hx, w_ih, w_hh, b_ih, b_hh)
    impl = dispatch.select(op_name, input.device, input, h, w_ih, w_hh, b_ih, b_hh)
    if impl.composite:
        h1 = impl.run(input, h, w_ih, w_hh, b_ih, b_hh)
    else:
        if (b_ih is None) != (b_hh is None):  # the fused kernels add both biases or neither
            b_ih, b_hh = (b if b is not None else torch.zeros_like(b_ih if b_hh is None else b_hh) for b in (b_ih, b_hh))
        h1, _ = hidden_cell_op.CELLS[op_name].differentiable(input, h, w_ih, w_hh, b_ih, b_hh, impl.key)
    return h1 if batched else h1.squeeze(0)


def gru_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
             b_hh: Optional[Tensor] = None) -> Tensor:
    """One GRU step, as torch.gru_cell, gate order r, z, n: r = sigmoid(x W_ir^T + b_ir +
    h W_hr^T + b_hr), z likewise, n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)),
    h' = (1 - z) * n + z * h.

    input [B, I] (or [I]); hx [B, H] (or [H]); w_ih [3H, I]; w_hh [3H, H]; b_ih, b_hh [3H]
    or None. Returns h', shaped like hx."""
    return _hidden_cell("gru_cell", input, hx, w_ih, w_hh, b_ih, b_hh)


def rnn_tanh_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
                  b_hh: Optional[Tensor] = None) -> Tensor:
    """One Elman RNN step, as torch.rnn_tanh_cell: h' = tanh(x w_ih^T + b_ih + h w_hh^T + b_hh).

    input [B, I] (or [I]); hx [B, H] (or [H]); w_ih [H, I]; w_hh [H, H]; b_ih, b_hh [H] or
    None. Returns h', shaped like hx."""
    return _hidden_cell("rnn_tanh_cell", input, hx, w_ih, w_hh, b_ih, b_hh)


def rnn_relu_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
                  b_hh: Optional[Tensor] = None) -> Tensor:
    """One Elman RNN step with relu, as torch.rnn_relu_cell: h' = relu(x w_ih^T + b_ih +
    h w_hh^T + b_hh). Shapes as rnn_tanh_cell."""
    return _hidden_cell("rnn_relu_cell", input, hx, w_ih, w_hh, b_ih, b_hh)


def hidden_rnn(
    mode: str, input: Tensor, batch_sizes: Optional[Tensor], hx: Tensor, weights: list[Tensor], has_biases: bool,
    num_layers: int, dropout: float, training: bool, bidirectional: bool,
) -> tuple[Tensor, Tensor]:
    """A multi-layer GRU or RNN as torch.nn.GRU / torch.nn.RNN run it (arguments already
    checked by the module: seqops.nn.GRU and seqops.nn.RNN are the way in). mode: "gru",
    "rnn_tanh" or "rnn_relu". input [T, B, I] time-major, or packed data [N, I] with
    batch_sizes [T]; hx: h0 [layers * directions, B, H]; weights in the module's
    _flat_weights order. Returns (output, h_n).

    A fused implementation runs each layer and direction as one GEMM for the input of all
    steps and one layer op (hidden_layer_op) for the steps."""
    contract.check_sequence(f"seqops.{mode}", input, batch_sizes)
    args = (input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional)
    impl = dispatch.select(mode, input.device, *args)
    if impl.composite:
        return impl.run(*args)
    return hidden_layer_op.run_fused_hidden_rnn(impl, mode, *args)
