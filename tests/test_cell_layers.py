"""seqops.backends.cell_layers: nn.LSTM, nn.GRU and nn.RNN on a backend that has fused cells
but no layer kernel (the CUDA C++ backend), as the reference's layer loop over that
backend's cell Impl. The composition is checked on the CPU with the Triton cells (the
same code, another cell key) against torch in float64 under the error rule of
tests/accuracy.py; the CUDA C++ layers themselves run only where a GPU is (`cuda`)."""
import pytest
import torch

import seqops
from devices import skip_unless_runnable
from seqops import dispatch
from seqops.backends import cell_layers
from test_gru_rnn_modules import LAYERS as HIDDEN_MODULES, layer_inputs
from test_lstm import compare, lstm_inputs, twins
from test_lstm_sequence import LaunchCounter


@pytest.fixture
def triton_cell_layers(monkeypatch):
    """Registers, for this test only, "<op>/triton/cells": the composite layers over the
    Triton cells, which the interpreter runs on the CPU."""
    impls = [dispatch.Impl("lstm", "triton", "cells", {"run": cell_layers.lstm_on_cells("lstm_cell/triton/step")},
                           supports=cell_layers.lstm_on_cells_reason)]
    impls += [dispatch.Impl(mode, "triton", "cells",
                            {"run": cell_layers.hidden_rnn_on_cells(f"{mode}_cell", f"{mode}_cell/triton/step")})
              for mode in ("gru", "rnn_tanh", "rnn_relu")]
    for impl in impls:
        monkeypatch.setitem(dispatch._by_key, impl.key, impl)
        monkeypatch.setitem(dispatch._by_op_backend, (impl.op, "triton"),
                            dispatch._by_op_backend[(impl.op, "triton")] + [impl])


def cell_kernel_modules():
    from seqops.kernels.recurrent import cell, gru_cell, rnn_cell, step
    return [cell, gru_cell, rnn_cell, step]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_lstm_on_cells_bidirectional_two_layers(triton_cell_layers, packed):
    skip_unless_runnable("cpu", "triton")
    config = dict(bias=True, batch_first=False, bidirectional=True, proj_size=0, num_layers=2)
    modules = twins(torch.nn.LSTM, seqops.nn.LSTM, 5, 31, device="cpu", dtype=torch.float32, **config)
    make, call = lstm_inputs(config, packed, T=4, B=3, I=5, H=31, device="cpu")
    # A bias gradient sums 12 terms into each of its 4H entries; at H = 9 (36 entries) one
    # trial's error ratio to torch scattered past 2 (3.1 for d bias_ih_l0_reverse, packed,
    # at seed 524714209 in CI) and 8 trials were pooled. H = 31 still fits one interpreter
    # tile of units (32), so a trial costs about the same and gives 124 entries: 3 trials
    # pool more (372) than the 8 did (288).
    compare("triton", modules, make, call, torch.float32, 31, min_trials=3, variant="cells")
    # The cell kernel alone, once a step, layer and direction (4 x 2 x 2), forward and backward.
    ours = modules[2]
    inputs = [t.requires_grad_() for t in make()]
    with seqops.backend("triton", variant="cells"), LaunchCounter(cell_kernel_modules()) as launches:
        outs = call(ours, *inputs)
        torch.autograd.grad(sum(o.sum() for o in outs), inputs + list(ours.parameters()))
    assert launches.counts == {"lstm_step_forward_kernel": 16, "lstm_step_backward_kernel": 16}


@pytest.mark.parametrize("mode", ["gru", "rnn_relu"])
def test_hidden_rnn_on_cells(triton_cell_layers, mode):
    skip_unless_runnable("cpu", "triton")
    torch_class, seqops_class, kwargs = HIDDEN_MODULES[mode]
    config = dict(bias=True, batch_first=True, bidirectional=True, num_layers=1)
    modules = twins(torch_class, seqops_class, 4, 10, device="cpu", dtype=torch.float32, **kwargs, **config)
    make, call = layer_inputs(config, True, T=4, B=3, I=4, H=10, device="cpu")
    compare("triton", modules, make, call, torch.float32, 10, variant="cells")


def test_lstm_on_cells_refuses_projections():
    x = torch.randn(3, 2, 4)
    call = (x, None, (torch.zeros(1, 2, 3), torch.zeros(1, 2, 9)), [], True, 1, 0.0, False, False, 3)
    assert "proj_size 3" in cell_layers.lstm_on_cells_reason(*call)
    assert cell_layers.lstm_on_cells_reason(*call[:-1], 0) is None
    assert "float64" in cell_layers.lstm_on_cells_reason(x.double(), *call[1:-1], 0)


def test_cuda_backend_registers_the_layers():
    for op in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        impl = dispatch.implementation(f"{op}/cuda/step")
        assert impl.composite and not impl.priority, op  # `auto` never picks it


@pytest.mark.cuda
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_lstm_layers_on_the_cuda_cells(packed):
    """nn.LSTM on backend("cuda"): the CUDA C++ cell a step, against torch in float64."""
    skip_unless_runnable("cuda", "cuda")
    config = dict(bias=True, batch_first=True, bidirectional=True, proj_size=0, num_layers=2)
    modules = twins(torch.nn.LSTM, seqops.nn.LSTM, 6, 20, device="cuda", dtype=torch.float32, **config)
    make, call = lstm_inputs(config, packed, T=5, B=3, I=6, H=20, device="cuda")
    compare("cuda", modules, make, call, torch.float32, 20)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["gru", "rnn_tanh", "rnn_relu"])
def test_hidden_rnn_layers_on_the_cuda_cells(mode):
    skip_unless_runnable("cuda", "cuda")
    torch_class, seqops_class, kwargs = HIDDEN_MODULES[mode]
    config = dict(bias=True, batch_first=False, bidirectional=True, num_layers=2)
    modules = twins(torch_class, seqops_class, 6, 20, device="cuda", dtype=torch.float32, **kwargs, **config)
    make, call = layer_inputs(config, True, T=5, B=3, I=6, H=20, device="cuda")
    compare("cuda", modules, make, call, torch.float32, 20)
