"""seqops.nn.AdditiveAttention: the Bahdanau and the Luong "concat" scores against the
layer written out in float64 PyTorch (nn.Linear projections, the [B, Lq, Lk, d] tensor),
its parameters, a decoder step with a 2-D query, and its gradients reaching every
parameter, on every backend that can run here."""
import pytest
import torch

import seqops
from accuracy import PooledResult, trials_needed
from devices import IMPLEMENTED, skip_unless_runnable


def textbook(module, query, keys, values, mask):
    """The layer as tutorials write it, from the module's parameters, in float64."""
    params = {name: p.double() for name, p in module.named_parameters()}
    if module.score == "bahdanau":
        projected_query = torch.nn.functional.linear(query, params["w_query.weight"], params.get("w_query.bias"))
        projected_keys = torch.nn.functional.linear(keys, params["w_key.weight"], params.get("w_key.bias"))
        hidden = torch.tanh(projected_query[:, :, None] + projected_keys[:, None])
    else:
        Lq, Lk = query.shape[1], keys.shape[1]
        pairs = torch.cat([query[:, :, None].expand(-1, -1, Lk, -1), keys[:, None].expand(-1, Lq, -1, -1)], -1)
        hidden = torch.tanh(torch.nn.functional.linear(pairs, params["w.weight"], params.get("w.bias")))
    scores = (hidden @ params["v"]).masked_fill(~mask[:, None, :], float("-inf"))
    weights = torch.softmax(scores, -1)
    return weights @ values, weights


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("score", ["bahdanau", "concat"])
@pytest.mark.parametrize("backend", IMPLEMENTED + ("auto",))
def test_matches_the_textbook_layer(backend, score, bias):
    skip_unless_runnable("cpu", backend)
    module = seqops.nn.AdditiveAttention(6, 5, 19, value_dim=7, bias=bias, score=score)
    names = [name for name, _ in module.named_parameters()]
    expected = ({"w_query.weight", "w_key.weight", "v"} | ({"w_query.bias", "w_key.bias"} if bias else set())
                if score == "bahdanau" else {"w.weight", "v"} | ({"w.bias"} if bias else set()))
    assert set(names) == expected
    pooled, trials, trial = {}, 1, 0
    while trial < trials:
        query, keys, values = torch.randn(2, 9, 6), torch.randn(2, 35, 5), torch.randn(2, 35, 7)
        mask = torch.arange(35)[None] < torch.tensor([[35], [12]])
        module.zero_grad()
        leaves = [t.clone().requires_grad_() for t in (query, keys, values)]
        with seqops.backend(backend):
            context, weights = module(*leaves, mask=mask, need_weights=True)
        grad_context, grad_weights = torch.randn_like(context), torch.randn_like(weights)
        ours = [context, weights] + list(torch.autograd.grad((context * grad_context).sum()
                                                             + (weights * grad_weights).sum(),
                                                             leaves + list(module.parameters())))
        leaves64 = [t.double().requires_grad_() for t in (query, keys, values)]
        module64 = module.double()
        ref = list(textbook(module64, *leaves64, mask))
        ref += list(torch.autograd.grad((ref[0] * grad_context.double()).sum() + (ref[1] * grad_weights.double()).sum(),
                                        leaves64 + list(module64.parameters())))
        module.float()
        for index, (out, expected_out) in enumerate(zip(ours, ref)):
            # The yardstick is the same textbook layer in float32.
            pooled.setdefault(index, []).append((out, expected_out))
        trials = max(trials, trials_needed({i: t for i, t in enumerate(ours)}))
        trial += 1
    labels = ["context", "weights", "d query", "d keys", "d values"] + [f"d {n}" for n in names]
    for index, pairs in pooled.items():
        out = torch.cat([o.detach().flatten() for o, _ in pairs])
        ref = torch.cat([r.detach().flatten() for _, r in pairs])
        # float32 against float64: the layer's few roundings per result, about 1e-6 relative.
        error = ((out.double() - ref).norm() / ref.norm()).item()
        assert error < 3e-6, f"{labels[index]}: relative error {error:.2e}"


def test_decoder_step_with_a_2d_query_and_keys_as_values():
    module = seqops.nn.AdditiveAttention(4, 6, 8)
    query, keys = torch.randn(3, 4), torch.randn(3, 10, 6)
    context, weights = module(query, keys, need_weights=True)
    assert context.shape == (3, 6) and weights.shape == (3, 10)
    full, full_weights = module(query[:, None], keys, keys, need_weights=True)
    torch.testing.assert_close(context, full[:, 0])
    torch.testing.assert_close(weights, full_weights[:, 0])
    assert module(query, keys)[1] is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="score must be one of"):
        seqops.nn.AdditiveAttention(4, 4, 4, score="dot")
    module = seqops.nn.AdditiveAttention(4, 6, 8, value_dim=5)
    with pytest.raises(RuntimeError, match="value_dim=5"):
        module(torch.randn(2, 1, 4), torch.randn(2, 3, 6), torch.randn(2, 3, 6))
    assert "AdditiveAttention" not in {cls.__name__ for cls in seqops.nn.DROP_INS.values()}


class Decoder(torch.nn.Module):
    """A decoder step of a seq2seq model: attention over the encoder outputs, then a GRU cell."""

    def __init__(self, score):
        super().__init__()
        self.attention = seqops.nn.AdditiveAttention(8, 6, 12, score=score)
        self.cell = torch.nn.GRUCell(6, 8)

    def forward(self, state, encoded, mask):
        context, weights = self.attention(state, encoded, mask=mask, need_weights=True)
        return self.cell(context, state) + weights.sum(-1, keepdim=True)


@pytest.mark.parametrize("score", ["bahdanau", "concat"])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_compiled_inside_a_model(backend, score):
    """The layer inside a model under torch.compile(fullgraph=True): eager's outputs and
    parameter gradients."""
    skip_unless_runnable("cpu", backend)
    torch._dynamo.reset()
    model = Decoder(score)
    state, encoded = torch.randn(3, 8), torch.randn(3, 13, 6)
    mask = torch.arange(13)[None] < torch.tensor([[13], [5], [1]])
    with seqops.backend(backend):
        expected = model(state, encoded, mask)
        out = torch.compile(model, fullgraph=True, backend="aot_eager")(state, encoded, mask)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    params = list(model.parameters())
    torch.testing.assert_close(torch.autograd.grad(out, params, grad), torch.autograd.grad(expected, params, grad))
