"""The Triton softmax launchers with a forced tiling: the online (two-sweep) kernels on
small awkward shapes with a 16-column sweep block, so that causal rows end before, on
and after block edges, and masks empty whole rows, at sizes the interpreter can afford."""
import pytest
import torch

from seqops import dispatch
from seqops.ops.softmax import reference, torch_impl
from accuracy import assert_within_torch_error
from devices import DEVICES

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture
def kernels(device):
    reason = dispatch.platform_reason("triton", torch.device(device))
    if reason is not None:
        pytest.skip(reason)
    from seqops.kernels import softmax

    return softmax


def tilings(kernels):
    return {
        "online-16": kernels.Plan(one_pass=False, block_m=1, block_n=16, num_warps=4),
        "one-pass-8-rows": kernels.Plan(one_pass=True, block_m=8, block_n=128, num_warps=4),
    }


CASES = {
    # name: (shape, dim, mask shape, index of mask entries set False to empty a row, causal)
    "causal-square": ((2, 45, 45), -1, None, None, True),
    "causal-more-queries": ((1, 50, 33), -1, None, None, True),
    "causal-more-keys": ((4, 30, 70), -1, None, None, True),
    "causal-and-mask": ((2, 40, 37), -1, (40, 37), (1, slice(None)), True),
    "mask-empties-rows": ((6, 15, 47), -1, (6, 15, 47), (1, 2, slice(None)), False),
    "dim-0": ((61, 40), 0, (61, 40), (slice(None), 4), False),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("tiling", ["online-16", "one-pass-8-rows"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_forced_tiling(kernels, device, dtype, tiling, case):
    shape, dim, mask_shape, emptied, causal = CASES[case]
    x = torch.randn(shape, device=device, dtype=dtype)
    mask = None
    if mask_shape is not None:
        mask = torch.rand(mask_shape, device=device) > 0.3
        mask[emptied] = False
    plan = tilings(kernels)[tiling]
    extras = dict(scale=0.5, mask=mask, causal=causal)
    dim = dim % len(shape)

    out = kernels.softmax_forward(x, mask, dim, 0.5, causal, dtype, tiling=plan)
    x64 = x.double().cpu().requires_grad_()
    ref = reference.softmax(x64, dim, **{**extras, "mask": None if mask is None else mask.cpu()})
    x_torch = x.clone().requires_grad_()
    torch_out = torch_impl.softmax(x_torch, dim, **extras)
    assert_within_torch_error("output", out, ref, torch_out)

    grad_out = torch.randn_like(out)
    grad_x = kernels.softmax_backward(grad_out, out, mask, dim, 0.5, causal, dtype, tiling=plan)
    (grad_ref,) = torch.autograd.grad(ref, x64, grad_out.double().cpu())
    (grad_torch,) = torch.autograd.grad(torch_out, x_torch, grad_out)
    assert_within_torch_error("input gradient", grad_x, grad_ref, grad_torch)


@pytest.mark.parametrize("device", DEVICES)
def test_thresholds_the_other_tests_straddle(kernels, device):
    """test_softmax.py tests rows of 16384 and 16385 columns as the two sides of the
    one-pass limit; moving the limit must move those tests."""
    assert kernels.MAX_ONE_PASS_COLS == 16384
    assert kernels.plan(3, 16384).one_pass and not kernels.plan(3, 16385).one_pass
