"""seqops.additive_attention as a PyTorch op: torch.library.opcheck of its forward and
backward ops, torch.compile(fullgraph=True), FakeTensorMode, torch.func (grad, vjp,
vmap; jvp where it works, a clear error where it does not), double backward refused, and
bad input refused with torch's exception types and messages naming the argument."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import seqops
from seqops.ops.additive import reference
from seqops.ops.additive.op import additive_attention_backward, additive_attention_forward
from compiled import assert_compiled_matches_eager
from devices import DEVICES, IMPLEMENTED, skip_unless_runnable

TRITON = "additive_attention/triton/fused"


def inputs(device, B=2, Lq=5, Lk=11, Dq=4, Dk=3, Dv=6, d=9, dtype=torch.float32):
    return [torch.randn(B, Lq, Dq, device=device, dtype=dtype), torch.randn(B, Lk, Dk, device=device, dtype=dtype),
            torch.randn(B, Lk, Dv, device=device, dtype=dtype), torch.randn(d, Dq, device=device, dtype=dtype) / 2,
            torch.randn(d, Dk, device=device, dtype=dtype) / 2, torch.randn(d, device=device, dtype=dtype),
            torch.randn(d, device=device, dtype=dtype), torch.randn(d, device=device, dtype=dtype)]


def padding(B, Lk, device):
    mask = torch.rand(B, 1, Lk, device=device) > 0.3
    mask[..., 0] = True  # no empty rows: opcheck compares without equal_nan
    return mask


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_forward_and_backward(device):
    skip_unless_runnable(device, "triton")
    for mask, need_weights, bias in ((None, False, True), (padding(2, 11, device), True, False)):
        args = inputs(device)
        if not bias:
            args[6] = args[7] = None
        leaves = [t if t is None else t.requires_grad_() for t in args]
        torch.library.opcheck(additive_attention_forward, (*leaves, mask, need_weights, TRITON))
        detached = [t if t is None else t.detach() for t in args]
        context, stats, weights = additive_attention_forward(*detached, mask, need_weights, TRITON)
        grad_weights = torch.randn_like(weights) if need_weights else None
        torch.library.opcheck(additive_attention_backward,
                              (torch.randn_like(context), grad_weights, *detached, mask, context, stats,
                               weights if need_weights else None, TRITON))


def attention_step(query, keys, w_query, w_key, v, b_query, mask):
    """A decoder step: its query attends over the encoder's outputs, keys as values."""
    context, weights = seqops.additive_attention(query, keys, keys, w_query, w_key, v, b_query, None, mask=mask,
                                                 need_weights=True)
    return torch.tanh(context).sum(-1) + weights.square().sum(-1)


