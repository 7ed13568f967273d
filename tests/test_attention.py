"""seqops.scaled_dot_product_attention against the float64 reference, output and every
gradient (query, key, value and a float mask), on every backend that can run here, with
the 2x-of-torch error rule (tests/accuracy.py); torch's own op is the yardstick."""
import math

import pytest
import torch

import seqops
from seqops.ops.attention import reference, torch_impl
from accuracy import EPS, PooledResult, assert_accurate, relative_error
from devices import device_backend_params, skip_unless_runnable

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def skip_most_fp16_when_interpreted(device, dtype, case, kept) -> None:
    """fp16 and bf16 run the same kernels, differing only in the element type they load,
    multiply and store; the matrices of lengths, mask shapes and dropout are blind to it.
    Under the interpreter (CI's CPU time) fp16 takes the `kept` part of such a matrix while
    fp32 and bf16 walk it whole; on a GPU every dtype runs all of it."""
    if device == "cpu" and dtype == torch.float16 and case not in kept:
        pytest.skip("fp16 under the interpreter runs a part of this matrix (fp32 and bf16 run all of it)")


def randn(*shape, device, dtype=torch.float32):
    return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)


def check_attention(backend, query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
                    grad_out=None, pooled=None, lower_right=False):
    """Run seqops on `backend`; check the output and the gradients of every input that
    requires grad (a float attn_mask too) against the float64 reference. grad_out: the
    output's gradient, any layout (default: fresh random, contiguous). pooled: a dict
    name -> PooledResult to add this trial's results to instead of checking them (the
    caller checks the pool). lower_right: causal aligned bottom-right, seqops given
    torch's causal_lower_right bias (the public form of it), the reference and torch
    is_causal with the offset S - L (torch's own bias takes no enable_gqa)."""
    inputs = [t for t in (query, key, value, attn_mask) if t is not None and t.requires_grad]
    kwargs = dict(is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if lower_right:
        assert attn_mask is None and not is_causal
        kwargs.update(is_causal=True, causal_offset=key.shape[-2] - query.shape[-2])

    def run(fn, q, k, v, m):
        return fn(q, k, v, attn_mask=m, **kwargs)

    with seqops.backend(backend):
        if lower_right:
            from torch.nn.attention.bias import causal_lower_right

            out = seqops.scaled_dot_product_attention(query, key, value, scale=scale, enable_gqa=enable_gqa,
                                                      attn_mask=causal_lower_right(query.shape[-2], key.shape[-2]))
        else:
            out = run(seqops.scaled_dot_product_attention, query, key, value, attn_mask)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)

    as64 = {id(t): t.detach().double().cpu().requires_grad_() for t in inputs}
    q64, k64, v64 = (as64.get(id(t), t.detach().double().cpu()) for t in (query, key, value))
    m64 = None
    if attn_mask is not None:
        m64 = as64.get(id(attn_mask), attn_mask.detach().cpu() if attn_mask.dtype == torch.bool else attn_mask.detach().double().cpu())
    ref = run(reference.scaled_dot_product_attention, q64, k64, v64, m64)
    grads_ref = torch.autograd.grad(ref, [as64[id(t)] for t in inputs], grad_out.double().cpu())

    detached = {id(t): t.detach().requires_grad_() for t in inputs}
    q_t, k_t, v_t, m_t = (detached.get(id(t), t) if t is not None else None for t in (query, key, value, attn_mask))
    theirs = run(torch_impl.scaled_dot_product_attention, q_t, k_t, v_t, m_t)
    grads_theirs = torch.autograd.grad(theirs, [detached[id(t)] for t in inputs], grad_out)

    assert out.shape == theirs.shape and out.dtype == query.dtype and out.device == query.device
    names = {id(query): "d query", id(key): "d key", id(value): "d value", id(attn_mask): "d attn_mask"}
    length = key.shape[-2]
    one_key_each = length == 1 or (is_causal and query.shape[-2] == 1)
    if pooled is not None:
        assert not one_key_each
        pooled.setdefault("output", PooledResult()).add("output", out, ref, theirs)
        for t, g, g_ref, g_theirs in zip(inputs, grads, grads_ref, grads_theirs):
            pooled.setdefault(names[id(t)], PooledResult()).add(names[id(t)], g, g_ref, g_theirs)
        return out
    assert_accurate(backend, "output", out, ref, theirs, query.dtype, length)
    for t, g, g_ref, g_theirs in zip(inputs, grads, grads_ref, grads_theirs):
        assert g.shape == t.shape and g.dtype == t.dtype
        if one_key_each and t is not value:
            # Every query sees one key: softmax is the constant 1, so these gradients are
            # exactly 0 and any result is rounding noise, which a relative error cannot judge.
            assert_zero_up_to_rounding(names[id(t)], g, grad_out, value, key if t is query else query)
        else:
            assert_accurate(backend, names[id(t)], g, g_ref, g_theirs, query.dtype, length)
    return out


