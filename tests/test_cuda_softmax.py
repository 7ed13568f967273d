"""The CUDA C++ softmax (backend "cuda") on a GPU, against the float64 reference with the
2x-of-torch error rule (check_softmax). test_softmax.py runs its whole suite on this
backend too (it parametrises over every registered backend); this file adds what only the
CUDA kernels have: both sides of each launch-geometry threshold forward and backward,
every input/output dtype pair, the layouts of test_softmax_strides.py (vector loads on
aligned rows, element loads on the rest), rows split into parts across blocks, the backward's
exactly summed row dot, a forward-mode tangent wider than the output, and torch's current stream. Every test here is marked `cuda` and skips without a GPU."""
import pytest
import torch

import seqops
from accuracy import assert_within_torch_error
from devices import skip_unless_runnable
from test_softmax import check_softmax
from test_softmax_kernels import check_dot_rounded_once
from test_softmax_strides import INPUTS, LONG, masks

pytestmark = pytest.mark.cuda
DEVICE = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Both sides of every threshold of csrc/softmax/plan.h: 4 and 32 values a lane (128), warp
# and block per row (1024), the backward's block limit (4096), block and online (16384).
THRESHOLD_COLUMNS = [128, 129, 1024, 1025, 4096, 4097, 16384, 16385]


@pytest.fixture(autouse=True)
def runnable():
    skip_unless_runnable(DEVICE, "cuda")


@pytest.mark.parametrize("n_cols", THRESHOLD_COLUMNS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_both_sides_of_every_geometry_threshold(dtype, n_cols):
    rows = 3 if n_cols > 4096 else 129
    check_softmax(torch.randn(rows, n_cols, device=DEVICE, dtype=dtype), -1, "cuda",
                  mask=torch.rand(n_cols, device=DEVICE) > 0.2)


@pytest.mark.parametrize("n_cols", [2**17, 2**18 + 77])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_rows_split_into_parts_across_blocks(n_cols, causal):
    """Rows past what a bounded grid serves (csrc/softmax/plan.h, bounded_online): each in
    parts, a block a part, meeting at the row's counter; a mask that empties the middle
    parts of one row, and (causal) rows that see only the first parts. More rows than a
    grid holds at once, so that blocks take several rows."""
    rows = 40
    x = torch.randn(rows, n_cols, device=DEVICE) * 4
    mask = torch.ones(rows, n_cols, dtype=torch.bool, device=DEVICE)
    mask[1, 1000:] = False
    mask[1, n_cols - 5:] = True
    if causal:  # rows as queries of a [rows, n_cols] score matrix: row r sees columns 0..r
        check_softmax(x, -1, "cuda", causal=True)
    else:
        check_softmax(x, -1, "cuda", mask=mask)


@pytest.mark.parametrize("n_cols", [100, 1000, 3000, 8000, 2**17])
def test_backward_sums_the_row_dot_exactly(n_cols):
    """sum(dy * y) in fp64, rounded once (backward.cu), in each backward form: a warp a row
    (4 and 32 values a lane), a block a row, online, and split into parts (2**17)."""
    from seqops.backends import cuda_softmax
    check_dot_rounded_once(cuda_softmax.softmax_backward, n_cols, (0, n_cols - 1, n_cols // 2), DEVICE)


@pytest.mark.parametrize("n_cols", [100, 2000, 20000])
@pytest.mark.parametrize("out_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("in_dtype", DTYPES + [torch.float64], ids=str)
def test_every_input_and_output_dtype(in_dtype, out_dtype, n_cols):
    x = torch.randn(5 if n_cols > 4096 else 65, n_cols, device=DEVICE, dtype=in_dtype)
    out = check_softmax(x, -1, "cuda", dtype=out_dtype)
    assert out.dtype == out_dtype


@pytest.mark.parametrize("layout", list(INPUTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_input_layouts(dtype, layout):
    make, dims = INPUTS[layout]
    for dim in dims:
        check_softmax(make(DEVICE, dtype), dim, "cuda")


@pytest.mark.parametrize("layout", ["columns-strided", "transposed", "storage-offset", "aligned"])
def test_long_row_layouts(layout):
    x = {
        "columns-strided": lambda: torch.randn(3, 2 * LONG, device=DEVICE)[:, ::2],
        "transposed": lambda: torch.randn(LONG, 3, device=DEVICE).t(),
        "storage-offset": lambda: torch.randn(4, LONG + 7, device=DEVICE)[1:, 7:],
        "aligned": lambda: torch.randn(3, LONG, device=DEVICE),
    }[layout]()
    check_softmax(x, -1, "cuda", mask=torch.rand(LONG, device=DEVICE) > 0.2,
                  grad_out=torch.randn(LONG, 3, device=DEVICE).t())


@pytest.mark.parametrize("mask_layout", ["transposed", "storage-offset", "columns-strided", "rows-expanded",
                                         "softmax-dim-expanded", "batched-transposed"])
def test_mask_layouts(mask_layout):
    x = torch.randn(2, 70, 129, device=DEVICE).transpose(1, 2)
    check_softmax(x, -1, "cuda", scale=0.5, mask=masks(DEVICE)[mask_layout])


@pytest.mark.parametrize("in_dtype, out_dtype", [(torch.float32, torch.bfloat16), (torch.float16, torch.float32),
                                                 (torch.float64, torch.float32)], ids=str)
@pytest.mark.parametrize("n_cols", [300, 3000, 30000])
def test_forward_mode_tangent_in_another_dtype_than_the_output(in_dtype, out_dtype, n_cols):
    """A tangent is in the input's dtype, the output in out_dtype: the backward kernels
    read dy in y's dtype or fp32 (the launcher casts the rest)."""
    x = torch.randn(9, n_cols, device=DEVICE, dtype=in_dtype)
    tangent = torch.randn_like(x)
    mask = torch.rand(n_cols, device=DEVICE) > 0.3

    def fused(x):
        with seqops.backend("cuda"):
            return seqops.softmax(x, -1, out_dtype, mask=mask)

    _, out = torch.func.jvp(fused, (x,), (tangent,))
    _, ref = torch.func.jvp(lambda x: torch.softmax(x.masked_fill(~mask, float("-inf")), -1),
                            (x.double().cpu(),), (tangent.double().cpu(),))
    _, torch_out = torch.func.jvp(lambda x: torch.softmax(x.masked_fill(~mask, float("-inf")), -1, out_dtype),
                                  (x,), (tangent,))
    assert out.dtype == out_dtype
    assert_within_torch_error("tangent", out, ref, torch_out)


def test_runs_on_the_current_stream():
    x = torch.randn(257, 3000, device=DEVICE)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), seqops.backend("cuda"):
        y = seqops.softmax(x, -1)
    stream.synchronize()
    # Loose on purpose: this checks that torch's side stream reaches the launcher as a
    # valid handle and the result is there once that stream is synchronised, not the
    # rounding, which the other tests hold to the rule.
    torch.testing.assert_close(y.double(), torch.softmax(x.double(), -1), rtol=1e-5, atol=1e-9)


def test_empty_and_zero_dim_inputs():
    with seqops.backend("cuda"):
        assert seqops.softmax(torch.randn(0, 5, device=DEVICE), -1).shape == (0, 5)
        assert seqops.softmax(torch.randn(4, 0, device=DEVICE), -1).shape == (4, 0)
        assert seqops.softmax(torch.tensor(3.0, device=DEVICE), 0).item() == 1.0
