"""seqops.softmax on the Triton backend with inputs, masks and incoming gradients in
layouts the kernels read in place or must copy: transposed and permuted, sliced, with
storage offsets (pointers off 16-byte alignment), expanded (stride 0, the softmax dim's
too), on both kernel forms (one pass, and online past the one-pass limit). Output and
input gradient against the float64 reference with the error rule (check_softmax of
test_softmax.py)."""
import pytest
import torch

from test_softmax import check_softmax
from devices import DEVICES, skip_unless_runnable

R, C = 129, 70  # rows enough for an error ratio; columns off every block size
LONG = 16400  # past the one-pass limit (16384): the online kernels


def window(full, before):
    """A view into `full` starting `before` elements into each dim: a storage offset off
    16-byte alignment, and strides of the larger tensor."""
    return full[tuple(slice(n, None) for n in before)]


INPUTS = {
    # name: (make(device, dtype), dims to take the softmax along)
    "transposed": (lambda d, t: torch.randn(C, R, device=d, dtype=t).t(), (-1, 0)),
    "storage-offset": (lambda d, t: window(torch.randn(R + 3, C + 5, device=d, dtype=t), (3, 5)), (-1, 0)),
    "columns-strided": (lambda d, t: torch.randn(R, 2 * C, device=d, dtype=t)[:, 1::2], (-1, 0)),
    # Stride 0 across a batch dim, over R independent rows: expanding one row to all R
    # would leave the error ratio a sample of a single row's few roundings.
    "rows-expanded": (lambda d, t: torch.randn(R, 1, C, device=d, dtype=t).expand(R, 3, C), (-1,)),
    # Every entry of a row the same: the softmax is uniform, the gradient is not trivial.
    "softmax-dim-expanded": (lambda d, t: torch.randn(R, 1, device=d, dtype=t).expand(R, C), (-1,)),
    "permuted-4d": (lambda d, t: torch.randn(3, 11, 5, 9, device=d, dtype=t).permute(0, 2, 3, 1), (-1, 1, 2)),
    "heads-transposed": (lambda d, t: torch.randn(4, 13, 3, 17, device=d, dtype=t).transpose(1, 2), (-1, -2)),
    "uncollapsible": (lambda d, t: torch.randn(3, 4, 5, 6, 13, device=d, dtype=t)[:, ::2, 1:, ::2], (-1, 2)),
}


@pytest.mark.parametrize("layout", list(INPUTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_input_layouts(device, dtype, layout):
    skip_unless_runnable(device, "triton")
    make, dims = INPUTS[layout]
    for dim in dims:
        x = make(device, dtype)
        assert not x.is_contiguous()
        check_softmax(x, dim, "triton")


@pytest.mark.parametrize("layout", ["columns-strided", "transposed", "storage-offset"])
@pytest.mark.parametrize("device", DEVICES)
def test_long_row_layouts(device, layout):
    """Rows past the one-pass limit, read with their strides by the online kernels."""
    skip_unless_runnable(device, "triton")
    x = {
        "columns-strided": lambda: torch.randn(3, 2 * LONG, device=device)[:, ::2],
        "transposed": lambda: torch.randn(LONG, 3, device=device).t(),
        "storage-offset": lambda: torch.randn(4, LONG + 7, device=device)[1:, 7:],
    }[layout]()
    mask = torch.rand(LONG, device=device) > 0.2
    check_softmax(x, -1, "triton", mask=mask)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_input_with_dtype_cast(device):
    skip_unless_runnable(device, "triton")
    x = torch.randn(C, R, device=device, dtype=torch.float16).t()
    out = check_softmax(x, -1, "triton", dtype=torch.float32)
    assert out.dtype == torch.float32


def masks(device):
    keep = lambda *shape: torch.rand(*shape, device=device) > 0.3
    return {
        "transposed": keep(C, R).t(),
        "storage-offset": window(keep(R + 3, C + 5), (3, 5)),
        "columns-strided": keep(R, 2 * C)[:, ::2],
        "rows-expanded": keep(1, C).expand(R, C),
        # Whole rows kept or masked (NaN rows, zero gradient), read with stride 0.
        "softmax-dim-expanded": keep(R, 1).expand(R, C),
        "batched-transposed": keep(2, C, R).transpose(1, 2),
    }


@pytest.mark.parametrize("mask_layout", ["transposed", "storage-offset", "columns-strided", "rows-expanded",
                                         "softmax-dim-expanded", "batched-transposed"])
@pytest.mark.parametrize("input_layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("device", DEVICES)
def test_mask_layouts(device, input_layout, mask_layout):
    """Masks in their own layouts, with the input in the same or another one (the rows
    then collapse differently, and the launcher copies what does not)."""
    skip_unless_runnable(device, "triton")
    x = torch.randn(2, R, C, device=device) if input_layout == "contiguous" else \
        torch.randn(2, C, R, device=device).transpose(1, 2)
    check_softmax(x, -1, "triton", scale=0.5, mask=masks(device)[mask_layout])


@pytest.mark.parametrize("dim", [-1, 1])
@pytest.mark.parametrize("device", DEVICES)
def test_causal_on_transposed_scores(device, dim):
    """Causal over the last two dims of a transposed [B, L, S] view, along the keys and
    along the queries."""
    skip_unless_runnable(device, "triton")
    x = torch.randn(3, 45, 33, device=device).transpose(1, 2)
    check_softmax(x, dim, "triton", mask=torch.rand(45, device=device) > 0.2, causal=True)


def grad_outs(device):
    return {
        # What autograd hands over for y.sum(): ones, every stride 0.
        "ones-expanded": lambda: torch.ones((), device=device).expand(2, R, C),
        "rows-expanded": lambda: torch.randn(1, 1, C, device=device).expand(2, R, C),
        "transposed": lambda: torch.randn(2, C, R, device=device).transpose(1, 2),
        "storage-offset": lambda: window(torch.randn(3, R + 1, C + 3, device=device), (1, 1, 3)),
    }


@pytest.mark.parametrize("grad_layout", ["ones-expanded", "rows-expanded", "transposed", "storage-offset"])
@pytest.mark.parametrize("dim", [-1, 1])
@pytest.mark.parametrize("device", DEVICES)
def test_incoming_gradient_layouts(device, dim, grad_layout):
    skip_unless_runnable(device, "triton")
    x = torch.randn(2, R, C, device=device)
    mask = torch.rand(R, C, device=device) > 0.3
    check_softmax(x, dim, "triton", mask=mask, grad_out=grad_outs(device)[grad_layout]())
