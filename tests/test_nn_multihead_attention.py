"""seqops.nn.MultiheadAttention as a drop-in for torch.nn.MultiheadAttention: the same
weights give the same outputs, weights and gradients (every input and parameter) as
torch's module in float64, within 2x torch's own float32 error; the state_dict moves both
ways; seqops.patch swaps it inside a model."""
import pytest
import torch

import seqops
from accuracy import assert_accurate
from devices import DEVICES, skip_unless_runnable

CONFIGS = {
    "default": dict(),
    "batch-first": dict(batch_first=True),
    "bias-kv-zero-attn": dict(add_bias_kv=True, add_zero_attn=True),
    "kdim-vdim": dict(kdim=12, vdim=20),
    "no-bias": dict(bias=False),
    "all": dict(batch_first=True, add_bias_kv=True, add_zero_attn=True, kdim=12, vdim=20),
}
EMBED, HEADS, N, L, S = 32, 4, 3, 7, 9


def make_pair(config: dict, device: str):
    """torch's module in float64 (the reference), its float32 twin (the yardstick), and
    seqops' module with the same weights in float32."""
    torch_fp32 = torch.nn.MultiheadAttention(EMBED, HEADS, **config).to(device)
    for p in torch_fp32.parameters():  # torch zero-initialises some biases: make them count
        torch.nn.init.normal_(p, std=0.3)
    reference = torch.nn.MultiheadAttention(EMBED, HEADS, **config).to(device).double()
    reference.load_state_dict(torch_fp32.state_dict())
    ours = seqops.nn.MultiheadAttention(EMBED, HEADS, **config).to(device)
    ours.load_state_dict(torch_fp32.state_dict())
    return reference, torch_fp32, ours


def inputs(config: dict, device: str, batched: bool = True, self_attention: bool = False):
    def shape(length, features):
        if not batched:
            return (length, features)
        return (N, length, features) if config.get("batch_first") else (length, N, features)

    query = torch.randn(shape(L, EMBED), device=device)
    if self_attention:
        return query, query, query
    return query, torch.randn(shape(S, config.get("kdim", EMBED)), device=device), \
        torch.randn(shape(S, config.get("vdim", EMBED)), device=device)


def masks(kind: str, device: str, length: int = S, batched: bool = True):
    if kind == "none":
        return {}
    padding_shape = (N, length) if batched else (length,)
    padding = torch.rand(padding_shape, device=device) > 0.7
    padding[..., 0] = False
    attn_bool = torch.rand(L, length, device=device) > 0.8
    attn_bool[:, 0] = False
    attn_float = torch.randn((N * HEADS if batched else HEADS), L, length, device=device)
    return {
        "key-padding-bool": dict(key_padding_mask=padding),
        "key-padding-float": dict(key_padding_mask=torch.zeros(padding_shape, device=device).masked_fill(padding, float("-inf"))),
        "attn-bool-2d": dict(attn_mask=attn_bool),
        "attn-float-3d": dict(attn_mask=attn_float),
        "both": dict(key_padding_mask=padding, attn_mask=attn_bool),
    }[kind]


