"""The recurrent cells with one state (GRU; Elman RNN with tanh or relu) as torch.library
ops over a fused implementation: one factory makes each cell's forward and backward op,
fake kernels, autograd, vmap (by loop) and its differentiable entry point for eager calls
(reverse mode, torch.func, forward mode through the cell's jvp)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from seqops import dispatch
from seqops.ops.autograd import differentiable, register_vmap_by_loop, without_double_backward


class HiddenCellOp:
    """One cell's ops: `forward` (seqops::<name>), `backward` (seqops::<name>_backward),
    and `differentiable(input, h0, w_ih, w_hh, b_ih, b_hh, impl_key) -> (h1, saved)`.

    saved_per_unit: fp32 values per hidden unit the forward saves for the backward.
    jvp(saved tensors, tangents...) -> h1's tangent, from torch ops on the saved values."""

    def __init__(self, name: str, saved_per_unit: int, jvp: Callable):
        self.name = name

        @torch.library.custom_op(f"seqops::{name}", mutates_args=())
        def forward(input: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                    b_hh: Optional[Tensor], impl: str) -> tuple[Tensor, Tensor]:
            return dispatch.implementation(impl).forward(input, h0, w_ih, w_hh, b_ih, b_hh)

        forward.__doc__ = (f"One {name} step: input [B, I], h0 [B, H], w_ih [G*H, I], w_hh [G*H, H], biases [G*H] "
                           f"(both) or None. Returns h1 [B, H] and what the backward needs [B, {saved_per_unit}*H] "
                           "(fp32).")

        @forward.register_fake
        def _(input, h0, w_ih, w_hh, b_ih, b_hh, impl):
            B, H = h0.shape
            return h0.new_empty(B, H, dtype=input.dtype), h0.new_empty(B, saved_per_unit * H, dtype=torch.float32)

        @torch.library.custom_op(f"seqops::{name}_backward", mutates_args=())
        def backward(d_h1: Tensor, input: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, saved: Tensor,
                     has_bias: bool, impl: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
            d_input, d_h0, d_w_ih, d_w_hh, d_b_ih, d_b_hh = dispatch.implementation(impl).backward(
                d_h1, input, h0, w_ih, w_hh, saved, has_bias)
            if not has_bias:
                return d_input, d_h0, d_w_ih, d_w_hh, input.new_empty(0), input.new_empty(0)
            # A custom op's outputs may not alias one another: the RNNs' two bias gradients are one value.
            return d_input, d_h0, d_w_ih, d_w_hh, d_b_ih, (d_b_hh.clone() if d_b_hh is d_b_ih else d_b_hh)

        backward.__doc__ = f"Gradients of seqops::{name}: d_input, d_h0, d_w_ih, d_w_hh, d_b_ih, d_b_hh (empty without biases)."

        @backward.register_fake
        def _(d_h1, input, h0, w_ih, w_hh, saved, has_bias, impl):
            bias = (lambda: w_ih.new_empty(w_ih.shape[0])) if has_bias else (lambda: input.new_empty(0))
            return (input.new_empty(input.shape), h0.new_empty(h0.shape), w_ih.new_empty(w_ih.shape),
                    w_hh.new_empty(w_hh.shape), bias(), bias())

        def setup_context(ctx, inputs, output):
            input, h0, w_ih, w_hh, b_ih, b_hh, impl = inputs
            h1, saved = output
            ctx.save_for_backward(input, h0, w_ih, w_hh, saved)
            ctx.save_for_forward(input, h0, w_ih, w_hh, saved)
            ctx.mark_non_differentiable(saved)
            ctx.set_materialize_grads(False)
            ctx.has_bias, ctx.impl, ctx.out_dtype = b_ih is not None, impl, h1.dtype

        def backward_rule(ctx, d_h1, d_saved):
            input, h0, w_ih, w_hh, saved = ctx.saved_tensors
            if d_h1 is None:
                return None, None, None, None, None, None, None
            d_input, d_h0, d_w_ih, d_w_hh, d_b_ih, d_b_hh = self.differentiable_backward(
                d_h1, input, h0, w_ih, w_hh, saved, ctx.has_bias, ctx.impl)
            if not ctx.has_bias:
                d_b_ih = d_b_hh = None
            return d_input, d_h0, d_w_ih, d_w_hh, d_b_ih, d_b_hh, None

        def jvp_rule(ctx, t_input, t_h0, t_w_ih, t_w_hh, t_b_ih, t_b_hh, _):
            input, h0, w_ih, w_hh, saved = ctx.saved_tensors
            f = lambda t: t.float() if t is not None else None  # noqa: E731
            # The tangents of the two products: x W_ih^T + b_ih and h W_hh^T + b_hh.
            d_gi = _product_tangent(input, w_ih, f(t_input), f(t_w_ih), f(t_b_ih))
            d_gh = _product_tangent(h0, w_hh, f(t_h0), f(t_w_hh), f(t_b_hh))
            return jvp(saved, h0.float(), f(t_h0), d_gi, d_gh).to(ctx.out_dtype), None

        forward.register_autograd(backward_rule, setup_context=setup_context)
        register_vmap_by_loop(forward)
        register_vmap_by_loop(backward)
        self.forward, self.backward = forward, backward
        self.differentiable = differentiable(f"seqops.{name}", forward, setup_context, backward_rule, jvp_rule)
        self.differentiable_backward = without_double_backward(f"seqops.{name}_backward", backward)


def _product_tangent(x: Tensor, w: Tensor, t_x: Optional[Tensor], t_w: Optional[Tensor],
                     t_b: Optional[Tensor]) -> Optional[Tensor]:
    """Tangent of x @ w^T + b in fp32 ([B, G*H]), or None when nothing varies."""
    total = None
    for term in (t_x @ w.float().t() if t_x is not None else None, x.float() @ t_w.t() if t_w is not None else None,
                 t_b):
        if term is not None:
            total = term if total is None else total + term
    return total


def _gru_jvp(saved: Tensor, h0: Tensor, t_h0: Optional[Tensor], d_gi: Optional[Tensor],
             d_gh: Optional[Tensor]) -> Tensor:
    """h1's tangent of a GRU step from its saved r, z, n, hn [B, 4H] and the tangents of
    the input and recurrent products [B, 3H] (None: zero)."""
    r, z, n, hn = saved.chunk(4, dim=-1)
    zero = torch.zeros_like(torch.cat([r, z, n], dim=-1))
    d_gi = zero if d_gi is None else d_gi
    d_gh = zero if d_gh is None else d_gh
    gi_r, gi_z, gi_n = d_gi.chunk(3, dim=-1)
    gh_r, gh_z, gh_n = d_gh.chunk(3, dim=-1)
    d_r = r * (1 - r) * (gi_r + gh_r)
    d_z = z * (1 - z) * (gi_z + gh_z)
    d_n = (1 - n * n) * (gi_n + d_r * hn + r * gh_n)
    d_h1 = (1 - z) * d_n + d_z * (h0 - n)
    if t_h0 is not None:
        d_h1 = d_h1 + z * t_h0
    return d_h1


def _rnn_jvp(relu: bool) -> Callable:
    def jvp(saved: Tensor, h0: Tensor, t_h0: Optional[Tensor], d_gi: Optional[Tensor],
            d_gh: Optional[Tensor]) -> Tensor:
        """h1's tangent of an RNN step from its saved output [B, H] (fp32)."""
        d_pre = sum(t for t in (d_gi, d_gh) if t is not None)
        if not isinstance(d_pre, Tensor):
            return torch.zeros_like(saved)
        return torch.where(saved > 0, d_pre, 0.0) if relu else (1 - saved * saved) * d_pre

    return jvp


CELLS = {
    "gru_cell": HiddenCellOp("gru_cell", 4, _gru_jvp),
    "rnn_tanh_cell": HiddenCellOp("rnn_tanh_cell", 1, _rnn_jvp(relu=False)),
    "rnn_relu_cell": HiddenCellOp("rnn_relu_cell", 1, _rnn_jvp(relu=True)),
}
