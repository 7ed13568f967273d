"""Multi-layer LSTM, GRU and RNN for a backend that has fused cells but no layer kernel: the
reference's layer loop (seqops.ops.recurrent.reference: one cell per step, packed
sequences, both directions, layers, dropout between them) stepping through that
backend's cell implementation, each step differentiable through the cell op's own
backward. One launch per step and direction (two with the backward), and the input
GEMM inside each step's kernel: a correct drop-in for `nn.LSTM`, `nn.GRU` and `nn.RNN`
on that backend, not a fast one (the Triton backend's layer kernels are that).

`lstm_on_cells(key)` and `hidden_rnn_on_cells(cell_op, key)` build the `run` of a
composite Impl from the key of a fused cell Impl (e.g. "lstm_cell/cuda/step"), so the
same composition serves any backend's cells and is tested on the CPU with Triton's."""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from seqops.ops.recurrent import contract, hidden_cell_op, op, reference


def _lstm_cell_on(key: str) -> Callable:
    def cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
        h1, c1, _ = op.differentiable_cell(input, hx[0], hx[1], w_ih, w_hh, b_ih, b_hh, key)
        return h1, c1

    return cell


def lstm_on_cells(key: str) -> Callable:
    """The lstm op's composite `run`, stepping with the fused lstm_cell Impl `key`."""
    cell = _lstm_cell_on(key)

    def run(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional, proj_size):
        return reference.lstm(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training,
                              bidirectional, proj_size, cell=cell)

    return run


def lstm_on_cells_reason(input: Tensor, batch_sizes: Optional[Tensor], hx, weights, has_biases, num_layers,
                         dropout, training, bidirectional, proj_size) -> Optional[str]:
    """What lstm_on_cells cannot take: what no fused LSTM takes, or a projection (the
    fused cells take a square W_hh, [4H, H], where a projection makes it [4H, P])."""
    reason = contract.fused_lstm_reason(input, batch_sizes, hx, weights)
    if reason is None and proj_size > 0:
        return f"proj_size {proj_size}: the fused cells take h of the hidden size; the torch backend runs it"
    return reason


def hidden_rnn_on_cells(cell_op: str, key: str) -> Callable:
    """The gru / rnn_tanh / rnn_relu op's composite `run`, stepping with the fused cell Impl
    `key` of `cell_op` ("gru_cell", "rnn_tanh_cell" or "rnn_relu_cell")."""
    differentiable = hidden_cell_op.CELLS[cell_op].differentiable

    def cell(input, h, w_ih, w_hh, b_ih=None, b_hh=None):
        h1, _ = differentiable(input, h, w_ih, w_hh, b_ih, b_hh, key)
        return h1

    def run(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional):
        return reference.hidden_rnn(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training,
                                    bidirectional, cell=cell)

    return run
