"""The softmax ops as torch.library ops: torch.library.opcheck (schema, fake kernel,
autograd registration, AOT dispatch), and torch.compile(fullgraph=True) with no graph
break, for the fused kernels (under the interpreter on the CPU) and the other backends."""
import pytest
import torch

import seqops
from seqops.ops.softmax.op import softmax_backward as fused_softmax_backward
from seqops.ops.softmax.op import softmax_forward as fused_softmax

TRITON = "softmax/triton/fused"
from compiled import COMPILE_BACKENDS, COMPILERS, assert_compiled_matches_eager
from devices import DEVICES, skip_unless_runnable


@pytest.fixture
def device(request):
    return request.param


def opcheck_cases(device):
    x = torch.randn(6, 5, 37, device=device, requires_grad=True)
    mask = torch.rand(5, 37, device=device) > 0.3
    # No empty rows along either dim the cases take the softmax over: opcheck compares
    # outputs without equal_nan (test_softmax covers empty rows).
    mask[:, 0] = True
    mask[0, :] = True
    return [
        (x, None, 2, 1.0, False, None),
        (x, mask, 2, 0.5, True, None),
        (x, None, 0, 1.0, False, torch.bfloat16),
        (x.detach().half().requires_grad_(), mask[None], 1, 2.0, False, torch.float32),
        (torch.randn((), device=device, requires_grad=True), None, 0, 1.0, False, None),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_softmax(device):
    skip_unless_runnable(device, "triton")
    for x, mask, dim, scale, causal, dtype in opcheck_cases(device):
        torch.library.opcheck(fused_softmax, (x, mask, dim, scale, causal, dtype, TRITON))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_softmax_backward(device):
    skip_unless_runnable(device, "triton")
    for x, mask, dim, scale, causal, dtype in opcheck_cases(device):
        y = fused_softmax(x.detach(), mask, dim, scale, causal, dtype, TRITON).requires_grad_()
        grad = torch.randn_like(y).requires_grad_()
        torch.library.opcheck(fused_softmax_backward, (grad, y, mask, dim, scale, causal, x.dtype, TRITON))


def attention_scores(q, k, mask):
    """A small model-shaped use: scores, masked causal softmax, weighted sum."""
    scores = q @ k.transpose(-1, -2)
    weights = seqops.softmax(scores, -1, scale=q.shape[-1] ** -0.5, mask=mask, causal=True)
    return weights @ k


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device, backend, compiler):
    skip_unless_runnable(device, backend)
    q = torch.randn(2, 3, 19, 16, device=device, requires_grad=True)
    k = torch.randn(2, 3, 19, 16, device=device, requires_grad=True)
    mask = torch.rand(19, device=device) > 0.2
    mask[0] = True
    assert_compiled_matches_eager(attention_scores, (q, k, mask), (q, k), backend, compiler)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_layer_in_a_model(device):
    skip_unless_runnable(device, "triton")
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), seqops.nn.Softmax(dim=-1), torch.nn.Linear(40, 3)).to(device)
    x = torch.randn(17, 24, device=device)
    with seqops.backend("triton"):
        expected = model(x)
        out = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, expected)
