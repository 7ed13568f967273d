"""seqops.nn.GRUCell, RNNCell, GRU and RNN against torch's modules with the same weights
(float64 reference, 2x torch's error in the same dtype for outputs, h_n and every
gradient, tests/accuracy.py): configurations, packed sequences, unbatched input, dropout,
a long sequence, the layer ops' registration (opcheck);
parameters, init and state_dict; seqops.patch swapping torch's layers (calls counted)
and unpatch restoring them."""
import pytest
import torch

import seqops
from calls import counting_seqops_calls
from devices import DEVICES, skip_unless_runnable
from test_lstm import compare, twins
from torch.nn.utils.rnn import pack_padded_sequence

from seqops.ops.recurrent.hidden_layer_op import LAYERS as LAYER_OPS

# mode -> (torch's class, seqops', constructor keywords)
LAYERS = {
    "gru": (torch.nn.GRU, seqops.nn.GRU, {}),
    "rnn_tanh": (torch.nn.RNN, seqops.nn.RNN, {}),
    "rnn_relu": (torch.nn.RNN, seqops.nn.RNN, {"nonlinearity": "relu"}),
}


def layer_inputs(config, packed, T, B, I, H, device):
    """A maker of fresh (x, h0) and the call that runs a module on them (packing x when
    `packed`, with unsorted lengths that include T, so that sorted/unsorted indices matter)."""
    directions = 2 if config["bidirectional"] else 1

    def make():
        return [torch.randn((B, T, I) if config["batch_first"] else (T, B, I), device=device),
                torch.randn(config["num_layers"] * directions, B, H, device=device)]

    lengths = torch.tensor([max(1, T - 2 * (i % 3)) for i in range(B)][::-1])

    def call(module, x, h0):
        if packed:
            x = pack_padded_sequence(x, lengths, batch_first=config["batch_first"], enforce_sorted=False)
        out, h_n = module(x, h0)
        return (out.data if packed else out), h_n

    return make, call


CONFIGS = [
    (dict(bias=True, batch_first=False, bidirectional=True, num_layers=2), True),
    (dict(bias=True, batch_first=False, bidirectional=True, num_layers=2), False),
    (dict(bias=False, batch_first=True, bidirectional=False, num_layers=1), False),
]


@pytest.mark.parametrize("config, packed", CONFIGS, ids=["bi-2layers-packed", "bi-2layers-padded", "nobias-batchfirst"])
@pytest.mark.parametrize("mode", list(LAYERS))
@pytest.mark.parametrize("device", DEVICES)
def test_layer_configurations(device, mode, config, packed):
    skip_unless_runnable(device, "triton")
    torch_class, seqops_class, kwargs = LAYERS[mode]
    # Sizes under one interpreter tile, large enough that each weight gradient has a
    # few hundred entries (the error ratio of two small samples is noise). Each bias-
    # gradient entry sums about T x B terms: pool 3 trials (with one, over 20 seeds, the
    # packed tanh RNN's d bias_ih_l0_reverse reached 1.85x torch's error on the
    # sequence variant, as tests/test_gru_rnn_sequence.py's one-trial runs reached 2.29).
    I, H = 7, 21
    modules = twins(torch_class, seqops_class, I, H, device=device, dtype=torch.float32, **kwargs, **config)
    make, call = layer_inputs(config, packed, T=5, B=3, I=I, H=H, device=device)
    compare("triton", modules, make, call, torch.float32, H, min_trials=3)


