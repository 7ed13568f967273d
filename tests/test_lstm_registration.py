"""The LSTM cell op as a torch.library op: torch.library.opcheck (schema, fake kernels,
autograd registration, AOT dispatch) and torch.compile(fullgraph=True) with no graph
break, forward and backward."""
import pytest
import torch

import seqops
from seqops.ops.recurrent.op import lstm_cell_backward as fused_lstm_cell_backward
from seqops.ops.recurrent.op import lstm_cell_forward as fused_lstm_cell

TRITON = "lstm_cell/triton/step"
from compiled import COMPILE_BACKENDS, COMPILERS, assert_compiled_matches_eager
from devices import DEVICES, skip_unless_runnable


def cell_inputs(device, dtype=torch.float32, bias=True, grad=True):
    B, I, H = 5, 7, 12
    tensors = [torch.randn(B, I), torch.randn(B, H), torch.randn(B, H), torch.randn(4 * H, I) * 0.3,
               torch.randn(4 * H, H) * 0.3]
    biases = [torch.randn(4 * H) * 0.3, torch.randn(4 * H) * 0.3] if bias else [None, None]
    return [t.to(device, dtype).requires_grad_(grad) if t is not None else None for t in tensors + biases]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_lstm_cell(device, bias):
    skip_unless_runnable(device, "triton")
    for dtype in (torch.float32, torch.bfloat16):
        torch.library.opcheck(fused_lstm_cell, (*cell_inputs(device, dtype, bias), TRITON))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_lstm_cell_backward(device, bias):
    skip_unless_runnable(device, "triton")
    x, h, c, w_ih, w_hh, b_ih, b_hh = cell_inputs(device, bias=bias, grad=False)
    h1, c1, gates = fused_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, TRITON)
    torch.library.opcheck(fused_lstm_cell_backward,
                          (torch.randn_like(h1), torch.randn_like(c1), x, h, c, w_ih, w_hh, c1, gates, bias, TRITON))
    torch.library.opcheck(fused_lstm_cell_backward, (torch.randn_like(h1), None, x, h, c, w_ih, w_hh, c1, gates, bias, TRITON))


def unrolled(cell_weights, xs, h, c):
    """A few steps of a recurrent model written with seqops.lstm_cell."""
    for x in xs.unbind(0):
        h, c = seqops.lstm_cell(x, (h, c), *cell_weights)
    return h.sum() + c.square().sum()


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device, backend, compiler):
    skip_unless_runnable(device, backend)
    x, h, c, w_ih, w_hh, b_ih, b_hh = cell_inputs(device)
    weights = (w_ih, w_hh, b_ih, b_hh)
    xs = torch.randn(3, 5, 7, device=device)
    assert_compiled_matches_eager(unrolled, (weights, xs, h, c), [*weights, h, c], backend, compiler,
                                  rtol=1e-4, atol=1e-4)
