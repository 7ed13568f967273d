"""The attention ops as torch.library ops: torch.library.opcheck (schema, fake kernels,
autograd registration, AOT dispatch) and torch.compile(fullgraph=True) with no graph
break, forward and backward."""
import pytest
import torch

import seqops
from seqops.ops.attention.op import attention_backward as fused_attention_backward
from seqops.ops.attention.op import attention_forward as fused_attention_forward

TRITON = "attention/triton/fused"
from compiled import COMPILE_BACKENDS, COMPILERS, assert_compiled_matches_eager
from devices import DEVICES, skip_unless_runnable


def opcheck_cases(device):
    q = torch.randn(2, 4, 19, 16, device=device, requires_grad=True)
    k = torch.randn(2, 2, 23, 16, device=device, requires_grad=True)
    v = torch.randn(2, 2, 23, 24, device=device, requires_grad=True)
    bool_mask = torch.rand(1, 4, 19, 23, device=device) > 0.2
    bool_mask[..., 0] = True  # no empty rows: opcheck compares without equal_nan
    float_mask = torch.randn(2, 1, 1, 23, device=device, requires_grad=True)
    return [
        (q, k, v, None, False),
        (q, k, v, bool_mask, True),
        (q, k, v, float_mask, False),
        (q.detach().half().requires_grad_(), k.detach().half(), v.detach().half(), None, True),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_attention_forward(device):
    skip_unless_runnable(device, "triton")
    for q, k, v, mask, causal in opcheck_cases(device):
        torch.library.opcheck(fused_attention_forward, (q, k, v, mask, 0.0, causal, 0, 0.25, TRITON))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_attention_backward(device):
    skip_unless_runnable(device, "triton")
    for q, k, v, mask, causal in opcheck_cases(device):
        # Inputs that do not require grad: the backward has no backward (see below).
        q, k, v = q.detach(), k.detach(), v.detach()
        mask_grad = mask is not None and mask.is_floating_point()
        mask = None if mask is None else mask.detach()
        out, lse, seed = fused_attention_forward(q, k, v, mask, 0.0, causal, 0, 0.25, TRITON)
        grad = torch.randn_like(out)
        torch.library.opcheck(fused_attention_backward,
                              (grad, q, k, v, out, lse, seed, mask, 0.0, causal, 0, 0.25, mask_grad, TRITON))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_is_refused_clearly(device):
    """Like torch's flash kernels, the fused attention has no double backward; asking for
    one names the op instead of returning a wrong gradient."""
    skip_unless_runnable(device, "triton")
    q, k, v = (torch.randn(1, 2, 9, 16, device=device, requires_grad=True) for _ in range(3))
    with seqops.backend("triton"):
        out = seqops.scaled_dot_product_attention(q, k, v)
    (dq,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="seqops.attention_backward"):
        dq.sum().backward()


def attention_block(x, w_qkv, w_out, padding):
    """A transformer attention block: projection, causal masked attention, projection."""
    B, L, _ = x.shape
    q, k, v = (x @ w_qkv).view(B, L, 3, 2, 16).permute(2, 0, 3, 1, 4)
    attended = seqops.scaled_dot_product_attention(q, k, v, attn_mask=padding, is_causal=True)
    return attended.transpose(1, 2).reshape(B, L, 32) @ w_out


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device, backend, compiler):
    skip_unless_runnable(device, backend)
    x = torch.randn(2, 21, 32, device=device)
    w_qkv = torch.randn(32, 96, device=device, requires_grad=True)
    w_out = torch.randn(32, 32, device=device, requires_grad=True)
    padding = (torch.rand(2, 1, 1, 21, device=device) > 0.2) | (torch.arange(21, device=device) == 0)
    assert_compiled_matches_eager(attention_block, (x, w_qkv, w_out, padding), (w_qkv, w_out), backend, compiler,
                                  rtol=1e-4, atol=1e-4)
