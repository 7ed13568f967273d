"""The CUDA C++ GRU and Elman RNN cell steps (backend "cuda", csrc/recurrent/hidden_cell.cu)
on a GPU: each cell in float32, float16 and bfloat16, sizes on both sides of the kernels'
16-row and 32-unit blocks (batch 1 included, input size apart from hidden), every argument
a view (transposed, strided, expanded states and biases, transposed weights), with and
without biases; the output and the gradient of every leaf against the float64 reference
with the error rule of tests/accuracy.py (at most 2x torch's own op in the same dtype).
test_gru_rnn_cells.py's accuracy tests run on this backend too. Marked `cuda`: skipped
without a GPU."""
import pytest
import torch

from devices import skip_unless_runnable
from test_gru_rnn_cells import CELLS, check, leaves, strided_views

pytestmark = pytest.mark.cuda
DEVICE = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def runnable():
    skip_unless_runnable(DEVICE, "cuda")


# (B, I, H): batch 1, 5 and 33 (over two 16-row blocks); hidden 1, 17 and 70 (over two
# 32-unit blocks, so that d_h0 sums over several unit chunks and feature blocks); input
# sizes apart from hidden, one past the 16-column tile.
SHAPES = [(1, 9, 17), (5, 33, 1), (33, 5, 70), (33, 70, 17), (5, 1, 70)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-I{s[1]}-H{s[2]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_sizes_and_dtypes(cell, dtype, shape):
    B, I, H = shape
    check("cuda", cell, dtype, lambda: leaves(cell, B, I, H, DEVICE), reduced_length=I + H)


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_without_biases(cell):
    check("cuda", cell, torch.float32, lambda: leaves(cell, 33, 9, 40, DEVICE, bias=False), reduced_length=49)


def views_with_expanded_state(x, h, w_ih, w_hh, b_ih, b_hh):
    """strided_views, but h expanded from one row (stride 0 across the batch) and w_hh
    transposed in memory (column-major)."""
    x, _, w_ih, _, b_ih, b_hh = strided_views(x, h, w_ih, w_hh, b_ih, b_hh)
    return x, h.expand(x.shape[0], h.shape[1]), w_ih, w_hh.t().contiguous().t(), b_ih, b_hh


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", list(CELLS))
def test_strided_and_expanded_arguments(cell, dtype):
    """Every argument a view, read in place through its strides: x transposed, h every
    other column, w_ih column-major, w_hh every other row, b_ih strided, b_hh expanded from
    one value (stride 0); gradients reach the leaves through the views."""
    B, I, H = 17, 11, 37

    def make():
        x, h, w_ih, w_hh, b_ih, _ = leaves(cell, B, I, H, DEVICE)
        return [x, h, w_ih, w_hh, b_ih, torch.randn(1, device=DEVICE, dtype=torch.float64)]

    check("cuda", cell, dtype, make, strided_views, reduced_length=I + H)


@pytest.mark.parametrize("cell", list(CELLS))
def test_expanded_state_and_transposed_recurrent_weights(cell):
    B, I, H = 21, 6, 45

    def make():
        x, _, w_ih, w_hh, b_ih, _ = leaves(cell, B, I, H, DEVICE)
        h = torch.randn(1, H, device=DEVICE, dtype=torch.float64)
        return [x, h, w_ih, w_hh, b_ih, torch.randn(1, device=DEVICE, dtype=torch.float64)]

    check("cuda", cell, torch.float32, make, views_with_expanded_state, reduced_length=I + H)
