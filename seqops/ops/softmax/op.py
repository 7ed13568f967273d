"""softmax as torch.library ops over a fused implementation: forward and backward ops
(fake kernels for tracing, autograd for torch.compile, a double backward), and the
differentiable entry point eager calls take (reverse and forward mode, torch.func)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops import dispatch
from seqops.ops.autograd import differentiable, to_front
from seqops.ops.masks import causal_keep


@torch.library.custom_op("seqops::softmax", mutates_args=())
def softmax_forward(
    input: Tensor, mask: Optional[Tensor], dim: int, scale: float, causal: bool,
    dtype: Optional[torch.dtype], impl: str,
) -> Tensor:
    """softmax(scale * input) along dim, masked; a contiguous tensor in `dtype` (default:
    input's). `dim` is non-negative; `impl` is the key of the implementation that runs it."""
    return dispatch.implementation(impl).forward(input, mask, dim, scale, causal, dtype or input.dtype)


@softmax_forward.register_fake
def _softmax_forward_fake(input, mask, dim, scale, causal, dtype, impl):
    return input.new_empty(input.shape, dtype=dtype or input.dtype)


@torch.library.custom_op("seqops::softmax_backward", mutates_args=())
def softmax_backward(
    grad_output: Tensor, output: Tensor, mask: Optional[Tensor], dim: int, scale: float, causal: bool,
    input_dtype: torch.dtype, impl: str,
) -> Tensor:
    """Gradient w.r.t. the input of output = softmax(scale * input) along dim, masked as
    the forward was: scale * output * (grad_output - sum(grad_output * output)), and
    exactly 0 at masked entries; in `input_dtype`."""
    return dispatch.implementation(impl).backward(grad_output, output, mask, dim, scale, causal, input_dtype)


@softmax_backward.register_fake
def _softmax_backward_fake(grad_output, output, mask, dim, scale, causal, input_dtype, impl):
    return output.new_empty(output.shape, dtype=input_dtype)


def _forward_setup_context(ctx, inputs, output):
    input, mask, dim, scale, causal, dtype, impl = inputs
    ctx.save_for_backward(output, mask)
    ctx.save_for_forward(output, mask)
    ctx.dim, ctx.scale, ctx.causal, ctx.input_dtype, ctx.impl = dim, scale, causal, input.dtype, impl


def _forward_backward(ctx, grad_output):
    output, mask = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = differentiable_backward(grad_output, output, mask, ctx.dim, ctx.scale, ctx.causal,
                                             ctx.input_dtype, ctx.impl)
    return grad_input, None, None, None, None, None, None


def _forward_jvp(ctx, input_tangent, *_):
    """The softmax Jacobian is symmetric, so the tangent of y is the backward applied to
    the input's tangent: scale * y * (t - sum(t * y)), 0 where masked."""
    output, mask = ctx.saved_tensors
    return softmax_backward(input_tangent, output, mask, ctx.dim, ctx.scale, ctx.causal, output.dtype, ctx.impl)


def _backward_setup_context(ctx, inputs, output):
    grad_output, output_, mask, dim, scale, causal, input_dtype, impl = inputs
    ctx.save_for_backward(grad_output, output_, mask)
    ctx.save_for_forward(grad_output, output_, mask)
    ctx.dim, ctx.scale, ctx.causal, ctx.impl = dim, scale, causal, impl


def _backward_backward(ctx, grad_grad_input):
    """Backward of dx = s * y * (g - sum(g * y)) (0 where masked) w.r.t. g and y, for
    double backward. d/dg has the form of the softmax backward itself; d/dy is written
    out (at masked entries it meets the forward's backward, which zeroes it)."""
    g, y, mask = ctx.saved_tensors
    grad_g = grad_y = None
    if ctx.needs_input_grad[0]:
        grad_g = differentiable_backward(grad_grad_input, y, mask, ctx.dim, ctx.scale, ctx.causal, g.dtype, ctx.impl)
    if ctx.needs_input_grad[1]:
        gg, g32, y32 = grad_grad_input.float(), g.float(), y.float()
        g_dot_y = (g32 * y32).sum(ctx.dim, keepdim=True)
        gg_dot_y = (gg * y32).sum(ctx.dim, keepdim=True)
        grad_y = (ctx.scale * (gg * (g32 - g_dot_y) - g32 * gg_dot_y)).to(y.dtype)
    return grad_g, grad_y, None, None, None, None, None, None


def _backward_jvp(ctx, g_tangent, y_tangent, *_):
    """Tangent of dx = s * y * (g - sum(g * y)), 0 where masked (forward over reverse,
    as torch.func.hessian takes it), in fp32 PyTorch ops."""
    g, y, mask = ctx.saved_tensors
    g32, y32 = g.float(), y.float()
    tg = g_tangent.float() if g_tangent is not None else torch.zeros_like(g32)
    ty = y_tangent.float() if y_tangent is not None else torch.zeros_like(y32)
    g_dot_y = (g32 * y32).sum(ctx.dim, keepdim=True)
    tangent_dot = (tg * y32 + g32 * ty).sum(ctx.dim, keepdim=True)
    tangent = ctx.scale * (ty * (g32 - g_dot_y) + y32 * (tg - tangent_dot))
    keep = torch.ones((), dtype=torch.bool, device=y.device)
    if mask is not None:
        keep = keep & mask
    if ctx.causal:
        keep = keep & causal_keep(y.shape[-2], y.shape[-1], y.device)
    return tangent.masked_fill(~keep, 0.0).to(g.dtype)


softmax_forward.register_autograd(_forward_backward, setup_context=_forward_setup_context)
softmax_backward.register_autograd(_backward_backward, setup_context=_backward_setup_context)
differentiable_forward = differentiable("seqops.softmax", softmax_forward, _forward_setup_context,
                                        _forward_backward, _forward_jvp)
differentiable_backward = differentiable("seqops.softmax_backward", softmax_backward, _backward_setup_context,
                                         _backward_backward, _backward_jvp)


def _rows_for_vmap(info, tensors_and_dims, mask, mask_dim, dim):
    """The vmapped operands as one batched call: each tensor with the vmapped dim first
    (a 0-d softmax gets a dim of its own to run along), the mask aligned to them, and the
    softmax dim shifted past the new one."""
    logical_rank = next(t.dim() - (d is not None) for t, d in tensors_and_dims)
    tensors = [to_front(t, d, info.batch_size) for t, d in tensors_and_dims]
    if logical_rank == 0:
        tensors = [t.unsqueeze(1) for t in tensors]
    if mask is not None and mask_dim is not None:
        mask = mask.movedim(mask_dim, 0)
        mask = mask.reshape(mask.shape[0], *(1,) * (max(logical_rank, 1) - (mask.dim() - 1)), *mask.shape[1:])
    return tensors, mask, dim + 1, logical_rank == 0


def _forward_vmap(info, in_dims, input, mask, dim, scale, causal, dtype, impl):
    (x,), mask, dim, scalar = _rows_for_vmap(info, [(input, in_dims[0])], mask, in_dims[1], dim)
    y = softmax_forward(x, mask, dim, scale, causal, dtype, impl)
    return (y.squeeze(1) if scalar else y), 0


def _backward_vmap(info, in_dims, grad_output, output, mask, dim, scale, causal, input_dtype, impl):
    (g, y), mask, dim, scalar = _rows_for_vmap(info, [(grad_output, in_dims[0]), (output, in_dims[1])], mask,
                                               in_dims[2], dim)
    dx = softmax_backward(g, y, mask, dim, scale, causal, input_dtype, impl)
    return (dx.squeeze(1) if scalar else dx), 0


torch.library.register_vmap(softmax_forward, _forward_vmap)
torch.library.register_vmap(softmax_backward, _backward_vmap)