@pytest.mark.parametrize("compiler, backend", [("aot_eager", "triton"), ("inductor", "triton"),
                                               ("aot_eager", "torch")])
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device, backend, compiler):
    skip_unless_runnable(device, backend)
    query, keys, _, w_query, w_key, v, b_query, _ = inputs(device, Lq=1)
    params = [t.requires_grad_() for t in (w_query, w_key, v, b_query)]
    assert_compiled_matches_eager(attention_step, (query, keys, *params, padding(2, 11, device)), params, backend,
                                  compiler, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", IMPLEMENTED)
@pytest.mark.parametrize("device", DEVICES)
def test_fake_tensors(device, backend):
    skip_unless_runnable(device, backend)
    args = inputs(device, dtype=torch.float16 if device == "cuda" else torch.float32)
    mask = padding(2, 11, device)[:, 0]
    with seqops.backend(backend):
        real = seqops.additive_attention(*args, mask=mask, need_weights=True)
        mode = FakeTensorMode()
        with mode:
            fake = seqops.additive_attention(*(mode.from_tensor(t) for t in args), mask=mode.from_tensor(mask),
                                             need_weights=True)
    assert [(t.shape, t.dtype, t.device) for t in fake] == [(t.shape, t.dtype, t.device) for t in real]


def _loss(backend):
    def loss(query, keys, values, w_query, w_key, v, b_query, b_key):
        with seqops.backend(backend):
            context, _ = seqops.additive_attention(query, keys, values, w_query, w_key, v, b_query, b_key)
        return (context * torch.linspace(-1, 1, context.shape[-1], dtype=context.dtype)).sum()
    return loss


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_torch_func_grad_vjp_and_vmap(backend):
    """torch.func.grad and vjp give the float64 reference's gradients; vmap over a batch of
    queries (and over per-sample weights) gives the unbatched results stacked."""
    skip_unless_runnable("cpu", backend)
    args = inputs("cpu")
    grads = torch.func.grad(_loss(backend), argnums=tuple(range(8)))(*args)
    grads_ref = torch.func.grad(_loss("reference"), argnums=tuple(range(8)))(*(t.double() for t in args))
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r.float(), rtol=1e-4, atol=1e-5)
    with seqops.backend(backend):
        context, pullback = torch.func.vjp(lambda q, w: seqops.additive_attention(q, *args[1:3], w, *args[4:])[0],
                                           args[0], args[3])
    grad_context = torch.randn_like(context)
    ref_q, ref_w = (t.double().requires_grad_() for t in (args[0], args[3]))
    ref_context, _ = reference.additive_attention(ref_q, *(t.double() for t in args[1:3]), ref_w,
                                                  *(t.double() for t in args[4:]))
    expected = torch.autograd.grad(ref_context, (ref_q, ref_w), grad_context.double())
    for g, r in zip(pullback(grad_context), expected):
        torch.testing.assert_close(g, r.float(), rtol=1e-4, atol=1e-5)

    queries = torch.randn(3, *args[0].shape)
    w_queries = torch.randn(3, *args[3].shape)
    with seqops.backend(backend):
        batched = torch.func.vmap(lambda q, w: seqops.additive_attention(q, *args[1:3], w, *args[4:])[0])(
            queries, w_queries)
        one_by_one = torch.stack([seqops.additive_attention(q, *args[1:3], w, *args[4:])[0]
                                  for q, w in zip(queries, w_queries)])
    torch.testing.assert_close(batched, one_by_one)
    # Per-sample gradients: vmap of grad.
    per_sample = torch.func.vmap(torch.func.grad(_loss(backend), argnums=3), in_dims=(0, None, None, None, None,
                                                                                      None, None, None))(
        queries, *args[1:])
    for q, g in zip(queries, per_sample):
        torch.testing.assert_close(g, torch.func.grad(_loss(backend), argnums=3)(q, *args[1:]), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_forward_mode(backend):
    """jvp: the composite backends differentiate forward as torch does (checked against the
    float64 reference); the fused kernels raise a clear error, never a zero tangent."""
    skip_unless_runnable("cpu", backend)
    args = inputs("cpu")
    tangents = [torch.randn_like(t) for t in args]
    fn = lambda *a: seqops.additive_attention(*a)[0]
    with seqops.backend(backend):
        if backend == "triton":
            with pytest.raises(RuntimeError, match="forward-mode AD .* not implemented"):
                torch.func.jvp(fn, tuple(args), tuple(tangents))
            return
        _, tangent = torch.func.jvp(fn, tuple(args), tuple(tangents))
    _, expected = torch.func.jvp(lambda *a: reference.additive_attention(*a)[0], tuple(t.double() for t in args),
                                 tuple(t.double() for t in tangents))
    torch.testing.assert_close(tangent, expected.float(), rtol=1e-4, atol=1e-5)


def test_double_backward_is_refused_clearly():
    skip_unless_runnable("cpu", "triton")
    args = [t.requires_grad_() for t in inputs("cpu")]
    with seqops.backend("triton"):
        context, _ = seqops.additive_attention(*args)
    (grad_query,) = torch.autograd.grad(context.sum(), args[0], create_graph=True)
    with pytest.raises(RuntimeError, match="no double backward"):
        grad_query.sum().backward()


def bad_calls():
    """(what is wrong, how to break a good call, exception type, message pattern)."""
    def replace(index, value):
        return lambda a: a.__setitem__(index, value)
    return [
        ("query not a tensor", replace(0, [[1.0]]), TypeError, "argument 'query' must be a torch.Tensor"),
        ("query 2-D", lambda a: a.__setitem__(0, a[0][0]), RuntimeError, "'query' must have 3 dims"),
        ("keys int", lambda a: a.__setitem__(1, a[1].long()), RuntimeError, "'keys' must be floating point"),
        ("values half", lambda a: a.__setitem__(2, a[2].half()), RuntimeError, "'values' must have query's dtype"),
        ("batch mismatch", lambda a: a.__setitem__(1, a[1][:1]), RuntimeError, "share the batch size"),
        ("values length", lambda a: a.__setitem__(2, a[2][:, :3]), RuntimeError, "'values' must have keys' length"),
        ("w_query width", lambda a: a.__setitem__(3, a[3][:, :2]), RuntimeError, "'w_query' must have shape"),
        ("w_key rows", lambda a: a.__setitem__(4, a[4][:3]), RuntimeError, "'w_key' must have shape"),
        ("b_key size", lambda a: a.__setitem__(7, a[7][:2]), RuntimeError, "'b_key' must have shape"),
        ("v 2-D", lambda a: a.__setitem__(5, a[5][None]), RuntimeError, "'v' must have 1 dims"),
    ]


@pytest.mark.parametrize("what, breaker, error, message", bad_calls(), ids=[c[0] for c in bad_calls()])
def test_bad_input(what, breaker, error, message):
    args = inputs("cpu")
    breaker(args)
    with pytest.raises(error, match=message):
        seqops.additive_attention(*args)


@pytest.mark.parametrize("mask, error, message", [
    (torch.ones(2, 11, dtype=torch.int64), RuntimeError, "'mask' must be bool"),
    (torch.ones(3, 11, dtype=torch.bool), RuntimeError, "does not broadcast to \\[B, Lq, Lk\\]"),
    (torch.ones(2, 5, 10, dtype=torch.bool), RuntimeError, "does not broadcast"),
    (torch.ones(1, 2, 5, 11, dtype=torch.bool), RuntimeError, "'mask' must be \\[Lk\\], \\[B, Lk\\]"),
    ("yes", TypeError, "argument 'mask' must be a torch.Tensor"),
], ids=["int", "batch", "length", "4-D", "str"])
def test_bad_mask(mask, error, message):
    with pytest.raises(error, match=message):
        seqops.additive_attention(*inputs("cpu"), mask=mask)


def test_bad_need_weights():
    with pytest.raises(TypeError, match="'need_weights' must be a bool"):
        seqops.additive_attention(*inputs("cpu"), need_weights=1)
