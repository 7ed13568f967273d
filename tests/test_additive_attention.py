"""seqops.additive_attention against the float64 reference (the textbook formulation with
the [B, Lq, Lk, d] pre-activations in memory): the context, the weights and the gradients
of every input (query, keys, values, w_query, w_key, v, b_query, b_key), on every backend
that can run here, within 2x the error of the plain-PyTorch implementation in the same
dtype (tests/accuracy.py). Shapes are awkward on purpose: a decoder step (Lq = 1), Lk and
d not multiples of any tile, masks that leave one key or none."""
import pytest
import torch

import seqops
from seqops.ops.additive import contract, reference, torch_impl
from accuracy import PooledResult, trials_needed
from devices import device_backend_params, skip_unless_runnable

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
NAMES = ("query", "keys", "values", "w_query", "w_key", "v", "b_query", "b_key")


def make_inputs(B, Lq, Lk, Dq, Dk, Dv, hidden, device, dtype=torch.float32, bias=True):
    """The op's tensors, scaled as nn.Linear initialises them so the scores vary by O(1)."""
    tensors = [torch.randn(B, Lq, Dq), torch.randn(B, Lk, Dk), torch.randn(B, Lk, Dv),
               torch.randn(hidden, Dq) / Dq**0.5, torch.randn(hidden, Dk) / Dk**0.5, torch.randn(hidden),
               torch.randn(hidden) if bias else None, torch.randn(hidden) if bias else None]
    return [None if t is None else t.to(device, dtype) for t in tensors]


def run(function, inputs, mask, need_weights, backend=None):
    if backend is None:
        return function(*inputs, mask=mask, need_weights=need_weights)
    with seqops.backend(backend):
        return function(*inputs, mask=mask, need_weights=need_weights)


# float32 results are judged over 3x the pooled entries the rule asks for: its 2x margin
# over torch is a ratio of two errors of a few roundings each, and over the 37 entries of
# a bias gradient that ratio scatters widely (one failure in about 20 runs, of errors
# both near 1e-7); fp16 and bf16 errors are the final rounding, the same for both.
FP32_POOLING = 3


def check(backend, make, mask_fn=None, need_weights=False, dtype=torch.float32):
    """Run seqops on `backend`, the reference in float64 and the torch implementation in
    `dtype` on the same inputs (fresh ones per trial, pooled until every result has enough
    entries to judge); check the context, the weights (when asked for) and every gradient
    with the 2x rule. The loss weighs the context (and the weights) by fresh random tensors."""
    pooled, trials, trial = {}, 1, 0
    while trial < trials:
        inputs = make()
        B, Lq, Lk = inputs[0].shape[0], inputs[0].shape[1], inputs[1].shape[1]
        mask = mask_fn(B, Lq, Lk, inputs[0].device) if mask_fn is not None else None
        grad_context = torch.randn(B, Lq, inputs[2].shape[2], dtype=torch.float64)
        grad_weights = torch.randn(B, Lq, Lk, dtype=torch.float64)
        results = {}
        for name, function, cast, chosen in (("ours", seqops.additive_attention, dtype, backend),
                                             ("reference", reference.additive_attention, torch.float64, None),
                                             ("torch", torch_impl.additive_attention, dtype, None)):
            leaves = [None if t is None else t.detach().to(cast).requires_grad_() for t in inputs]
            given_mask = mask if name == "ours" or mask is None else contract.mask_3d(mask, B, Lq, Lk)
            context, weights = run(function, leaves, given_mask, need_weights, chosen)
            assert context.dtype == cast and context.shape == (B, Lq, inputs[2].shape[2])
            loss = (context.double() * grad_context.to(context.device)).sum()
            outputs = {"context": context}
            if need_weights:
                assert weights.dtype == cast and weights.shape == (B, Lq, Lk)
                loss = loss + (weights.double() * grad_weights.to(context.device)).sum()
                outputs["weights"] = weights
            else:
                assert weights is None
            present = [(n, t) for n, t in zip(NAMES, leaves) if t is not None]
            grads = torch.autograd.grad(loss, [t for _, t in present])
            for (n, t), g in zip(present, grads):
                assert g.shape == t.shape and g.dtype == t.dtype, n
            outputs.update({f"d {n}": g for (n, _), g in zip(present, grads)})
            results[name] = outputs
        for name, out in results["ours"].items():
            pooled.setdefault(name, PooledResult()).add(name, out, results["reference"][name], results["torch"][name])
        # A context row whose query sees no key is an exact 0 in every implementation and
        # tells nothing of accuracy: count the context's other entries only (a decoder
        # step with empty rows keeps 11 of its 33; pooled over 3 trials as if all 33
        # counted, its ratio to torch's scattered from 0.31 to 1.02 in 12 seeds and
        # passed 2 at seed 2123691146).
        reference_context = results["reference"]["context"]
        sizes = dict(results["ours"], context=reference_context[reference_context != 0])
        trials = max(trials, trials_needed(sizes) * (FP32_POOLING if dtype == torch.float32 else 1))
        trial += 1
    for name, result in pooled.items():
        result.check(backend, name, dtype, inputs[1].shape[1] * inputs[6 if inputs[6] is not None else 5].shape[0])
    return pooled