@pytest.mark.parametrize("device", DEVICES)
def test_rnn_b_hh_is_not_rounded_into_b_ih(device):
    """The draw on which b_ih + b_hh, summed in fp32 before the input projection, put one
    rounding error into every step of a unit alike: with torch 2.13's generator at seed
    1707147292 (a CI run's), one trial's d bias_hh_l0 came out 2.9x torch's error and the
    pooled one 2.16x. With b_hh added to the recurrent product apart, as torch does, it is
    1.3x. (Another torch's generator draws other inputs: then this is one more draw.)"""
    skip_unless_runnable(device, "triton")
    torch.manual_seed(1707147292)
    config, packed = CONFIGS[0]
    modules = twins(torch.nn.RNN, seqops.nn.RNN, 7, 21, device=device, dtype=torch.float32, **config)
    make, call = layer_inputs(config, packed, T=5, B=3, I=7, H=21, device=device)
    compare("triton", modules, make, call, torch.float32, 21, min_trials=3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", ["gru", "rnn_tanh"])
@pytest.mark.parametrize("device", DEVICES)
def test_layer_reduced_precision(device, mode, dtype):
    skip_unless_runnable(device, "triton")
    torch_class, seqops_class, kwargs = LAYERS[mode]
    config = dict(bias=True, batch_first=True, bidirectional=True, num_layers=1)
    modules = twins(torch_class, seqops_class, 9, 20, device=device, dtype=dtype, **kwargs, **config)
    make, call = layer_inputs(config, True, T=4, B=5, I=9, H=20, device=device)
    compare("triton", modules, make, call, dtype, 20)


@pytest.mark.parametrize("mode", ["gru", "rnn_relu"])
@pytest.mark.parametrize("device", DEVICES)
def test_one_step_batch_one_unbatched_default_state(device, mode):
    """A one-step sequence of batch 1, packed; and one unbatched sequence [T, I] with the
    default state."""
    skip_unless_runnable(device, "triton")
    torch_class, seqops_class, kwargs = LAYERS[mode]
    config = dict(bias=True, batch_first=False, bidirectional=True, num_layers=2)
    # 33 input features: a one-row input of fewer would need many trials pooled (tests/accuracy.py).
    modules = twins(torch_class, seqops_class, 33, 23, device=device, dtype=torch.float32, **kwargs, **config)
    make, call = layer_inputs(config, True, T=1, B=1, I=33, H=23, device=device)
    # One row: each weight gradient is an outer product of two vectors, so its error is a
    # sample of a few dozen roundings, whatever its size; with one trial the ratio to
    # torch's went past 2 for the GRU's second-layer w_ih in 1 of 7 seeds. Pool 4, as
    # test_lstm.py's one-step test does.
    compare("triton", modules, make, call, torch.float32, 23, min_trials=4)

    def unbatched(module, x):
        out, h_n = module(x)
        assert out.shape == (4, 46) and h_n.shape == (4, 23)
        return out, h_n

    # One unbatched sequence is a batch of one too: its weight gradients sum a few outer
    # products, and one trial's ratio to torch reached 2.13 (d weight_hh_l1_reverse, relu,
    # seed 1493474247, a fresh-clone CI run). Pool 4, as above.
    compare("triton", modules, lambda: [torch.randn(4, 33, device=device)], unbatched, torch.float32, 23,
            min_trials=4)


@pytest.mark.parametrize("device", DEVICES)
def test_long_sequence_error_growth(device):
    """64 steps: an error that compounds over time would show here first (fp32, where
    nothing but drift could exceed torch's error). Not longer: ~0.1 s a step and its
    backward under the interpreter."""
    skip_unless_runnable(device, "triton")
    config = dict(bias=True, batch_first=False, bidirectional=False, num_layers=1)
    modules = twins(torch.nn.GRU, seqops.nn.GRU, 4, 16, device=device, dtype=torch.float32, **config)
    make, call = layer_inputs(config, False, T=64, B=3, I=4, H=16, device=device)
    compare("triton", modules, make, call, torch.float32, 16)


@pytest.mark.parametrize("mode", ["gru", "rnn_relu"])
@pytest.mark.parametrize("device", DEVICES)
def test_layer_opcheck(device, mode):
    """The layer ops: schema, fake kernels, autograd registration, on a packed sequence
    (the GRU reversed and with its recurrent bias, the RNN forwards without: opcheck
    runs each op many times, slow under the interpreter)."""
    skip_unless_runnable(device, "triton")
    G, H, key = (3 if mode == "gru" else 1), 5, f"{mode}/triton/step"
    sizes = torch.tensor([3, 2, 2, 1])
    op = LAYER_OPS[mode]
    b_hh, reverse = (torch.randn(G * H, device=device), True) if mode == "gru" else (None, False)
    args = [torch.randn(8, G * H, device=device), sizes, torch.randn(3, H, device=device),
            torch.randn(G * H, H, device=device) * 0.4, b_hh]
    grads = [t.clone().requires_grad_() if t is not None and t.is_floating_point() else t for t in args]
    torch.library.opcheck(op.forward, (*grads, reverse, key))
    out, h_n, saved = op.forward(*args, reverse, key)
    torch.library.opcheck(op.backward, (torch.randn_like(out), torch.randn_like(h_n), out, saved, args[2], args[3],
                                        sizes, reverse, b_hh is not None, key))


@pytest.mark.parametrize("mode", ["gru", "rnn_tanh"])
def test_layer_fake_tensors_and_forward_mode(mode):
    """FakeTensorMode gives the real shapes (the layer op's fake kernels); forward-mode AD
    through the fused layer raises a clear error instead of zero tangents."""
    skip_unless_runnable("cpu", "triton")
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch_class, seqops_class, kwargs = LAYERS[mode]
    module = seqops_class(5, 7, num_layers=2, bidirectional=True, **kwargs)
    x = torch.randn(4, 3, 5)
    with seqops.backend("triton"):
        out, h_n = module(x)
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)  # the module's parameters stay real
        with fake_mode:
            fake_out, fake_h_n = module(fake_mode.from_tensor(x))
        assert [(t.shape, t.dtype) for t in (fake_out, fake_h_n)] == [(t.shape, t.dtype) for t in (out, h_n)]
        with pytest.raises(RuntimeError, match=f"seqops.{mode}_layer: forward-mode AD .* is not implemented"):
            torch.func.jvp(lambda a: module(a)[0], (torch.randn(4, 3, 5),), (torch.randn(4, 3, 5),))


