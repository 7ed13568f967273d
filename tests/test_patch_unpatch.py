"""seqops.patch and seqops.unpatch on models written for torch: the swap is in place,
keeps the same parameter tensors (optimizers, state_dict keys, repr, train/eval, .to()),
chooses layers by family, and unpatch puts back the very torch layer objects, with what
happened to the model meanwhile."""
import io

import pytest
import torch

import seqops
from calls import counting_seqops_calls


class Tagger(torch.nn.Module):
    """Every layer family seqops patches, nested, with a subclass it must leave alone."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(30, 16)
        self.rnn = torch.nn.LSTM(16, 12, num_layers=2, batch_first=True, bidirectional=True)
        self.cell = torch.nn.LSTMCell(24, 16)
        self.encoder = torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(16, 4, dim_feedforward=24, dropout=0.0, batch_first=True), 1,
            enable_nested_tensor=False)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(16, 5), torch.nn.Softmax(dim=-1)])

    def forward(self, tokens):
        h, _ = self.rnn(self.embed(tokens))
        state = None
        steps = []
        for t in range(h.shape[1]):
            state = self.cell(h[:, t], state)
            steps.append(state[0])
        z = self.encoder(torch.stack(steps, 1))
        return self.heads[1](self.heads[0](z))


def tagger(dtype=torch.float32):
    torch.manual_seed(0)
    return Tagger().to(dtype)


def tokens():
    return torch.randint(0, 30, (3, 5))


def layer_types(model):
    return {name: type(module) for name, module in model.named_modules()}


def test_patch_swaps_in_place_keeping_parameters_keys_and_repr():
    model = tagger()
    parameters = dict(model.named_parameters())
    keys, text = list(model.state_dict()), repr(model)
    assert seqops.patch(model) is model
    types = layer_types(model)
    assert types["rnn"] is seqops.nn.LSTM and types["cell"] is seqops.nn.LSTMCell
    assert types["encoder.layers.0.self_attn"] is seqops.nn.MultiheadAttention
    assert types["heads.1"] is torch.nn.Softmax, "softmax layers are swapped only with softmax=True"
    assert all(parameters[name] is p for name, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    assert repr(model) == text


def test_patched_model_runs_seqops_with_torchs_results():
    model = tagger(torch.float64)
    x = tokens()
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    seqops.patch(model)
    with counting_seqops_calls() as calls:
        out = model(x)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    assert calls[("lstm", "torch")] == 1 and calls[("lstm_cell", "torch")] == 5, calls
    assert sum(n for (op, _), n in calls.items() if op == "attention") == 1, calls
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family, module_name, torch_type", [
    ("lstm", "rnn", torch.nn.LSTM), ("lstm", "cell", torch.nn.LSTMCell),
    ("attention", "encoder.layers.0.self_attn", torch.nn.MultiheadAttention),
])
def test_each_family_can_be_left_out(family, module_name, torch_type):
    model = seqops.patch(tagger(), **{family: False})
    assert layer_types(model)[module_name] is torch_type
    others = {"lstm": "encoder.layers.0.self_attn", "attention": "rnn"}[family]
    assert layer_types(model)[others].__module__.startswith("seqops.")


def test_softmax_layers_on_request():
    model = seqops.patch(tagger(), softmax=True)
    assert layer_types(model)["heads.1"] is seqops.nn.Softmax
    assert seqops.unpatch(model) is model
    assert layer_types(model)["heads.1"] is torch.nn.Softmax


def test_every_drop_in_belongs_to_a_family():
    """A drop-in no keyword chooses could never be patched (nor unpatched)."""
    from seqops.integrations.torch_nn import KINDS

    chosen = {layer for layers in KINDS.values() for layer in layers}
    assert set(seqops.nn.DROP_INS) <= chosen


def test_unpatch_puts_back_the_same_torch_objects():
    model = tagger()
    originals = dict(model.named_modules())
    types, keys, text = layer_types(model), list(model.state_dict()), repr(model)
    encoder_layer = model.encoder.layers[0]
    fast_path = (encoder_layer.activation_relu_or_gelu, model.encoder.use_nested_tensor)
    seqops.patch(model, softmax=True)
    assert encoder_layer.activation_relu_or_gelu == 0
    assert seqops.unpatch(model) is model
    assert layer_types(model) == types
    assert all(module is originals[name] for name, module in model.named_modules())
    assert (encoder_layer.activation_relu_or_gelu, model.encoder.use_nested_tensor) == fast_path
    assert list(model.state_dict()) == keys and repr(model) == text
    with counting_seqops_calls() as calls:
        model(tokens())
    assert not calls, "an unpatched model runs no seqops op"


def test_patching_twice_then_unpatching_restores_the_fast_path_setting():
    model = tagger()
    setting = model.encoder.layers[0].activation_relu_or_gelu
    assert setting != 0
    seqops.patch(seqops.patch(model))
    seqops.unpatch(model)
    assert model.encoder.layers[0].activation_relu_or_gelu == setting


def test_unpatched_layers_keep_what_happened_while_patched():
    """Training, moves, mode changes and hooks made on the patched model survive unpatch."""
    model = tagger()
    lstm = model.rnn
    seqops.patch(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(tokens()).sum().backward()
    optimizer.step()
    trained = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.double().eval()
    seen = []
    model.rnn.register_forward_hook(lambda *args: seen.append(1))
    seqops.unpatch(model)
    assert model.rnn is lstm and type(lstm) is torch.nn.LSTM
    assert not lstm.training and lstm.weight_ih_l0.dtype == torch.float64
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.float(), trained[name].float(), rtol=0, atol=0)
    model(tokens())
    assert seen == [1], "the hook added while patched runs on the restored layer"


def test_an_optimizer_built_before_the_patch_trains_the_patched_model():
    model, twin = tagger(torch.float64), tagger(torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    seqops.patch(model)
    for _ in range(2):
        x = tokens()
        for net, opt in ((model, optimizer), (twin, twin_optimizer)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    untrained = tagger(torch.float64)
    for (name, ours), theirs in zip(model.named_parameters(), twin.parameters()):
        assert not torch.equal(ours, untrained.get_parameter(name)), f"{name} was not trained"
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12, msg=name)


def test_train_and_eval_reach_the_drop_ins():
    model = seqops.patch(tagger())
    model.eval()
    assert not model.rnn.training and not model.encoder.layers[0].self_attn.training
    model.train()
    assert model.rnn.training and model.cell.training


def test_state_dict_of_a_patched_model_loads_into_torchs_and_back():
    patched = seqops.patch(tagger())
    buffer = io.BytesIO()
    torch.save(patched.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(1)
    plain = Tagger()
    plain.load_state_dict(state)  # strict: same keys
    for (name, p), q in zip(patched.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(p, q), name
    torch.manual_seed(2)
    again = seqops.patch(Tagger())
    again.load_state_dict(plain.state_dict())
    x = tokens()
    torch.testing.assert_close(again(x), patched(x))


def test_a_bare_layer_gives_a_twin_that_shares_only_the_tensors():
    lstm = torch.nn.LSTM(4, 6)
    twin = seqops.patch(lstm)
    assert type(twin) is seqops.nn.LSTM and twin is not lstm
    assert all(p is q for p, q in zip(twin.parameters(), lstm.parameters()))
    twin.register_forward_hook(lambda *args: None)
    twin.register_buffer("scratch", torch.zeros(1), persistent=False)
    twin.extra = torch.nn.Linear(2, 2)
    assert not lstm._forward_hooks and "scratch" not in lstm._buffers
    assert "scratch" not in lstm._non_persistent_buffers_set and "extra" not in lstm._modules
    assert lstm._flat_weights is not twin._flat_weights
    assert seqops.unpatch(twin) is lstm
    assert "scratch" in lstm._non_persistent_buffers_set, "unpatch hands the twin's state to the torch layer"


def test_unpatch_leaves_layers_built_with_seqops():
    model = torch.nn.Sequential(seqops.nn.LSTM(4, 6), torch.nn.LSTM(6, 6))
    seqops.patch(model)
    seqops.unpatch(model)
    assert type(model[0]) is seqops.nn.LSTM and type(model[1]) is torch.nn.LSTM
