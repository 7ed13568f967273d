"""Softmax as torch ops: the fused kernels registered with torch.library (autograd, fake
kernels, double backward), and the table of backends that can run seqops.softmax."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops import backends, reference, torch_backend

FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _launchers(backend: str):
    """The module holding softmax_forward / softmax_backward of a fused backend."""
    if backend == "triton":
        from seqops.kernels import softmax as triton_softmax

        return triton_softmax
    raise ValueError(f"seqops::softmax has no fused backend {backend!r}")


@torch.library.custom_op("seqops::softmax", mutates_args=())
def fused_softmax(
    input: Tensor, mask: Optional[Tensor], dim: int, scale: float, causal: bool,
    dtype: Optional[torch.dtype], backend: str,
) -> Tensor:
    """softmax(scale * input) along dim, masked; a contiguous tensor in `dtype` (default:
    input's). `dim` is non-negative; `backend` names the fused kernels that run it."""
    return _launchers(backend).softmax_forward(input, mask, dim, scale, causal, dtype or input.dtype)


@fused_softmax.register_fake
def _fused_softmax_fake(input, mask, dim, scale, causal, dtype, backend):
    return input.new_empty(input.shape, dtype=dtype or input.dtype)


@torch.library.custom_op("seqops::softmax_backward", mutates_args=())
def fused_softmax_backward(
    grad_output: Tensor, output: Tensor, mask: Optional[Tensor], dim: int, scale: float, causal: bool,
    input_dtype: torch.dtype, backend: str,
) -> Tensor:
    """Gradient w.r.t. the input of output = softmax(scale * input) along dim, masked as
    the forward was: scale * output * (grad_output - sum(grad_output * output)), and
    exactly 0 at masked entries; in `input_dtype`."""
    return _launchers(backend).softmax_backward(grad_output, output, mask, dim, scale, causal, input_dtype)


@fused_softmax_backward.register_fake
def _fused_softmax_backward_fake(grad_output, output, mask, dim, scale, causal, input_dtype, backend):
    return output.new_empty(output.shape, dtype=input_dtype)


def _softmax_setup_context(ctx, inputs, output):
    input, mask, dim, scale, causal, dtype, backend = inputs
    ctx.save_for_backward(output, mask)
    ctx.dim, ctx.scale, ctx.causal, ctx.input_dtype, ctx.backend = dim, scale, causal, input.dtype, backend


def _softmax_backward(ctx, grad_output):
    output, mask = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = fused_softmax_backward(
            grad_output, output, mask, ctx.dim, ctx.scale, ctx.causal, ctx.input_dtype, ctx.backend
        )
    return grad_input, None, None, None, None, None, None


fused_softmax.register_autograd(_softmax_backward, setup_context=_softmax_setup_context)


def _softmax_backward_setup_context(ctx, inputs, output):
    grad_output, output_, mask, dim, scale, causal, input_dtype, backend = inputs
    ctx.save_for_backward(grad_output, output_, mask)
    ctx.dim, ctx.scale, ctx.causal, ctx.backend = dim, scale, causal, backend


def _softmax_double_backward(ctx, grad_grad_input):
    """Backward of dx = s * y * (g - sum(g * y)) (0 where masked) w.r.t. g and y, for
    double backward. d/dg has the form of the softmax backward itself; d/dy is written
    out (at masked entries it meets the forward's backward, which zeroes it)."""
    g, y, mask = ctx.saved_tensors
    grad_g = grad_y = None
    if ctx.needs_input_grad[0]:
        grad_g = fused_softmax_backward(
            grad_grad_input, y, mask, ctx.dim, ctx.scale, ctx.causal, g.dtype, ctx.backend
        )
    if ctx.needs_input_grad[1]:
        gg, g32, y32 = grad_grad_input.float(), g.float(), y.float()
        g_dot_y = (g32 * y32).sum(ctx.dim, keepdim=True)
        gg_dot_y = (gg * y32).sum(ctx.dim, keepdim=True)
        grad_y = (ctx.scale * (gg * (g32 - g_dot_y) - g32 * gg_dot_y)).to(y.dtype)
    return grad_g, grad_y, None, None, None, None, None, None


fused_softmax_backward.register_autograd(_softmax_double_backward, setup_context=_softmax_backward_setup_context)


def _fused_supports(input: Tensor, dim: int, dtype: Optional[torch.dtype], **_) -> Optional[str]:
    out_dtype = dtype or input.dtype
    if out_dtype not in FUSED_DTYPES:
        return (
            f"the fused softmax computes in float32, float16 and bfloat16, got {out_dtype} "
            "(float64 runs on the torch backend)"
        )
    # With dtype= the kernel reads any real input and rounds it to out_dtype itself.
    if input.dtype.is_complex or input.dtype == torch.bool:
        return f"the fused softmax reads real inputs, got {input.dtype}"
    return None


def _fused(backend: str):
    def run(input: Tensor, dim: int, dtype: Optional[torch.dtype], *, scale: float, mask: Optional[Tensor],
            causal: bool) -> Tensor:
        return fused_softmax(input, mask, dim, scale, causal, dtype, backend)

    return run


SOFTMAX = backends.OpBackends("softmax")
SOFTMAX.register("triton", _fused("triton"), supports=_fused_supports)
SOFTMAX.register("torch", torch_backend.softmax)
SOFTMAX.register("reference", reference.softmax)