@pytest.mark.parametrize("device", DEVICES)
def test_cells(device):
    """GRUCell and RNNCell (relu; tanh is the same module code): batched with a state,
    unbatched with the default one."""
    nonlinearity = "relu"
    skip_unless_runnable(device, "triton")
    for torch_class, seqops_class, kwargs in ((torch.nn.GRUCell, seqops.nn.GRUCell, {}),
                                              (torch.nn.RNNCell, seqops.nn.RNNCell, {"nonlinearity": nonlinearity})):
        modules = twins(torch_class, seqops_class, 9, 22, device=device, dtype=torch.float32, **kwargs)
        compare("triton", modules, lambda: [torch.randn(4, 9, device=device), torch.randn(4, 22, device=device)],
                lambda m, x, h: (m(x, h),), torch.float32, 31)
        compare("triton", modules, lambda: [torch.randn(9, device=device)], lambda m, x: (m(x),), torch.float32, 31)


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_between_layers_only_in_training(device):
    skip_unless_runnable(device, "triton")
    module = seqops.nn.GRU(5, 7, num_layers=3, dropout=0.5).to(device)
    x = torch.randn(4, 2, 5, device=device)
    with seqops.backend("triton"):
        module.eval()
        eval_out = module(x)[0]
        module.train()
        torch.manual_seed(2)
        train_out = module(x)[0]
        torch.manual_seed(2)
        train_again = module(x)[0]
    assert torch.equal(train_out, train_again) and not torch.allclose(train_out, eval_out)
    theirs = torch.nn.GRU(5, 7, num_layers=3, dropout=0.5).to(device).eval()
    theirs.load_state_dict(module.state_dict())
    torch.testing.assert_close(eval_out, theirs(x)[0])


@pytest.mark.parametrize("make", [
    lambda m: m.GRU(5, 7, 2, True, True, 0.1, True),  # torch's positional order
    lambda m: m.RNN(5, 7, 2, "relu", False, True, 0.0, True),
    lambda m: m.RNN(5, 7, num_layers=2, nonlinearity="tanh", bidirectional=True),
    lambda m: m.GRUCell(5, 7, bias=False),
    lambda m: m.RNNCell(5, 7, nonlinearity="relu"),
], ids=["gru", "rnn-positional", "rnn-keywords", "gru-cell", "rnn-cell"])
def test_parameters_init_and_state_dict_match_torch(make):
    torch.manual_seed(0)
    theirs = make(torch.nn)
    torch.manual_seed(0)
    ours = make(seqops.nn)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), f"{name}: same seed, same init"
    assert repr(ours) == repr(theirs)
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    if isinstance(theirs, torch.nn.RNNBase):
        # An RNNBase of torch's mode, but not an instance of torch's class: torch.compile refuses those.
        assert isinstance(ours, torch.nn.RNNBase) and ours.mode == theirs.mode and not isinstance(ours, type(theirs))
    else:
        assert isinstance(ours, type(theirs))