def key_padding(B, Lq, Lk, device):
    """[B, Lk]: each batch entry sees a random prefix of its keys, at least one."""
    lengths = torch.randint(1, Lk + 1, (B,))
    return (torch.arange(Lk)[None, :] < lengths[:, None]).to(device)


def one_key(B, Lq, Lk, device):
    """[B, Lk]: each batch entry sees one key, somewhere in the middle of a tile."""
    return (torch.arange(Lk)[None, :] == torch.randint(0, Lk, (B, 1))).to(device)


def random_with_empty_rows(B, Lq, Lk, device):
    """[B, Lq, Lk]: random, with some query rows that see no key at all (in every other
    batch entry, so that a decoder step, Lq = 1, has rows of both kinds)."""
    mask = torch.rand(B, Lq, Lk) > 0.5
    mask[::2, ::3] = False
    return mask.to(device)


MASKS = {"none": None, "padding": key_padding, "one-key": one_key, "empty-rows": random_with_empty_rows}
# (B, Lq, Lk, Dq, Dk, Dv, d): a decoder step, and blocks of queries and keys that end
# mid-tile (the kernels' tiles are 16 queries x 32 keys x 16 hidden units).
SHAPES = {"decoder-step": (3, 1, 45, 7, 9, 11, 37), "block": (2, 19, 45, 7, 9, 11, 37)}


