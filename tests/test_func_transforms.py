"""Every op under torch.func (grad, vjp, jvp, vmap, jacrev, hessian) and forward-mode AD,
against the float64 reference differentiated the same way: forward mode gives the true
tangents (never zeros), reverse mode through torch.func gives autograd's gradients, vmap
gives the loop's results, and what is not implemented raises a clear error."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, hessian, jacrev, jvp, vjp, vmap

import seqops
from devices import DEVICES, skip_unless_runnable

BACKENDS = ["triton", "torch", "reference"]


def close(ours, expected, dtype=torch.float32):
    """Tangents and gradients of fp32 results, against float64: a few fp32 roundings of
    the values that make them up (these are compositions of the op's own rounding)."""
    torch.testing.assert_close(ours.double(), expected.double(), rtol=1e-4, atol=1e-5)


def softmax_call(x):
    return seqops.softmax(x, -1, scale=0.7, mask=MASK.to(x.device), causal=True)


MASK = torch.tensor([True, False, True, True, True, True, True, False, True])


def attention_call(q, k, v):
    return seqops.scaled_dot_product_attention(q, k, v, is_causal=True)


def cell_call(x, h, c, w_ih, w_hh, b_ih, b_hh):
    h1, c1 = seqops.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    return h1 * 2 + c1


# The cells with one state: seqops.<name>(x, h, w_ih, w_hh, b_ih, b_hh), and their gate count.
HIDDEN_CELLS = {"gru_cell": 3, "rnn_tanh_cell": 1, "rnn_relu_cell": 1}
OPS = ["softmax", "attention", "lstm_cell", *HIDDEN_CELLS]


def operands(name, device, dtype=torch.float32):
    g = lambda *shape, s=1.0: (torch.randn(*shape, dtype=torch.float64) * s).to(device, dtype)
    if name == "softmax":
        return softmax_call, (g(2, 5, 9),)
    if name == "attention":
        return attention_call, (g(2, 3, 7, 16), g(2, 3, 11, 16), g(2, 3, 11, 16))
    if name in HIDDEN_CELLS:
        G = HIDDEN_CELLS[name] * 7
        return getattr(seqops, name), (g(3, 5), g(3, 7), g(G, 5, s=0.4), g(G, 7, s=0.4), g(G, s=0.4), g(G, s=0.4))
    return cell_call, (g(3, 5), g(3, 7), g(3, 7), g(28, 5, s=0.4), g(28, 7, s=0.4), g(28, s=0.4), g(28, s=0.4))


def in_float64(fn, args, transform):
    """transform(fn, args) on the reference backend in float64: the ground truth."""
    with seqops.backend("reference"):
        return transform(fn, tuple(a.detach().double() for a in args))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_jvp_gives_the_true_tangent(device, backend, op):
    skip_unless_runnable(device, backend)
    fn, args = operands(op, device)
    tangents = tuple(torch.randn_like(a) for a in args)
    transform = lambda f, a: jvp(f, a, tuple(t.to(a[0].dtype) for t in tangents))
    with seqops.backend(backend):
        try:
            out, tangent = transform(fn, args)
        except RuntimeError as error:
            if backend == "torch" and "does not support it because it has not been implemented" in str(error):
                pytest.skip(f"torch's own op has no forward AD here: {str(error).splitlines()[0]}")
            raise
    ref_out, ref_tangent = in_float64(fn, args, transform)
    assert tangent.abs().max() > 0
    close(out, ref_out)
    close(tangent, ref_tangent)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_forward_ad_dual_tensors(device, op):
    """torch.autograd.forward_ad (dual tensors), the other forward-mode API."""
    skip_unless_runnable(device, "triton")
    fn, args = operands(op, device)
    tangents = tuple(torch.randn_like(a) for a in args)
    with seqops.backend("triton"), fwAD.dual_level():
        tangent = fwAD.unpack_dual(fn(*(fwAD.make_dual(a, t) for a, t in zip(args, tangents)))).tangent
    _, ref_tangent = in_float64(fn, args, lambda f, a: jvp(f, a, tuple(t.double() for t in tangents)))
    close(tangent, ref_tangent)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_grad_and_vjp(device, backend, op):
    skip_unless_runnable(device, backend)
    fn, args = operands(op, device)
    weights = torch.randn_like(fn(*args) if backend != "triton" else operands(op, device)[0](*args))
    loss = lambda *a: (fn(*a) * weights.to(a[0].dtype)).sum()
    with seqops.backend(backend):
        grads = grad(loss, argnums=tuple(range(len(args))))(*args)
        out, pullback = vjp(fn, *args)
        pulled = pullback(weights)
    expected = in_float64(loss, args, lambda f, a: grad(f, argnums=tuple(range(len(a))))(*a))
    for ours, theirs, via_vjp in zip(grads, expected, pulled):
        close(ours, theirs)
        close(via_vjp, theirs)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_vmap_is_the_loop(device, op):
    skip_unless_runnable(device, "triton")
    fn, args = operands(op, device)
    batched = tuple(torch.stack([a, a.flip(0) * 0.5 + 0.1]) for a in args)
    with seqops.backend("triton"):
        out = vmap(fn)(*batched)
        loop = torch.stack([fn(*(b[i] for b in batched)) for i in range(2)])
    torch.testing.assert_close(out, loop)


@pytest.mark.parametrize("device", DEVICES)
def test_jacrev_and_hessian_of_softmax(device):
    """Second order through torch.func: the softmax has a double backward and its
    backward a jvp, so jacrev(jacrev) and hessian (forward over reverse) both work."""
    skip_unless_runnable(device, "triton")
    x = torch.randn(6, device=device, dtype=torch.float64).float()
    f = lambda a: (seqops.softmax(a, -1, scale=0.8) * torch.arange(6, device=device)).sum()
    with seqops.backend("triton"):
        jac = jacrev(lambda a: seqops.softmax(a, -1, scale=0.8))(x)
        hess = hessian(f)(x)
        hess_rev = jacrev(jacrev(f))(x)
    ref_jac = in_float64(lambda a: seqops.softmax(a, -1, scale=0.8), (x,), lambda g, a: jacrev(g)(*a))
    ref_hess = in_float64(f, (x,), lambda g, a: hessian(g)(*a))
    close(jac, ref_jac)
    close(hess, ref_hess)
    close(hess_rev, ref_hess)


@pytest.mark.parametrize("device", DEVICES)
def test_what_forward_mode_cannot_do_says_so(device):
    """Forward mode through attention with dropout, and through the fused LSTM layer, is
    not implemented: a clear error, never zero tangents."""
    skip_unless_runnable(device, "triton")
    q = torch.randn(1, 2, 5, 16, device=device)
    lstm = seqops.nn.LSTM(4, 6).to(device)
    x = torch.randn(3, 2, 4, device=device)
    with seqops.backend("triton"):
        with pytest.raises(RuntimeError, match="forward-mode AD with dropout_p > 0 is not implemented"):
            jvp(lambda a: seqops.scaled_dot_product_attention(a, q, q, dropout_p=0.5), (q,), (q,))
        with pytest.raises(RuntimeError, match="seqops.lstm_layer: forward-mode AD .* is not implemented"):
            jvp(lambda a: lstm(a)[0], (x,), (x,))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_gradients(device, op):
    """vmap(grad(...)): the per-sample gradients of the standard torch.func recipe, each
    equal to the gradient of its own sample, with no vmap fallback (it would warn)."""
    skip_unless_runnable(device, "triton")
    fn, args = operands(op, device)
    batched = tuple(torch.stack([a, a * 0.5 - 0.2, a.flip(-1)]) for a in args)
    loss = lambda *a: fn(*a).square().sum()
    with seqops.backend("triton"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error", UserWarning)
        per_sample = vmap(grad(loss, argnums=tuple(range(len(args)))))(*batched)
    for i in range(3):
        expected = in_float64(loss, tuple(b[i] for b in batched),
                              lambda f, a: grad(f, argnums=tuple(range(len(a))))(*a))
        for ours, theirs in zip(per_sample, expected):
            close(ours[i], theirs)


@pytest.mark.parametrize("op", ["lstm_cell", *HIDDEN_CELLS])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_gradients_of_the_cells_with_shared_weights(device, backend, op):
    """The recipe as used, on every backend: the weights shared (in_dims None), the inputs
    batched, with their states or from one state; each sample's gradients are its own,
    with no vmap fallback. (torch's own cells fail with one state: under torch.func the
    torch backend steps the reference's.)"""
    skip_unless_runnable(device, backend)
    fn, args = operands(op, device)
    loss = lambda *a: fn(*a).square().sum()
    argnums = tuple(range(len(args)))
    states = len(args) - 4  # x, h (and c) before the weights
    for batched_args in (states, 1):  # x and its states batched; x only
        in_dims = (0,) * batched_args + (None,) * (len(args) - batched_args)
        batched = [torch.stack([a, a * 0.5 - 0.2, a.flip(-1)]) if dim == 0 else a for a, dim in zip(args, in_dims)]
        with seqops.backend(backend), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("error", UserWarning)
            per_sample = vmap(grad(loss, argnums=argnums), in_dims=in_dims)(*batched)
        for i in range(3):
            sample = tuple(a[i] if dim == 0 else a for a, dim in zip(batched, in_dims))
            expected = in_float64(loss, sample, lambda f, a: grad(f, argnums=argnums)(*a))
            for ours, theirs in zip(per_sample, expected):
                close(ours[i], theirs)


@pytest.mark.parametrize("device", DEVICES)
def test_vmap_with_a_batched_mask(device):
    """Each sample its own mask: the mask's vmapped dim lines up with the input's."""
    skip_unless_runnable(device, "triton")
    x = torch.randn(4, 3, 9, device=device)
    masks = torch.rand(4, 9, device=device) > 0.3
    masks[:, 0] = True
    with seqops.backend("triton"):
        out = vmap(lambda a, m: seqops.softmax(a, -1, mask=m))(x, masks)
    expected = torch.stack([torch.softmax(x[i].masked_fill(~masks[i], float("-inf")), -1) for i in range(4)])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_jvp_with_respect_to_the_first_argument_only(device, op):
    """The other arguments held constant: their tangents reach the rule as None."""
    skip_unless_runnable(device, "triton")
    fn, args = operands(op, device)
    tangent = torch.randn_like(args[0])
    first_only = lambda f, a: jvp(lambda x: f(x, *a[1:]), (a[0],), (tangent.to(a[0].dtype),))
    with seqops.backend("triton"):
        _, ours = first_only(fn, args)
    _, expected = in_float64(fn, args, first_only)
    close(ours, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_the_autograd_function_runs_only_when_a_call_may_be_differentiated(device, op, monkeypatch):
    """Inference calls (no grad mode, or no input that requires grad, no dual level, no
    torch.func transform) skip the autograd.Function, whose apply costs more host time
    than the rest of a small call; every differentiating mode still goes through it, and
    both routes give the same values."""
    skip_unless_runnable(device, "triton")
    from seqops.ops.attention import op as attention_op
    from seqops.ops.recurrent import hidden_cell_op, op as recurrent_op
    from seqops.ops.softmax import op as softmax_op

    wrapped = {"softmax": softmax_op, "attention": attention_op}.get(op, recurrent_op)
    functions = [v.function for v in vars(wrapped).values() if callable(v) and hasattr(v, "function")]
    functions += [cell.differentiable.function for cell in hidden_cell_op.CELLS.values()]
    assert functions, f"no differentiable wrapper found in {wrapped.__name__}"
    applied = []
    for function in functions:
        original = function.apply
        monkeypatch.setattr(function, "apply", lambda *a, _original=original, **k: applied.append(1) or _original(*a, **k))
    fn, args = operands(op, device)
    with seqops.backend("triton"):
        with torch.no_grad():
            plain = fn(*args)
        assert fn(*args).shape == plain.shape and not applied
        wants_grad = [a.detach().requires_grad_() for a in args]
        out = fn(*wants_grad)
        assert applied and out.requires_grad
        torch.testing.assert_close(out.detach(), plain, rtol=0, atol=0)
        applied.clear()
        with torch.no_grad():
            fn(*wants_grad)
        assert not applied
        jvp(fn, tuple(args), tuple(torch.randn_like(a) for a in args))
        assert applied
        applied.clear()
        with fwAD.dual_level():
            fn(*args)
        assert applied


# The recurrent layers (2 layers, bidirectional).
LAYERS = {
    "gru": lambda: seqops.nn.GRU(5, 6, num_layers=2, bidirectional=True),
    "rnn_relu": lambda: seqops.nn.RNN(5, 6, num_layers=2, bidirectional=True, nonlinearity="relu"),
    "lstm": lambda: seqops.nn.LSTM(5, 6, num_layers=2, bidirectional=True),
}


def layer_call(module):
    """(params, x [T, B, I], h0 [4, B, 6]) -> the module's output [T, B, 12] from that
    state (h0 / 2 as c0 for the LSTM), with the given parameters."""
    def call(params, x, h0):
        state = (h0, h0 * 0.5) if isinstance(module, seqops.nn.LSTM) else h0
        return torch.func.functional_call(module, params, (x, state))[0]

    return call


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_vmap_of_a_recurrent_layer_is_the_loop(device, backend, layer):
    """seqops.nn.GRU/RNN/LSTM under vmap over a batch of inputs and initial states, and
    vmap(grad) over them (per-sample parameter gradients): each sample's result is that
    sample's own, against the float64 reference; with no vmap fallback (it would warn).
    (torch's fused layers have no batching rule: under torch.func the torch backend steps
    the reference's cells.)"""
    skip_unless_runnable(device, backend)
    module = LAYERS[layer]().to(device)
    call = layer_call(module)
    params = {name: p.detach() for name, p in module.named_parameters()}
    xs, h0s = torch.randn(3, 4, 2, 5, device=device), torch.randn(3, 4, 2, 6, device=device) * 0.5
    weights = torch.randn(4, 2, 12, device=device)
    loss = lambda p, x, h: (call(p, x, h) * weights.to(x.dtype)).sum()
    with seqops.backend(backend), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error", UserWarning)
        out = vmap(call, in_dims=(None, 0, 0))(params, xs, h0s)
        per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, h0s)
    params64 = {name: p.double() for name, p in params.items()}
    for i in range(3):
        with seqops.backend("reference"):
            close(out[i], call(params64, xs[i].double(), h0s[i].double()))
            expected = grad(loss)(params64, xs[i].double(), h0s[i].double())
        for name in params:
            close(per_sample[name][i], expected[name])