@pytest.mark.parametrize("call, error", [
    (lambda: seqops.nn.GRU(4, 6, proj_size=2), "proj_size argument is only supported for LSTM"),
    (lambda: seqops.nn.RNN(4, 6, nonlinearity="gelu"), "Unknown nonlinearity 'gelu'"),
    (lambda: seqops.nn.GRU(4, 6)(torch.randn(2, 3, 4, 5)), "GRU: Expected input to be 2D or 3D, got 4D"),
    (lambda: seqops.nn.RNN(4, 6)(torch.randn(6, 2, 9)), "input.size\\(-1\\) must be equal to input_size. Expected 4"),
    (lambda: seqops.nn.GRU(4, 6)(torch.randn(6, 2, 4), torch.zeros(1, 3, 6)), "Expected hidden size"),
    (lambda: seqops.nn.GRU(4, 6)(torch.randn(6, 2, 4), torch.zeros(2, 6)), "hx should also be 3-D"),
    (lambda: seqops.nn.GRU(4, 6)(torch.randn(6, 2, 4), torch.zeros(1, 2, 6, dtype=torch.float64)),
     "input and hx must share a dtype"),
    (lambda: seqops.nn.GRUCell(4, 6)(torch.randn(2, 3, 4)), "GRUCell: Expected input to be 1D or 2D, got 3D"),
    (lambda: seqops.nn.RNNCell(4, 6)(torch.randn(2, 4), torch.zeros(1, 2, 6)), "Expected hidden to be 1D or 2D"),
], ids=["proj-size", "nonlinearity", "4d-input", "input-size", "state-batch", "state-dims", "state-dtype", "cell-3d",
        "cell-state-3d"])
def test_errors_are_torchs(call, error):
    with pytest.raises((ValueError, RuntimeError), match=error):
        call()


class Tagger(torch.nn.Module):
    """A model written for torch: a GRU and an RNN over embeddings, a GRUCell and an
    RNNCell stepping after them."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.gru = torch.nn.GRU(8, 12, batch_first=True, bidirectional=True)
        self.rnn = torch.nn.RNN(24, 12, nonlinearity="relu", batch_first=True)
        self.gru_cell = torch.nn.GRUCell(12, 12)
        self.rnn_cell = torch.nn.RNNCell(12, 12)

    def forward(self, tokens):
        out, _ = self.rnn(self.gru(self.embed(tokens))[0])
        h = self.gru_cell(out[:, -1])
        return self.rnn_cell(out[:, 0], h)


@pytest.mark.parametrize("device", DEVICES)
def test_patch_swaps_gru_rnn_runs_seqops_and_unpatch_restores(device):
    skip_unless_runnable(device, "triton")
    torch.manual_seed(0)
    model = Tagger().to(device)
    tokens = torch.randint(0, 20, (3, 5), device=device)
    expected = model(tokens)
    parameters = list(model.parameters())
    seqops.patch(model, gru=False)
    assert type(model.gru) is torch.nn.GRU and type(model.gru_cell) is torch.nn.GRUCell
    assert type(model.rnn) is seqops.nn.RNN and type(model.rnn_cell) is seqops.nn.RNNCell
    seqops.patch(model)
    assert type(model.gru) is seqops.nn.GRU and type(model.gru_cell) is seqops.nn.GRUCell
    assert all(a is b for a, b in zip(model.parameters(), parameters))
    with seqops.backend("triton"), counting_seqops_calls() as calls:
        out = model(tokens)
    assert calls == {("gru", "triton"): 1, ("rnn_relu", "triton"): 1, ("gru_cell", "triton"): 1,
                     ("rnn_tanh_cell", "triton"): 1}, calls
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    seqops.unpatch(model)
    assert [type(m) for m in (model.gru, model.rnn, model.gru_cell, model.rnn_cell)] == [
        torch.nn.GRU, torch.nn.RNN, torch.nn.GRUCell, torch.nn.RNNCell]
    assert all(a is b for a, b in zip(model.parameters(), parameters))
    torch.testing.assert_close(model(tokens), expected)
