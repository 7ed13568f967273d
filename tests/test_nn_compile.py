"""Every seqops layer compiles with torch.compile(fullgraph=True) inside a model, on every
backend, and gives eager's outputs and gradients: README's claim, layer by layer."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

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


@pytest.mark.parametrize("layer", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_input_compiles_on_the_fused_layers(device, layer):
    """A PackedSequence in: the batch size comes from the length of sorted_indices, not
    from batch_sizes' values (data to the compiler), so the fused layers compile without a
    graph break. (The torch and reference backends step through those values on the CPU:
    they cannot.)"""
    skip_unless_runnable(device, "triton")
    module, make_input = models()[layer]
    module = module.to(device)
    x = make_input().to(device)  # a batch of 3
    T = x.shape[1] if module.batch_first else x.shape[0]
    packed = pack_padded_sequence(x, torch.tensor([T - 1, T, 2]), batch_first=module.batch_first, enforce_sorted=False)
    assert_compiled_matches_eager(lambda inp: first_output(module, inp).data, (packed,), list(module.parameters()),
                                  "triton", "aot_eager", rtol=1e-4, atol=1e-5)
