"""Every seqops layer compiles with torch.compile(fullgraph=True) inside a model, on every
backend, and gives eager's outputs and gradients: README's claim, layer by layer."""
import pytest
import torch

import seqops
from compiled import COMPILE_BACKENDS, assert_compiled_matches_eager
from devices import DEVICES, skip_unless_runnable


def models():
    torch.manual_seed(0)
    return {
        "Softmax": (torch.nn.Sequential(torch.nn.Linear(12, 9), seqops.nn.Softmax(-1)), lambda: torch.randn(5, 12)),
        "MultiheadAttention": (seqops.nn.MultiheadAttention(16, 4, batch_first=True),
                               lambda: torch.randn(2, 7, 16)),
        "LSTMCell": (seqops.nn.LSTMCell(6, 10), lambda: torch.randn(4, 6)),
        "LSTM": (seqops.nn.LSTM(6, 10, num_layers=2, bidirectional=True, batch_first=True),
                 lambda: torch.randn(3, 5, 6)),
        "GRUCell": (seqops.nn.GRUCell(6, 10), lambda: torch.randn(4, 6)),
        "RNNCell": (seqops.nn.RNNCell(6, 10, nonlinearity="relu"), lambda: torch.randn(4, 6)),
        "GRU": (seqops.nn.GRU(6, 10, bidirectional=True, batch_first=True), lambda: torch.randn(3, 4, 6)),
        "RNN": (seqops.nn.RNN(6, 10, num_layers=2), lambda: torch.randn(4, 3, 6)),
        "TransformerEncoderLayer": (seqops.patch(torch.nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0,
                                                                                  batch_first=True)),
                                    lambda: torch.randn(2, 7, 16)),
    }


def first_output(module, x):
    if isinstance(module, torch.nn.MultiheadAttention):
        return module(x, x, x, need_weights=False)[0]
    out = module(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("layer", ["Softmax", "MultiheadAttention", "LSTMCell", "LSTM", "GRUCell", "RNNCell", "GRU",
                                   "RNN", "TransformerEncoderLayer"])
@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_layer_compiles_without_graph_breaks(device, backend, layer):
    skip_unless_runnable(device, backend)
    module, make_input = models()[layer]
    module = module.to(device)
    x = make_input().to(device)
    parameters = list(module.parameters())
    assert_compiled_matches_eager(lambda inp: first_output(module, inp), (x,), parameters, backend, "aot_eager",
                                  rtol=1e-4, atol=1e-5)
