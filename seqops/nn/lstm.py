"""seqops.nn.LSTMCell and seqops.nn.LSTM: drop-ins for torch.nn.LSTMCell and torch.nn.LSTM."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops.ops.recurrent import api as recurrent
from seqops.nn.drop_in import DropIn
from seqops.nn.sequence_input import check_forward_args, sequence_input, sequence_output


class LSTMCell(DropIn, torch.nn.LSTMCell):
    """torch.nn.LSTMCell (same constructor, parameters, init and state_dict; an instance
    of torch.nn.LSTMCell too) computed by seqops.lstm_cell: one fused kernel for both
    products, the biases and the gates.

    forward(input [B, I] or [I], hx=None) -> (h', c') [B, H] or [H]; hx defaults to zeros.
    float64 runs on the torch backend.
    """

    def forward(self, input: Tensor, hx: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for index, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got {value.dim()}D instead")
        if hx is None:
            zeros = torch.zeros(*input.shape[:-1], self.hidden_size, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros)
        return recurrent.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTM(DropIn, torch.nn.RNNBase):
    """torch.nn.LSTM (every constructor argument, the parameter names and shapes, init and
    state_dict) computed by seqops.

    forward(input, hx=None) -> (output, (h_n, c_n)) exactly as torch's: input
    [T, B, I] ([B, T, I] with batch_first, [T, I] unbatched) or a PackedSequence
    (output packed the same way, sorted/unsorted indices honoured); hx = (h0, c0)
    [layers * directions, B, P or H], zeros by default. Per layer and direction the fused
    path makes one GEMM of the input of every step, then runs the steps in the fused step
    kernel; the backward runs the fused step backward through time, then takes the weight
    gradients as one GEMM over all steps. Dropout between layers as torch, in training.

    It is a torch.nn.RNNBase in mode "LSTM", as torch.nn.LSTM is, but not an instance of
    torch.nn.LSTM: torch.compile refuses to trace any instance of torch's RNN, GRU and
    LSTM classes, and this layer compiles with fullgraph=True. Code that recognises LSTMs
    by `isinstance(m, torch.nn.LSTM)` should test `isinstance(m, torch.nn.RNNBase) and
    m.mode == "LSTM"`, which holds for both.
    """

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    # torch.nn.LSTM's own shape checks (RNNBase's would take hx as one tensor), for code that
    # calls them; they read only the attributes RNNBase sets. forward checks through
    # sequence_input.check_forward_args, which reads no data of a packed input's batch_sizes.
    get_expected_cell_size = torch.nn.LSTM.get_expected_cell_size
    check_forward_args = torch.nn.LSTM.check_forward_args
    permute_hidden = torch.nn.LSTM.permute_hidden

    def forward(self, input, hx: Optional[tuple[Tensor, Tensor]] = None):
        self._update_flat_weights()
        directions = 2 if self.bidirectional else 1
        state_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        given = sequence_input(self, input, "LSTM: Expected input to be 2D or 3D, got {}D instead")
        data, sorted_indices = given.data, given.sorted_indices
        if hx is None:
            zeros = dict(dtype=data.dtype, device=data.device)
            hx = (torch.zeros(self.num_layers * directions, given.batch, state_size, **zeros),
                  torch.zeros(self.num_layers * directions, given.batch, self.hidden_size, **zeros))
        else:
            expected = 3 if given.batched else 2
            if hx[0].dim() != expected or hx[1].dim() != expected:
                kind = "batched 3-D" if given.batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind} input, hx and cx should also be {expected}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            if hx[0].dtype != data.dtype or hx[1].dtype != data.dtype:
                raise RuntimeError(f"LSTM: input and hx must share a dtype, got input {data.dtype}, hx[0] "
                                   f"{hx[0].dtype} and hx[1] {hx[1].dtype}")
            if not given.batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            hx = self.permute_hidden(hx, sorted_indices)
        check_forward_args(self, given, hx)
        output, h_n, c_n = recurrent.lstm(
            data, given.batch_sizes, hx, self._flat_weights, self.bias, self.num_layers, self.dropout, self.training,
            self.bidirectional, self.proj_size,
        )
        hidden = self.permute_hidden((h_n, c_n), given.unsorted_indices)
        if not given.batched:
            hidden = (hidden[0].squeeze(1), hidden[1].squeeze(1))
        return sequence_output(self, given, output), hidden