def assert_zero_up_to_rounding(name, grad, grad_out, value, other):
    """|grad| within a few roundings of the terms it sums: dS = dP - delta is the
    difference of two E_v-term dot products of grad_out and value, times `other`."""
    eps = EPS[grad.dtype]
    terms = value.shape[-1] * other.shape[-2]
    bound = 8 * eps * terms * grad_out.abs().max() * value.abs().max() * other.abs().max()
    assert grad.abs().max() <= bound, f"{name}: {grad.abs().max():.2e} where the exact gradient is 0 (bound {bound:.2e})"


LENGTHS = [(1, 1), (1, 129), (17, 1), (17, 17), (17, 127), (127, 129), (129, 17)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda ls: f"L{ls[0]}-S{ls[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_lengths(device, backend, dtype, lengths, causal):
    skip_unless_runnable(device, backend)
    skip_most_fp16_when_interpreted(device, dtype, lengths, [(17, 127), (127, 129), (129, 17)])
    L, S = lengths
    q, k, v = (randn(2, 3, n, 40, device=device, dtype=dtype) for n in (L, S, S))
    check_attention(backend, q, k, v, is_causal=causal)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_long_sequence_batch_and_heads_of_one(device, backend, causal):
    """One (batch, head) pair over many tiles: under the interpreter 300 positions, 19 key
    blocks of 16 and 10 query blocks of 32; on a GPU 600."""
    skip_unless_runnable(device, backend)
    length = 300 if device == "cpu" else 600
    q, k, v = (randn(1, 1, length, 64, device=device, dtype=torch.float16) for _ in range(3))
    check_attention(backend, q, k, v, is_causal=causal)


@pytest.mark.parametrize("head_dims", [(16, 16), (40, 24), (72, 72), (96, 128), (160, 40), (256, 256)],
                         ids=lambda d: f"E{d[0]}-Ev{d[1]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_head_dims(device, backend, dtype, head_dims):
    skip_unless_runnable(device, backend)
    E, Ev = head_dims
    q, k = randn(2, 2, 33, E, device=device, dtype=dtype), randn(2, 2, 47, E, device=device, dtype=dtype)
    v = randn(2, 2, 47, Ev, device=device, dtype=dtype)
    if backend == "triton" and dtype == torch.float32 and max(E, Ev) > 128:
        with seqops.backend(backend), pytest.raises(seqops.BackendUnavailable, match="float32 head dims up to 128"):
            seqops.scaled_dot_product_attention(q, k, v, is_causal=True)
        return
    check_attention(backend, q, k, v, is_causal=True)


# Entries of a float mask's gradient that the fp32 check pools trials up to.
MASK_GRADIENT_ENTRIES = 300

MASK_SHAPES = {
    "keys": (47,),
    "queries-keys": (33, 47),
    "batch-1-1-keys": (2, 1, 1, 47),
    "1-heads-1-keys": (1, 3, 1, 47),
    "batch-1-queries-keys": (2, 1, 33, 47),
    "full": (2, 3, 33, 47),
}


@pytest.mark.parametrize("mask_shape", list(MASK_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_bool_mask(device, backend, dtype, mask_shape):
    skip_unless_runnable(device, backend)
    skip_most_fp16_when_interpreted(device, dtype, mask_shape, ["batch-1-queries-keys", "full"])
    q, k, v = (randn(2, 3, n, 40, device=device, dtype=dtype) for n in (33, 47, 47))
    mask = torch.rand(MASK_SHAPES[mask_shape], device=device) > 0.3
    check_attention(backend, q, k, v, attn_mask=mask)


@pytest.mark.parametrize("mask_shape", list(MASK_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_float_mask_with_gradient(device, backend, dtype, mask_shape):
    """An additive mask that requires grad gets dS summed over the dims it broadcasts
    along. (A mask broadcast along the keys only shifts whole rows, which softmax
    ignores: its gradient is exactly 0, so those shapes have no error to measure.)"""
    skip_unless_runnable(device, backend)
    skip_most_fp16_when_interpreted(device, dtype, mask_shape, ["queries-keys", "full"])
    shape = MASK_SHAPES[mask_shape]
    # A mask broadcast over the queries has few gradient entries (47 to 141), each a sum
    # of many dS: in fp32 its error ratio to torch's reached 1.83 in 3 seeds (d attn_mask
    # of "batch-1-1-keys", seed 3): pool trials up to ~300 entries, as tests/accuracy.py
    # does for small results.
    trials = -(-MASK_GRADIENT_ENTRIES // math.prod(shape)) if dtype == torch.float32 else 1
    pooled = {}
    for _ in range(trials):
        q, k, v = (randn(2, 3, n, 40, device=device, dtype=dtype) for n in (33, 47, 47))
        mask = torch.randn(shape, device=device, dtype=dtype)
        mask = mask.masked_fill(torch.rand_like(mask) < 0.1, float("-inf")).requires_grad_()
        check_attention(backend, q, k, v, attn_mask=mask, pooled=pooled)
    for name, result in pooled.items():
        result.check(backend, name, dtype, 47)


@pytest.mark.parametrize("variant, L", [("fused", 40), ("decode", 4)])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_fp32_gradients_of_peaked_scores(device, variant, L):
    """Scores spread over tens of units (an additive mask of std 8; trained models' logits
    reach such ranges): the backward recomputes each probability as exp(s - lse), so lse's
    own rounding reaches every probability of its row. Saved in fp32 (the ulp of a number
    of tens of units) it put dV and the mask's gradient at 4-8x torch's error; saved in
    float64 they are within the rule (kernels/attention/common.py, lse_dtype). Both the
    fused forward and the decode variant's split forward and combine save it."""
    skip_unless_runnable(device, "triton")
    q, k, v = (randn(2, 3, n, 32, device=device) for n in (L, 200, 200))
    mask = (8 * torch.randn(2, 3, L, 200, device=device)).requires_grad_()
    with seqops.backend("triton", variant=variant):
        check_attention("triton", q, k, v, attn_mask=mask)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_rows_with_every_key_masked(device, backend, dtype):
    """Such rows give 0 and pass no gradient, as torch does."""
    skip_unless_runnable(device, backend)
    q, k, v = (randn(2, 3, n, 40, device=device, dtype=dtype) for n in (33, 47, 47))
    mask = torch.rand(2, 1, 33, 47, device=device) > 0.3
    mask[:, :, 5] = False
    mask[1, :, :20] = False
    out = check_attention(backend, q, k, v, attn_mask=mask)
    assert (out[:, :, 5] == 0).all() and (out[1, :, :20] == 0).all()
    float_mask = torch.zeros(33, 47, device=device, dtype=dtype)
    float_mask[7] = float("-inf")
    check_attention(backend, q, k, v, attn_mask=float_mask.requires_grad_())


@pytest.mark.parametrize("lengths", [(33, 47), (47, 33)], ids=lambda ls: f"L{ls[0]}-S{ls[1]}")
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_causal_with_a_mask_applies_both(device, backend, mask_kind, lengths):
    skip_unless_runnable(device, backend)
    L, S = lengths
    q, k, v = (randn(2, 3, n, 40, device=device) for n in (L, S, S))
    if mask_kind == "bool":
        mask = torch.rand(L, S, device=device) > 0.3
    else:
        mask = torch.randn(2, 1, L, S, device=device, requires_grad=True)
    check_attention(backend, q, k, v, attn_mask=mask, is_causal=True)


@pytest.mark.parametrize("heads", [(6, 2), (6, 3), (4, 1), (3, 3)], ids=lambda h: f"Hq{h[0]}-Hkv{h[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_grouped_query_attention(device, backend, dtype, heads):
    skip_unless_runnable(device, backend)
    Hq, Hkv = heads
    q = randn(2, Hq, 33, 40, device=device, dtype=dtype)
    k, v = randn(2, Hkv, 47, 40, device=device, dtype=dtype), randn(2, Hkv, 47, 24, device=device, dtype=dtype)
    mask = torch.rand(1, Hq, 33, 47, device=device) > 0.2
    check_attention(backend, q, k, v, attn_mask=mask, is_causal=True, enable_gqa=True)


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_non_contiguous_inputs_from_a_projection(device, backend):
    """q, k, v as a model makes them: one projection viewed as [B, L, H, E] and transposed."""
    skip_unless_runnable(device, backend)
    x = torch.randn(2, 33, 48, device=device)
    w = torch.randn(3 * 4 * 16, 48, device=device, requires_grad=True)
    q, k, v = (x @ w.T).view(2, 33, 3, 4, 16).unbind(2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    assert not q.is_contiguous()
    check_attention(backend, q, k, v, is_causal=True)


@pytest.mark.parametrize("shapes", [
    ((6, 33, 40), (6, 47, 40), (6, 47, 24)),
    ((33, 40), (47, 40), (47, 24)),
    ((2, 3, 33, 40), (1, 3, 47, 40), (1, 3, 47, 40)),
    ((2, 3, 33, 40), (3, 47, 40), (3, 47, 40)),
    ((2, 2, 3, 33, 40), (2, 2, 3, 47, 40), (2, 2, 3, 47, 16)),
], ids=["3d", "2d", "broadcast-batch", "broadcast-missing-batch", "5d"])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_leading_dims(device, backend, shapes):
    skip_unless_runnable(device, backend)
    q, k, v = (randn(*s, device=device) for s in shapes)
    check_attention(backend, q, k, v)


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_mask_broadcast_along_a_middle_dim(device, backend):
    skip_unless_runnable(device, backend)
    q, k, v = (randn(2, 2, 3, n, 40, device=device) for n in (33, 47, 47))
    mask = torch.randn(2, 1, 3, 33, 47, device=device, requires_grad=True)
    check_attention(backend, q, k, v, attn_mask=mask)


@pytest.mark.parametrize("scale", [0.05, 1.0])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_scale(device, backend, scale):
    skip_unless_runnable(device, backend)
    q, k, v = (randn(2, 3, n, 40, device=device) for n in (33, 47, 47))
    check_attention(backend, q, k, v, scale=scale, is_causal=True)


@pytest.mark.parametrize("shapes", [((2, 3, 0, 40), (2, 3, 47, 40)), ((2, 3, 33, 40), (2, 3, 0, 40)),
                                    ((0, 3, 33, 40), (0, 3, 47, 40))], ids=["L0", "S0", "B0"])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_empty(device, backend, shapes):
    skip_unless_runnable(device, backend)
    q_shape, k_shape = shapes
    q, k, v = randn(*q_shape, device=device), randn(*k_shape, device=device), randn(*k_shape, device=device)
    with seqops.backend(backend):
        out = seqops.scaled_dot_product_attention(q, k, v)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.sum(), (q, k, v), allow_unused=True)
    for g, t in zip(grads, (q, k, v)):
        assert g is None or (g.shape == t.shape and not g.any())


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_zero_head_dim(device, backend, is_causal):
    """E = 0: every score is 0, so torch averages the values (of the keys a query may see);
    the default scale is 1 there, not 1/sqrt(0) (the reference backend once divided by zero)."""
    skip_unless_runnable(device, backend)
    q, k, v = randn(2, 3, 6, 0, device=device), randn(2, 3, 7, 0, device=device), randn(2, 3, 7, 5, device=device)
    with seqops.backend(backend):
        out = seqops.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), v)[0], torch.autograd.grad(expected.sum(), v)[0])


# Dropout: no torch op takes a given dropout mask, so these compare with the reference
# run on the kernel's own mask under fixed per-dtype tolerances (measured errors are
# 2-3x smaller; a wrong mask gives errors of order 1).
DROPOUT_TOLERANCE = {torch.float32: 8 * EPS[torch.float32], torch.float16: EPS[torch.float16],
                     torch.bfloat16: EPS[torch.bfloat16]}


def dropped_probabilities(backend, q, k, p, causal, seed):
    """The kernel's attention probabilities after dropout, read out by attending over
    v = identity with the dropout seed of the call under test."""
    S = k.shape[-2]
    eye = torch.eye(S, device=q.device, dtype=q.dtype).expand(*k.shape[:-2], S, S)
    torch.manual_seed(seed)
    with seqops.backend(backend):
        return seqops.scaled_dot_product_attention(q, k, eye, dropout_p=p, is_causal=causal)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_dropout_is_reproducible_and_keeps_the_right_share(device, backend, dtype, causal):
    skip_unless_runnable(device, backend)
    skip_most_fp16_when_interpreted(device, dtype, causal, [True])
    q, k, v = (randn(2, 3, n, 40, device=device, dtype=dtype) for n in (70, 45, 45))
    p = 0.3
    outs = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        with seqops.backend(backend):
            outs.append(seqops.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal))
    assert torch.equal(outs[0], outs[1]), "the same seed must give the same result"
    assert not torch.equal(outs[0], outs[2]), "another seed must give another mask"
    visible = torch.ones(70, 45, dtype=torch.bool, device=device)
    if causal:
        visible = visible.tril()
    kept = dropped_probabilities(backend, q, k, p, causal, 11)[..., visible] != 0
    sigma = math.sqrt(p * (1 - p) / kept.numel())
    assert abs((1 - kept.float().mean().item()) - p) < 5 * sigma


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_dropout_backward_uses_the_forward_mask(device, backend, dtype, causal):
    skip_unless_runnable(device, backend)
    skip_most_fp16_when_interpreted(device, dtype, causal, [False])
    if backend in ("torch", "reference", "auto"):
        pytest.skip("torch's dropout cannot be read out through the identity trick; its own tests cover it")
    q, k, v = (randn(2, 3, n, 40, device=device, dtype=dtype) for n in (70, 45, 45))
    p, seed = 0.3, 5
    keep = dropped_probabilities(backend, q, k, p, causal, seed) != 0
    torch.manual_seed(seed)
    with seqops.backend(backend):
        out = seqops.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    q64, k64, v64 = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    ref = reference.scaled_dot_product_attention(q64, k64, v64, dropout_p=p, is_causal=causal, dropout_keep=keep.cpu())
    grads_ref = torch.autograd.grad(ref, (q64, k64, v64), grad_out.double().cpu())
    for name, o, r in zip(["output", "d query", "d key", "d value"], (out, *grads), (ref, *grads_ref)):
        error = relative_error(o, r)
        assert error <= DROPOUT_TOLERANCE[dtype], f"{name}: relative error {error:.2e} with the forward's mask"