@pytest.mark.parametrize("mask", MASKS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_accuracy(device, backend, dtype, shape, mask):
    skip_unless_runnable(device, backend)
    check(backend, lambda: make_inputs(*SHAPES[shape], device, dtype), MASKS[mask], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_weights_and_their_gradient(device, backend, dtype):
    """need_weights: the weights are checked too, and a loss on them reaches every input."""
    skip_unless_runnable(device, backend)
    check(backend, lambda: make_inputs(2, 17, 33, 6, 5, 16, 24, device, dtype), key_padding, need_weights=True,
          dtype=dtype)


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_no_biases_and_long_keys(device, backend):
    skip_unless_runnable(device, backend)
    # Values wider than 64 columns: the kernels then take hidden units 8 at a time (50 = 6 * 8 + 2).
    check(backend, lambda: make_inputs(1, 3, 100, 4, 4, 70, 50, device, bias=False), key_padding)


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_row_with_no_key_gives_zeros(device, backend):
    """A query row that sees no key gets context 0 and weights 0 (as SDPA), not NaN, and
    its query gets gradient 0; every other row is unaffected."""
    skip_unless_runnable(device, backend)
    inputs = [t.requires_grad_() for t in make_inputs(2, 5, 20, 4, 4, 6, 8, device)]
    mask = torch.rand(2, 5, 20, device=device) > 0.3
    mask[1, 2] = False
    with seqops.backend(backend):
        context, weights = seqops.additive_attention(*inputs, mask=mask, need_weights=True)
    assert torch.equal(context[1, 2], torch.zeros_like(context[1, 2]))
    assert torch.equal(weights[1, 2], torch.zeros_like(weights[1, 2]))
    assert context.isfinite().all() and weights.isfinite().all()
    (grad_query,) = torch.autograd.grad(context.sum() + weights.square().sum(), inputs[0])
    assert torch.equal(grad_query[1, 2], torch.zeros_like(grad_query[1, 2]))
    assert grad_query.isfinite().all() and grad_query.abs().sum() > 0
    # No key at all: everything is 0.
    no_keys = make_inputs(2, 5, 0, 4, 4, 6, 8, device)
    with seqops.backend(backend):
        context, weights = seqops.additive_attention(*no_keys, need_weights=True)
    assert context.shape == (2, 5, 6) and not context.any() and weights.shape == (2, 5, 0)


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_strided_expanded_and_transposed_inputs(device, backend):
    """Inputs as views: a transposed query, keys expanded over the batch, values a slice
    of a wider tensor, w_query a column slice, w_key transposed, v a strided slice."""
    skip_unless_runnable(device, backend)

    def make():
        query = torch.randn(2, 7, 13, device=device).transpose(1, 2)           # [2, 13, 7]
        keys = torch.randn(1, 40, 9, device=device).expand(2, 40, 9)
        values = torch.randn(2, 40, 30, device=device)[:, :, 3:23]
        w_query = (torch.randn(33, 14, device=device) / 3)[:, ::2]              # [33, 7]
        w_key = (torch.randn(9, 33, device=device) / 3).t()                     # [33, 9]
        v = torch.randn(66, device=device)[::2]
        return [query, keys, values, w_query, w_key, v, torch.randn(33, device=device), None]

    check(backend, make, lambda B, Lq, Lk, device: (torch.rand(1, Lq, Lk) > 0.2).to(device).expand(B, Lq, Lk))


def test_float64_goes_to_torch_and_triton_refuses_it():
    inputs = make_inputs(1, 2, 3, 4, 4, 4, 4, "cpu", torch.float64)
    context, _ = seqops.additive_attention(*inputs)
    assert context.dtype == torch.float64
    with seqops.backend("triton"), pytest.raises(seqops.BackendUnavailable, match="float64"):
        seqops.additive_attention(*inputs)


def test_torch_implementation_bounds_memory_by_blocks(monkeypatch):
    """The torch backend's blocks over Lq, recomputed in the backward, give the reference's
    results (here with blocks of 2 queries)."""
    monkeypatch.setattr(torch_impl, "BLOCK_ELEMENTS", 2 * 2 * 11 * 6)
    inputs = [t.double().requires_grad_() for t in make_inputs(2, 7, 11, 3, 4, 5, 6, "cpu")]
    mask = random_with_empty_rows(2, 7, 11, "cpu")
    ours = torch_impl.additive_attention(*inputs, mask=mask, need_weights=True)
    theirs = reference.additive_attention(*inputs, mask=mask, need_weights=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(ours[0].sum() + ours[1].square().sum(), inputs)
    grads_ref = torch.autograd.grad(theirs[0].sum() + theirs[1].square().sum(), inputs)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)
    # torch.func refuses checkpointing's hooks: under it the blocks keep their activations.
    loss = lambda implementation: (lambda *a: implementation(*a, mask=mask)[0].sum())
    detached = [t.detach() for t in inputs]
    grads = torch.func.grad(loss(torch_impl.additive_attention), argnums=(0, 3))(*detached)
    grads_ref = torch.func.grad(loss(reference.additive_attention), argnums=(0, 3))(*detached)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("sizes", [(2, 3, 11, 5, 0), (2, 3, 11, 0, 4), (2, 0, 11, 5, 4), (0, 3, 11, 5, 4)],
                         ids=["d0", "Dv0", "Lq0", "B0"])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_empty_sizes(device, backend, sizes):
    """Sizes of 0 where torch's formulation takes them: no hidden units (every score 0, so
    uniform weights), no value columns, no queries, no batch; results and gradients as the
    float64 reference gives them."""
    skip_unless_runnable(device, backend)
    B, Lq, Lk, Dv, hidden = sizes
    inputs = [t.requires_grad_() for t in make_inputs(B, Lq, Lk, 3, 4, Dv, hidden, device)]
    with seqops.backend(backend):
        context, weights = seqops.additive_attention(*inputs, need_weights=True)
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    context_ref, weights_ref = reference.additive_attention(*inputs64, need_weights=True)
    torch.testing.assert_close(context, context_ref.float())
    torch.testing.assert_close(weights, weights_ref.float())
    loss = lambda c, w: c.sum() + (w * torch.arange(Lk, dtype=w.dtype, device=w.device)).sum()
    grads = torch.autograd.grad(loss(context, weights), inputs)
    grads_ref = torch.autograd.grad(loss(context_ref, weights_ref), inputs64)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r.float())
