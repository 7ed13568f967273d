"""Softmax offsets past 2**31 elements: row offsets and column offsets are int64 in every
kernel, for the input, the output, the mask and the incoming gradient; row indices are
int64 when a launch has 2**31 rows or more (INT64_ROWS).

Without a GPU: the kernels run under the interpreter on small views whose strides put
their last rows or columns past 2**31 elements of a sparse file mapped into memory, and
the launchers' choice of INT64_ROWS is checked on meta tensors (nothing allocated). The
`cuda` tests run real shapes past 2**31 elements and 2**31 rows."""
import pytest
import torch

import seqops
from seqops import dispatch
from accuracy import assert_within_torch_error
from test_attention_offsets import INT32_LIMIT, RecordedFlags, far_view, rows_apart, sparse_storage  # noqa: F401
from test_softmax import check_softmax


@pytest.fixture
def softmax_kernels():
    reason = dispatch.platform_reason("triton", torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)
    from seqops.kernels.softmax import backward, forward

    return forward, backward


R, C = 9, 37


@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_rows_past_2_31(softmax_kernels, sparse_storage, dtype, dim):
    """Input, mask and incoming gradient whose last row starts 2**31 elements after their
    first (along dim 0, the softmax dim itself is that far strided)."""
    values, keep = sparse_storage(dtype), sparse_storage(torch.bool)
    x = far_view(values, 0, (R, C), (rows_apart(R), 1), requires_grad=False)
    grad_out = far_view(values, 1, (R, C), (rows_apart(R), 1), requires_grad=False)
    mask = far_view(keep, 0, (R, C), (rows_apart(R), 1))
    check_softmax(x, dim, "triton", scale=0.5, mask=mask, grad_out=grad_out)


def test_long_rows_past_2_31(softmax_kernels, sparse_storage):
    """Rows past the one-pass limit (the online kernels), the last one 2**31 elements on."""
    n_cols = 16400
    values, keep = sparse_storage(torch.float32), sparse_storage(torch.bool)
    x = far_view(values, 0, (3, n_cols), (rows_apart(3), 1), requires_grad=False)
    grad_out = far_view(values, 1, (3, n_cols), (rows_apart(3), 1), requires_grad=False)
    mask = far_view(keep, 0, (3, n_cols), (rows_apart(3), 1))
    check_softmax(x, -1, "triton", mask=mask, grad_out=grad_out)


def test_columns_past_2_31(softmax_kernels, sparse_storage):
    """A softmax along a dim whose last entry is 2**31 elements after its first."""
    values = sparse_storage(torch.float32)
    x = far_view(values, 0, (C, 5), (rows_apart(C), 1), requires_grad=False)
    check_softmax(x, 0, "triton")


def one_pass_flags(monkeypatch, softmax_kernels, n_rows, n_cols=3):
    """{kernel: INT64_ROWS} of a forward and a backward launch over n_rows rows (meta)."""
    forward, backward = softmax_kernels
    flags = {}
    for module in (forward, backward):
        for name in [n for n in vars(module) if n.endswith("_kernel")]:
            monkeypatch.setattr(module, name, RecordedFlags(name, flags, "INT64_ROWS"))
    x = torch.empty(n_rows, n_cols, device="meta")
    y = forward.softmax_forward(x, None, 1, 1.0, True, torch.float32)
    backward.softmax_backward(torch.empty_like(y), y, None, 1, 1.0, True, torch.float32)
    return flags


@pytest.mark.parametrize("n_rows, int64_rows", [(INT32_LIMIT - 1, False), (INT32_LIMIT, False),
                                                (INT32_LIMIT + 1, True), (3 * INT32_LIMIT, True)])
def test_launchers_count_rows_in_int64_past_2_31(softmax_kernels, monkeypatch, n_rows, int64_rows):
    """Row indices 0 .. 2**31 - 1 fit int32; one more row, and the one-pass kernels
    count rows in int64."""
    flags = one_pass_flags(monkeypatch, softmax_kernels, n_rows)
    assert flags == {"softmax_forward_kernel": int64_rows, "softmax_backward_kernel": int64_rows}


# --- on a GPU: real shapes past 2**31 ---------------------------------------------------

def check_rows(out, grad_x, x, grad_out, rows, mask_rows=None):
    """The given rows of a softmax along dim -1 (and of its input gradient) against the
    float64 reference and torch's op, both run on those rows alone (mask_rows: the mask
    of those rows)."""
    from seqops.ops.softmax import reference, torch_impl

    results = []
    for fn, dtype in ((reference.softmax, torch.float64), (torch_impl.softmax, x.dtype)):
        x_rows = x[rows].detach().to(dtype).requires_grad_()
        y = fn(x_rows, -1, mask=mask_rows)
        results.append((y, *torch.autograd.grad(y, x_rows, grad_out[rows].to(dtype))))
    (ref, grad_ref), (theirs, grad_theirs) = results
    assert_within_torch_error("output", out[rows], ref, theirs)
    assert_within_torch_error("input gradient", grad_x[rows], grad_ref, grad_theirs)


@pytest.mark.cuda
def test_cuda_more_than_2_31_rows():
    """[2**31 + 1000, 2]: the one-pass kernels count rows past 2**31 - 1."""
    x = torch.randn(2**31 + 1000, 2, device="cuda", dtype=torch.float16, requires_grad=True)
    with seqops.backend("triton"):
        out = seqops.softmax(x, -1)
    grad_out = torch.randn_like(out)
    (grad_x,) = torch.autograd.grad(out, x, grad_out)
    rows = torch.cat([torch.arange(1000), torch.arange(x.shape[0] - 1000, x.shape[0])]).cuda()
    check_rows(out, grad_x, x, grad_out, rows)


@pytest.mark.cuda
def test_cuda_rows_past_2_31_elements():
    """Input, mask and incoming gradient [5, 70000] (the online kernels) as views with
    rows 2**29 + 7 elements apart, in buffers of more than 2**31 elements: row 4 starts
    past 2**31 elements of each."""
    shape, strides = (5, 70000), (2**29 + 7, 1)
    views = [torch.randn(2**31 + 2**20, device="cuda").as_strided(shape, strides) for _ in range(2)]
    x, grad_out = views[0].requires_grad_(), views[1]
    mask = (torch.rand(2**31 + 2**20, device="cuda") > 0.2).as_strided(shape, strides)
    with seqops.backend("triton"):
        out = seqops.softmax(x, -1, mask=mask)
    (grad_x,) = torch.autograd.grad(out, x, grad_out)
    rows = torch.tensor([0, 4], device="cuda")
    check_rows(out, grad_x, x, grad_out, rows, mask[rows])
