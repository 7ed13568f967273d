"""seqops.softmax against the float64 reference, outputs and gradients, on every backend
that can run here, with the 2x-of-torch error rule (tests/accuracy.py)."""
import pytest
import torch

import seqops
from seqops.ops.softmax import reference, torch_impl
from accuracy import EPS, assert_accurate, assert_nonfinite_match
from devices import device_backend_params, skip_unless_runnable

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Both sides of every block size and of the one-pass limit (16384, checked in
# test_softmax_kernels.py), and a row far past it.
COLUMNS = [1, 7, 1023, 1025, 4097, 16384, 16385, 70000]


def rows_for(n_cols: int) -> int:
    """Few rows for long rows (the interpreter is slow), an odd count for short ones.

    A softmax row's error norm is carried by its few largest entries, so an error ratio
    needs many rows (or long ones) to be measured and not just sampled: every test here
    keeps ~100 rows or rows of thousands of entries."""
    return 3 if n_cols > 4096 else 129


def check_softmax(x, dim, backend, dtype=None, grad=True, grad_out=None, **extras):
    """Run seqops.softmax on `backend` and check output and input gradient against the
    float64 reference, with torch's own op (the torch backend) as the error yardstick.
    x keeps its layout; grad_out: the output's gradient, any layout (default: fresh
    random, contiguous)."""
    x = x.detach().requires_grad_(grad)
    with seqops.backend(backend):
        out = seqops.softmax(x, dim, dtype, **extras)
    x64 = x.detach().double().cpu().requires_grad_(grad)
    mask64 = None if extras.get("mask") is None else extras["mask"].cpu()
    ref = reference.softmax(x64, dim, dtype=None if dtype is None else torch.float64, **{**extras, "mask": mask64})
    x_torch = x.detach().requires_grad_(grad)
    torch_out = torch_impl.softmax(x_torch, dim, dtype, **extras)
    assert out.shape == x.shape and out.dtype == torch_out.dtype and out.device == x.device
    # The narrowest dtype on the way, for the reference backend's closeness check.
    precision = max(x.dtype, out.dtype, key=EPS.get)
    terms = x.shape[dim] if x.dim() else 1
    assert_accurate(backend, "output", out, ref, torch_out, precision, terms)
    if not grad:
        return out
    if grad_out is None:
        grad_out = torch.randn_like(out)
    (grad_x,) = torch.autograd.grad(out, x, grad_out)
    (grad_ref,) = torch.autograd.grad(ref, x64, grad_out.double().cpu())
    (grad_torch,) = torch.autograd.grad(torch_out, x_torch, grad_out)
    assert grad_x.dtype == x.dtype
    assert_accurate(backend, "input gradient", grad_x, grad_ref, grad_torch, precision, terms)
    return out


@pytest.mark.parametrize("n_cols", COLUMNS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_rows_of_every_length(device, backend, dtype, n_cols):
    skip_unless_runnable(device, backend)
    x = torch.randn(rows_for(n_cols), n_cols, device=device, dtype=dtype)
    check_softmax(x, -1, backend)


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_float64_runs_on_torch_unless_asked_otherwise(device, backend):
    skip_unless_runnable(device, backend)
    x = torch.randn(5, 19, device=device, dtype=torch.float64)
    if backend in ("triton", "cuda"):
        with pytest.raises(seqops.BackendUnavailable, match="float64 runs on the torch backend"):
            with seqops.backend(backend):
                seqops.softmax(x)
        return
    check_softmax(x, -1, backend)


@pytest.mark.parametrize("dim", [0, 1, -1, -3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_any_dim(device, backend, dtype, dim):
    skip_unless_runnable(device, backend)
    x = torch.randn(9, 14, 33, device=device, dtype=dtype)
    check_softmax(x, dim, backend)


NON_CONTIGUOUS = {
    "transposed": lambda d, t: torch.randn(33, 16, 9, device=d, dtype=t).transpose(0, 2),
    "sliced-rows": lambda d, t: torch.randn(257, 40, device=d, dtype=t)[::2, 3:37],
    "strided-columns": lambda d, t: torch.randn(96, 70, device=d, dtype=t)[:, ::3],
    "broadcast": lambda d, t: torch.randn(40, 1, 29, device=d, dtype=t).expand(40, 3, 29),
    "five-dims-uncollapsible": lambda d, t: torch.randn(3, 4, 5, 6, 13, device=d, dtype=t)[:, ::2, :, ::2],
}


@pytest.mark.parametrize("layout", list(NON_CONTIGUOUS))
@pytest.mark.parametrize("dim", [-1, 1])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_non_contiguous_input(device, backend, dim, layout):
    skip_unless_runnable(device, backend)
    x = NON_CONTIGUOUS[layout](device, torch.float32)
    assert not x.is_contiguous()
    check_softmax(x, dim, backend)


@pytest.mark.parametrize("magnitude", ["spread-1e4", "offset-1e4"])
@pytest.mark.parametrize("n_cols", [100, 40000])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_large_magnitudes(device, backend, dtype, n_cols, magnitude):
    """Values whose naive exp overflows; and large values close together, where the
    subtraction of the max must stay exact."""
    skip_unless_runnable(device, backend)
    if magnitude == "offset-1e4" and dtype != torch.float32:
        pytest.skip("at 1e4 half-precision spacing (8 or 64) leaves no close values to resolve")
    x = torch.randn(3 if n_cols > 4096 else 129, n_cols, device=device)
    x = x * 1e4 if magnitude == "spread-1e4" else x + 1e4
    check_softmax(x.to(dtype), -1, backend)


@pytest.mark.parametrize("dtype, out_dtype", [(torch.float16, torch.float32), (torch.float32, torch.bfloat16),
                                               (torch.bfloat16, torch.float16)], ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_dtype_argument_casts_first(device, backend, dtype, out_dtype):
    skip_unless_runnable(device, backend)
    x = torch.randn(97, 301, device=device, dtype=dtype)
    out = check_softmax(x, -1, backend, dtype=out_dtype)
    assert out.dtype == out_dtype


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_integer_input_with_dtype(device, backend):
    skip_unless_runnable(device, backend)
    x = torch.randint(-5, 5, (4, 9), device=device)
    with seqops.backend(backend):
        out = seqops.softmax(x, -1, dtype=torch.float32)
    torch.testing.assert_close(out, torch.softmax(x, -1, dtype=torch.float32))


MASK_SHAPES = {
    "keys": (13,),
    "queries-keys": (11, 13),
    "batch-1-1-keys": (4, 1, 1, 13),
    "full": (4, 3, 11, 13),
    "rows-broadcast": (4, 3, 11, 1),
}


@pytest.mark.parametrize("mask_shape", list(MASK_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_boolean_mask(device, backend, dtype, mask_shape):
    skip_unless_runnable(device, backend)
    x = torch.randn(4, 3, 11, 13, device=device, dtype=dtype)
    mask = torch.rand(MASK_SHAPES[mask_shape], device=device) > 0.3
    check_softmax(x, -1, backend, scale=0.125, mask=mask)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_masked_rows_are_nan_with_zero_gradient(device, backend, dtype):
    """Rows with every entry masked give NaN, as torch does; their input gradient is 0,
    as torch's masked_fill backward gives (the output does not depend on them)."""
    skip_unless_runnable(device, backend)
    x = torch.randn(4, 30, 21, device=device, dtype=dtype)
    mask = torch.rand(4, 30, 21, device=device) > 0.5
    mask[0, 2] = False
    mask[3, :, :] = False
    out = check_softmax(x, -1, backend, mask=mask)
    assert out[0, 2].isnan().all() and out[3].isnan().all() and not out[1].isnan().any()


@pytest.mark.parametrize("shape", [(2, 3, 33, 33), (2, 4, 20, 130), (2, 1, 130, 5), (70, 33)], ids=str)
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_causal(device, backend, shape, with_mask):
    """Causal as torch's is_causal aligns it (key j <= query i), for Lq = Lk, Lq < Lk and
    Lq > Lk, alone and with a mask that can leave a row empty."""
    skip_unless_runnable(device, backend)
    x = torch.randn(shape, device=device)
    mask = (torch.rand(shape[-1], device=device) > 0.4) if with_mask else None
    check_softmax(x, -1, backend, scale=0.125, mask=mask, causal=True)


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_causal_along_another_dim(device, backend):
    """causal always masks the last two dims, whatever dim the softmax runs along."""
    skip_unless_runnable(device, backend)
    x = torch.randn(16, 9, 7, device=device)
    check_softmax(x, 1, backend, causal=True)


@pytest.mark.parametrize("n_cols", [16385, 70000])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_long_rows_masked(device, backend, n_cols):
    """Rows past the one-pass limit (the online kernels) with a mask. Causal rows that
    long cannot be afforded in the interpreter; test_softmax_kernels.py forces the
    online kernels onto small shapes for those."""
    skip_unless_runnable(device, backend)
    x = torch.randn(2, 3, n_cols, device=device)
    mask = torch.rand(n_cols, device=device) > 0.2
    check_softmax(x, -1, backend, mask=mask)


@pytest.mark.parametrize("scale", [0.3, 0.0, -2.0])
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_scale(device, backend, scale):
    """Masks apply after scaling: a zero or negative scale must not turn masked entries
    into NaN or into the max."""
    skip_unless_runnable(device, backend)
    x = torch.randn(97, 40, device=device)
    mask = torch.rand(97, 40, device=device) > 0.3
    check_softmax(x, -1, backend, scale=scale, mask=mask)


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_non_finite_rows_follow_torch(device, backend):
    skip_unless_runnable(device, backend)
    x = torch.randn(5, 9, device=device)
    x[0] = float("-inf")
    x[1, 3] = float("inf")
    x[2, 4] = float("nan")
    x[3, :4] = float("-inf")
    with seqops.backend(backend):
        out = seqops.softmax(x, -1)
    assert_nonfinite_match("output", out, torch.softmax(x, -1))
    torch.testing.assert_close(out[3:], torch.softmax(x[3:], -1))


@pytest.mark.parametrize("shape, dim", [((), 0), ((), -1), ((0, 5), -1), ((5, 0), -1), ((2, 0, 3), 1), ((1,), 0),
                                        ((1, 1), 0)], ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_degenerate_shapes(device, backend, shape, dim):
    skip_unless_runnable(device, backend)
    x = (torch.randn(shape, device=device) + 1).requires_grad_()
    with seqops.backend(backend):
        out = seqops.softmax(x, dim)
    expected = torch.softmax(x, dim)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    (grad_x,) = torch.autograd.grad(out, x, grad)
    torch.testing.assert_close(grad_x, torch.autograd.grad(expected, x, grad)[0])


@pytest.mark.parametrize("device, backend", device_backend_params())
def test_double_backward(device, backend):
    """Gradients of gradients (e.g. gradient penalties), against the float64 reference."""
    skip_unless_runnable(device, backend)
    x = torch.randn(8, 16, 23, device=device, requires_grad=True)
    mask = torch.rand(23, device=device) > 0.3
    # Keep key 0 so that no causal row is empty: there torch's double backward gives NaN
    # where the true (and seqops') gradient w.r.t. grad_out is 0.
    mask[0] = True
    grad_out = torch.randn(8, 16, 23, device=device, requires_grad=True)

    def second_order(softmax, x, grad_out):
        out = softmax(x, -1, scale=0.5, mask=mask.to(x.device), causal=True)
        (gx,) = torch.autograd.grad(out, x, grad_out, create_graph=True)
        return torch.autograd.grad((gx * gx.detach().sign()).sum(), (x, grad_out))

    with seqops.backend(backend):
        ours = second_order(seqops.softmax, x, grad_out)
    x64 = x.detach().double().requires_grad_()
    g64 = grad_out.detach().double().requires_grad_()
    refs = second_order(reference.softmax, x64, g64)
    theirs = second_order(torch_impl.softmax, x, grad_out)
    for name, o, r, t in zip(["d/dx", "d/dgrad"], ours, refs, theirs):
        assert_accurate(backend, name, o, r, t, reduced_length=23)