def compare(reference, torch_fp32, ours, args, backend, **kwargs):
    """Outputs, weights and the gradients of the inputs and every parameter."""
    results = {}
    for name, module, cast in (("reference", reference, lambda t: t.double()), ("torch", torch_fp32, lambda t: t),
                               ("ours", ours, lambda t: t)):
        leaves = [cast(t.detach()).requires_grad_() for t in dict.fromkeys(args)]
        index = {id(t): i for i, t in enumerate(dict.fromkeys(args))}
        call_args = [leaves[index[id(t)]] for t in args]
        call_kwargs = {k: (cast(v) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in kwargs.items()}
        with seqops.backend(backend):
            out, weights = module(*call_args, **call_kwargs)
        torch.manual_seed(0)
        loss = (out * torch.randn_like(out)).sum()
        if weights is not None:
            loss = loss + (weights * torch.randn_like(weights)).sum()
        grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
        results[name] = [out, weights, *grads]
    names = ["output", "weights"] + [f"d input {i}" for i in range(len(dict.fromkeys(args)))] + \
            [f"d {n}" for n, _ in ours.named_parameters()]
    for name, o, r, t in zip(names, results["ours"], results["reference"], results["torch"]):
        assert (o is None) == (r is None), name
        if o is not None:
            assert_accurate(backend, name, o, r, t, torch.float32, S)


@pytest.mark.parametrize("need_weights", [False, True], ids=["fused", "need-weights"])
@pytest.mark.parametrize("mask_kind", ["none", "key-padding-bool", "key-padding-float", "attn-bool-2d", "attn-float-3d", "both"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_module(device, backend, config, mask_kind, need_weights):
    skip_unless_runnable(device, backend)
    reference, torch_fp32, ours = make_pair(CONFIGS[config], device)
    compare(reference, torch_fp32, ours, inputs(CONFIGS[config], device), backend,
            need_weights=need_weights, **masks(mask_kind, device))


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_per_head_weights_and_self_attention(device, average):
    skip_unless_runnable(device, "triton")
    reference, torch_fp32, ours = make_pair(CONFIGS["batch-first"], device)
    query = inputs(CONFIGS["batch-first"], device, self_attention=True)[0]
    compare(reference, torch_fp32, ours, (query, query, query), "triton", need_weights=True, average_attn_weights=average)


@pytest.mark.parametrize("need_weights", [False, True], ids=["fused", "need-weights"])
@pytest.mark.parametrize("device", DEVICES)
def test_is_causal_hint(device, need_weights):
    """is_causal says attn_mask is the causal mask: the fused path computes it in-kernel."""
    skip_unless_runnable(device, "triton")
    reference, torch_fp32, ours = make_pair(CONFIGS["default"], device)
    query = inputs(CONFIGS["default"], device, self_attention=True)[0]
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L, device=device)
    compare(reference, torch_fp32, ours, (query, query, query), "triton", attn_mask=causal, is_causal=True,
            need_weights=need_weights, **masks("key-padding-bool", device, length=L))


@pytest.mark.parametrize("device", DEVICES)
def test_is_causal_hint_never_overrides_the_mask(device):
    """A mask given with the is_causal hint that is not the causal mask: seqops attends by
    the mask (as torch does whenever it reads the mask: with a key padding mask, or
    need_weights), and takes the causal fast path only for the true causal mask (it
    counts one call either way)."""
    skip_unless_runnable(device, "triton")
    reference, torch_fp32, ours = make_pair(CONFIGS["default"], device)
    query = inputs(CONFIGS["default"], device, self_attention=True)[0]
    not_causal = torch.nn.Transformer.generate_square_subsequent_mask(L, device=device)
    not_causal[2, 3] = 0.0  # one future key visible
    with torch.no_grad(), seqops.backend("triton"):
        ours_out, _ = ours(query, query, query, attn_mask=not_causal, is_causal=True, need_weights=False)
    expected, _ = reference(query.double(), query.double(), query.double(), attn_mask=not_causal.double(),
                            need_weights=False)
    torch.testing.assert_close(ours_out.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask_kind", ["none", "key-padding-bool", "attn-float-3d"])
@pytest.mark.parametrize("device", DEVICES)
def test_unbatched_input(device, mask_kind):
    skip_unless_runnable(device, "triton")
    reference, torch_fp32, ours = make_pair(CONFIGS["bias-kv-zero-attn"], device)
    args = inputs(CONFIGS["bias-kv-zero-attn"], device, batched=False)
    compare(reference, torch_fp32, ours, args, "triton", need_weights=False, **masks(mask_kind, device, batched=False))


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_only_in_training(device):
    skip_unless_runnable(device, "triton")
    _, _, ours = make_pair({"dropout": 0.4}, device)
    args = inputs({}, device)
    with seqops.backend("triton"):
        ours.eval()
        eval_out, _ = ours(*args, need_weights=False)
        eval_again, _ = ours(*args, need_weights=False)
        ours.train()
        torch.manual_seed(3)
        train_out, _ = ours(*args, need_weights=False)
        torch.manual_seed(3)
        train_again, _ = ours(*args, need_weights=False)
    assert torch.equal(eval_out, eval_again) and torch.equal(train_out, train_again)
    assert not torch.allclose(train_out, eval_out)


def test_state_dict_moves_both_ways():
    theirs = torch.nn.MultiheadAttention(EMBED, HEADS, add_bias_kv=True, kdim=12, vdim=20, batch_first=True)
    ours = seqops.nn.MultiheadAttention(EMBED, HEADS, add_bias_kv=True, kdim=12, vdim=20, batch_first=True)
    assert isinstance(ours, torch.nn.MultiheadAttention)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, theirs.state_dict()[name]), name


def test_patch_keeps_the_parameters_an_optimizer_holds():
    layer = torch.nn.TransformerEncoderLayer(EMBED, HEADS, dim_feedforward=64, dropout=0.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(L, N, EMBED)
    expected = layer(x)
    seqops.patch(layer)
    assert type(layer.self_attn) is seqops.nn.MultiheadAttention
    assert all(any(p is q for q in optimizer.param_groups[0]["params"]) for p in layer.parameters())
    calls = []
    layer.self_attn.register_forward_hook(lambda *_: calls.append(1))
    with seqops.backend("triton" if seqops.dispatch.platform_reason("triton", x.device) is None else "torch"):
        out = layer(x)
    assert calls, "the patched layer must run seqops' attention"
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    optimizer.step()


@pytest.mark.parametrize("call, error", [
    (lambda m, q, k, v: m(q[0, 0], k, v), "query should be unbatched 2-D or batched 3-D"),
    (lambda m, q, k, v: m(q, k[0], v[0]), "key and value must be 3-D like query"),
    (lambda m, q, k, v: m(q[..., :5], k, v), "embed_dim 32"),
    (lambda m, q, k, v: m(q, k, v, key_padding_mask=torch.ones(2, S, dtype=torch.bool)), "key_padding_mask of shape"),
    (lambda m, q, k, v: m(q, k, v, attn_mask=torch.ones(L, L, dtype=torch.bool)), "attn_mask of shape"),
    (lambda m, q, k, v: m(q, k, v, key_padding_mask=torch.ones(N, S, dtype=torch.int64)), "only bool and floating"),
], ids=["query-4d", "key-2d", "embed-dim", "padding-shape", "attn-shape", "padding-dtype"])
def test_bad_input(call, error):
    module = seqops.nn.MultiheadAttention(EMBED, HEADS)
    with pytest.raises((ValueError, TypeError), match=error):
        call(module, *inputs({}, "cpu"))


def test_is_causal_needs_the_mask():
    module = seqops.nn.MultiheadAttention(EMBED, HEADS)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        module(*inputs({}, "cpu"), is_causal=True)
