"""The recurrent ops on PyTorch's own operators (cuDNN's LSTM on a GPU): the default on the
CPU and `auto`'s fallback."""
from __future__ import annotations

from typing import Optional

import torch

from seqops import dispatch
from seqops.ops.recurrent import reference


def _under_torch_func() -> bool:
    """Inside a torch.func transform (vmap, grad, jvp...). There torch's own recurrent ops
    do not serve: its fused LSTM/GRU/RNN have no vmap batching rule ("Batching rule not
    implemented for aten::gru.input"), and its cells' backward fails under vmap when the
    state is not batched and the input is ("output with shape [B, H] doesn't match the
    broadcast shape [N, B, H]": an in-place op). So the torch backend then
    runs the reference's cells and layers, the same math in plain torch ops, which every
    transform takes. (Not asked while compiling: Dynamo need not trace the query.)"""
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def lstm_cell(
    input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor], w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.lstm_cell (its pointwise part fused, the GEMMs apart); the reference's under
    torch.func."""
    if _under_torch_func():
        return reference.lstm_cell(input, hx, w_ih, w_hh, b_ih, b_hh)
    return torch.lstm_cell(input, hx, w_ih, w_hh, b_ih, b_hh)


def lstm(
    input: torch.Tensor, batch_sizes: Optional[torch.Tensor], hx: tuple[torch.Tensor, torch.Tensor],
    weights: list[torch.Tensor], has_biases: bool, num_layers: int, dropout: float, training: bool,
    bidirectional: bool, proj_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch's own LSTM (cuDNN on a GPU), through the entry point torch.nn.LSTM calls;
    time-major input or packed data, as the reference's lstm.

    Under torch.compile on the CPU it steps through torch.lstm_cell instead: torch's fused
    CPU LSTM fails inside AOTAutograd when its weights need a gradient and its input does
    not (torch 2.13: "expected all tensors_saved_with_vc_check to be Tensors"; torch.nn.LSTM
    fails the same way there with torch._dynamo.config.allow_rnn)."""
    if torch.compiler.is_compiling() and input.device.type == "cpu":
        return reference.lstm(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training,
                              bidirectional, proj_size, cell=torch.lstm_cell)
    if _under_torch_func():
        return reference.lstm(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training,
                              bidirectional, proj_size, cell=reference.lstm_cell)
    if batch_sizes is None:
        output, h_n, c_n = torch._VF.lstm(input, hx, weights, has_biases, num_layers, dropout, training,
                                          bidirectional, False)
    else:
        output, h_n, c_n = torch._VF.lstm(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training,
                                          bidirectional)
    return output, h_n, c_n


def _torch_cell(cell, reference_cell):
    """torch's cell (`cell`), the reference's (`reference_cell`) under torch.func."""
    def run(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
        return (reference_cell if _under_torch_func() else cell)(input, hx, w_ih, w_hh, b_ih, b_hh)

    run.__name__, run.__doc__ = cell.__name__, f"{cell.__name__}; the reference's under torch.func."
    return run


def _torch_layers(name: str, cell, reference_cell):
    """torch's own multi-layer GRU or RNN (`name`: gru, rnn_tanh, rnn_relu; cuDNN on a
    GPU), through the entry point torch.nn.GRU and torch.nn.RNN call; time-major input or
    packed data, as reference.hidden_rnn. Under torch.compile on the CPU it steps through
    torch's cell (`cell`), for the reason lstm does; under torch.func, through the
    reference's (`reference_cell`)."""
    function = getattr(torch._VF, name)

    def run(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional):
        if torch.compiler.is_compiling() and input.device.type == "cpu":
            return reference.hidden_rnn(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training,
                                        bidirectional, cell=cell)
        if _under_torch_func():
            return reference.hidden_rnn(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training,
                                        bidirectional, cell=reference_cell)
        if batch_sizes is None:
            return function(input, hx, weights, has_biases, num_layers, dropout, training, bidirectional, False)
        return function(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional)

    run.__name__ = name
    return run


dispatch.register(dispatch.Impl("lstm_cell", "torch", "composite", {"run": lstm_cell}, priority={"cpu": 10, "cuda": 10}))
dispatch.register(dispatch.Impl("lstm", "torch", "composite", {"run": lstm}, priority={"cpu": 10, "cuda": 10}))
for _name, _cell, _reference_cell in (("gru", torch.gru_cell, reference.gru_cell),
                                      ("rnn_tanh", torch.rnn_tanh_cell, reference.rnn_tanh_cell),
                                      ("rnn_relu", torch.rnn_relu_cell, reference.rnn_relu_cell)):
    dispatch.register(dispatch.Impl(f"{_name}_cell", "torch", "composite", {"run": _torch_cell(_cell, _reference_cell)},
                                    priority={"cpu": 10, "cuda": 10}))
    dispatch.register(dispatch.Impl(_name, "torch", "composite", {"run": _torch_layers(_name, _cell, _reference_cell)},
                                    priority={"cpu": 10, "cuda": 10}))
