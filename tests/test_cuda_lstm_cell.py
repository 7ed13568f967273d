"""The CUDA C++ LSTM cell step (backend "cuda") on a GPU: every argument a view (strided,
transposed, expanded, offset) as tests/test_lstm_strides.py lays them out, several row and
unit blocks, and one of h1, c1 unused (its gradient None), against torch's op in float64
with the error rule of tests/accuracy.py. test_lstm.py's cell tests run on this backend
too. Marked `cuda`: skipped without a GPU."""
import pytest
import torch

import seqops
from accuracy import PooledResult, trials_needed
from devices import skip_unless_runnable
from test_lstm_strides import CELL_LAYOUTS, I, H, cell_case, draw

pytestmark = pytest.mark.cuda
DEVICE = "cuda"


@pytest.fixture(autouse=True)
def runnable():
    skip_unless_runnable(DEVICE, "cuda")


def check(make_leaves, run, dtype, reduced_length, loss="weighted"):
    """Outputs and the gradient of every tensor the op received, ours (backend "cuda")
    against float64 torch within 2x torch's own error in `dtype`, pooled over trials."""
    pooled, trials, trial = {}, 1, 0
    while trial < trials:
        base = make_leaves()
        results = {}
        for name, cast, ours in (("reference", torch.float64, False), ("torch", dtype, False), ("ours", dtype, True)):
            leaves = [t.detach().to(cast).requires_grad_() for t in base]
            with seqops.backend("cuda"):
                outs, received = run(leaves, ours)
            if loss == "sum":
                total = sum(o.sum() for o in outs)
            elif loss == "h-only":
                total = outs[0].sum()
            else:
                weights = torch.Generator(device=DEVICE).manual_seed(1000 + trial)
                total = sum((o.double() * torch.randn(o.shape, generator=weights, dtype=torch.float64,
                                                      device=DEVICE)).sum() for o in outs)
            grads = torch.autograd.grad(total, received, allow_unused=True)
            names = [f"output {i}" for i in range(len(outs))] + [f"d input {i}" for i in range(len(received))]
            results[name] = {n: v for n, v in zip(names, list(outs) + list(grads)) if v is not None}
        for name, out in results["ours"].items():
            pooled.setdefault(name, PooledResult()).add(name, out, results["reference"][name], results["torch"][name])
        trials = max(trials, trials_needed(results["ours"]))
        trial += 1
    for name, result in pooled.items():
        result.check("cuda", name, dtype, reduced_length)


@pytest.mark.parametrize("case", CELL_LAYOUTS)
def test_cell_views(case):
    make, run = cell_case(DEVICE, CELL_LAYOUTS[case])
    check(make, run, torch.float32, I + H)


@pytest.mark.parametrize("dtype, loss", [(torch.bfloat16, "weighted"), (torch.float16, "sum"),
                                         (torch.float32, "h-only")], ids=["bfloat16", "float16-sum", "h-only"])
def test_cell_views_reduced_precision_and_missing_gradients(dtype, loss):
    make, run = cell_case(DEVICE, CELL_LAYOUTS["everything"])
    check(make, run, dtype, I + H, loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(37, 70, 70), (16, 5, 32), (17, 3, 33), (1, 200, 1)],
                         ids=lambda s: f"B{s[0]}-I{s[1]}-H{s[2]}")
def test_cell_across_row_and_unit_blocks(shape, dtype):
    """Both sides of the 16-row and 32-unit blocks, several of each, K past one tile (16
    columns in fp32; 64 on the tensor cores in fp16/bf16, where 70 and 200 take 2 and 4)."""
    batch, inputs, hidden = shape

    def make():
        return [draw(s, parameter, DEVICE) for s, parameter in (
            ((batch, inputs), False), ((batch, hidden), False), ((batch, hidden), False),
            ((4 * hidden, inputs), True), ((4 * hidden, hidden), True), ((4 * hidden,), True), ((4 * hidden,), True))]

    def run(leaves, ours):
        x, h, c, w_ih, w_hh, b_ih, b_hh = leaves
        return (seqops.lstm_cell if ours else torch.lstm_cell)(x, (h, c), w_ih, w_hh, b_ih, b_hh), leaves

    check(make, run, dtype, inputs + hidden)
