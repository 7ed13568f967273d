"""seqops.nn.GRUCell, RNNCell, GRU and RNN: drop-ins for torch.nn's recurrent layers with
one state (the GRU and the Elman RNN, tanh or relu)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops.ops.recurrent import api as recurrent
from seqops.nn.drop_in import DropIn
from seqops.nn.sequence_input import check_forward_args, sequence_input, sequence_output


def _cell_state(name: str, input: Tensor, hx: Optional[Tensor], hidden_size: int) -> Tensor:
    """torch's cell checks (its messages) and its default state: zeros [B, H] or [H]."""
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None and hx.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
    if hx is None:
        return torch.zeros(*input.shape[:-1], hidden_size, dtype=input.dtype, device=input.device)
    return hx


class GRUCell(DropIn, torch.nn.GRUCell):
    """torch.nn.GRUCell (same constructor, parameters, init and state_dict; an instance of
    torch.nn.GRUCell too) computed by seqops.gru_cell: one fused kernel for both products,
    the biases, the gates and the new state.

    forward(input [B, I] or [I], hx=None) -> h' [B, H] or [H]; hx defaults to zeros.
    float64 runs on the torch backend.
    """

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        hx = _cell_state("GRUCell", input, hx, self.hidden_size)
        return recurrent.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class RNNCell(DropIn, torch.nn.RNNCell):
    """torch.nn.RNNCell (same constructor, nonlinearity "tanh" or "relu", parameters, init
    and state_dict; an instance of torch.nn.RNNCell too) computed by seqops.rnn_tanh_cell
    or seqops.rnn_relu_cell.

    forward(input [B, I] or [I], hx=None) -> h' [B, H] or [H]; hx defaults to zeros.
    """

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        hx = _cell_state("RNNCell", input, hx, self.hidden_size)
        if self.nonlinearity == "tanh":
            cell = recurrent.rnn_tanh_cell
        elif self.nonlinearity == "relu":
            cell = recurrent.rnn_relu_cell
        else:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class _OneStateRNN(DropIn, torch.nn.RNNBase):
    """The forward of GRU and RNN, as torch's (torch.nn.RNNBase's checks, which fit both)."""

    def _seqops_mode(self) -> str:
        return {"GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}[self.mode]

    def forward(self, input, hx: Optional[Tensor] = None):
        self._update_flat_weights()
        name = type(self).__name__
        directions = 2 if self.bidirectional else 1
        given = sequence_input(self, input, f"{name}: Expected input to be 2D or 3D, got {{}}D input instead")
        data, sorted_indices = given.data, given.sorted_indices
        if hx is None:
            hx = torch.zeros(self.num_layers * directions, given.batch, self.hidden_size, dtype=data.dtype,
                             device=data.device)
        else:
            expected = 3 if given.batched else 2
            if hx.dim() != expected:
                kind = "batched 3-D" if given.batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind} input, hx should also be {expected}-D but got {hx.dim()}-D tensor")
            if hx.dtype != data.dtype:
                raise RuntimeError(f"{name}: input and hx must share a dtype, got input {data.dtype} and hx {hx.dtype}")
            if not given.batched:
                hx = hx.unsqueeze(1)
            hx = self.permute_hidden(hx, sorted_indices)
        check_forward_args(self, given, hx)
        output, h_n = recurrent.hidden_rnn(self._seqops_mode(), data, given.batch_sizes, hx, self._flat_weights,
                                           self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        h_n = self.permute_hidden(h_n, given.unsorted_indices)
        return sequence_output(self, given, output), (h_n if given.batched else h_n.squeeze(1))


class GRU(_OneStateRNN):
    """torch.nn.GRU (every constructor argument, the parameter names and shapes, init and
    state_dict) computed by seqops.

    forward(input, hx=None) -> (output, h_n) exactly as torch's: input [T, B, I]
    ([B, T, I] with batch_first, [T, I] unbatched) or a PackedSequence (output packed the
    same way, sorted/unsorted indices honoured); hx [layers * directions, B, H], zeros by
    default. Dropout between layers as torch, in training. Per layer and direction the
    fused path makes one GEMM of the input of every step, then runs the steps in the
    fused GRU step kernel (one launch a step, forward and backward).

    An RNNBase in mode "GRU", as torch.nn.GRU is, but not an instance of torch.nn.GRU:
    torch.compile refuses to trace those (see seqops.nn.LSTM).
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)


class RNN(_OneStateRNN):
    """torch.nn.RNN (every constructor argument, nonlinearity included, the parameter names
    and shapes, init and state_dict) computed by seqops; forward as seqops.nn.GRU's, on
    the fused tanh or relu RNN step kernel.

    An RNNBase in mode "RNN_TANH" or "RNN_RELU", as torch.nn.RNN is, but not an instance
    of torch.nn.RNN: torch.compile refuses to trace those.
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        # torch.nn.RNN's positional order: input_size, hidden_size, num_layers, nonlinearity, bias, ...
        if len(args) > 3:
            nonlinearity, args = args[3], args[:3] + args[4:]
        else:
            nonlinearity = kwargs.pop("nonlinearity", "tanh")
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(modes[nonlinearity], *args, **kwargs)
