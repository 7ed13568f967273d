"""One direction of one GRU or RNN layer over a (possibly packed) sequence as torch.library
ops over a fused implementation (fake kernels, autograd, vmap by loop), and the
multi-layer GRU/RNN composed of them."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops import dispatch
from seqops.ops.autograd import differentiable, register_vmap_by_loop, without_double_backward
from seqops.ops.recurrent.contract import SAVED_PER_UNIT
from seqops.ops.recurrent.stacking import Direction, Steps, run_stack
from seqops.ops.recurrent.op import _project_steps


class HiddenLayerOp:
    """One mode's layer ops: `forward` (seqops::<mode>_layer), `backward`
    (seqops::<mode>_layer_backward) and `differentiable(xw, batch_sizes, h0, w_hh, b_hh,
    reverse, impl_key) -> (out, h_n, saved)` for eager calls."""

    def __init__(self, mode: str):
        saved_per_unit = SAVED_PER_UNIT[mode]

        @torch.library.custom_op(f"seqops::{mode}_layer", mutates_args=())
        def forward(xw: Tensor, batch_sizes: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], reverse: bool,
                    impl: str) -> tuple[Tensor, Tensor, Tensor]:
            return dispatch.implementation(impl).forward(xw, batch_sizes.tolist(), h0, w_hh, b_hh, reverse)

        forward.__doc__ = (f"One direction of one {mode} layer over a packed sequence: xw [N, G*H] (input projection), "
                           "batch_sizes [T] (int64, CPU), h0 [B, H], w_hh [G*H, H], b_hh [G*H] or None. Returns out "
                           f"[N, H], h_n [B, H] and saved [N, {saved_per_unit}*H] (fp32) for the backward.")

        @forward.register_fake
        def _(xw, batch_sizes, h0, w_hh, b_hh, reverse, impl):
            N, H = xw.shape[0], w_hh.shape[1]
            return xw.new_empty(N, H), h0.new_empty(h0.shape), xw.new_empty(N, saved_per_unit * H, dtype=torch.float32)

        @torch.library.custom_op(f"seqops::{mode}_layer_backward", mutates_args=())
        def backward(d_out: Optional[Tensor], d_h_n: Optional[Tensor], out: Tensor, saved: Tensor, h0: Tensor,
                     w_hh: Tensor, batch_sizes: Tensor, reverse: bool, has_b_hh: bool,
                     impl: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            d_xw, d_h0, d_w_hh, d_b_hh = dispatch.implementation(impl).backward(
                d_out, d_h_n, out, saved, h0, w_hh, batch_sizes.tolist(), reverse, has_b_hh)
            return d_xw, d_h0, d_w_hh, (d_b_hh if d_b_hh is not None else w_hh.new_empty(0))

        backward.__doc__ = f"Backward through time of seqops::{mode}_layer: d_xw, d_h0, d_w_hh, d_b_hh (empty without)."

        @backward.register_fake
        def _(d_out, d_h_n, out, saved, h0, w_hh, batch_sizes, reverse, has_b_hh, impl):
            G = w_hh.shape[0] // w_hh.shape[1] if w_hh.shape[1] else 1
            return (out.new_empty(out.shape[0], G * w_hh.shape[1]), h0.new_empty(h0.shape), w_hh.new_empty(w_hh.shape),
                    w_hh.new_empty(w_hh.shape[0]) if has_b_hh else w_hh.new_empty(0))

        def setup_context(ctx, inputs, output):
            xw, batch_sizes, h0, w_hh, b_hh, reverse, impl = inputs
            out, h_n, saved = output
            ctx.save_for_backward(out, saved, h0, w_hh, batch_sizes)
            ctx.mark_non_differentiable(saved)
            ctx.set_materialize_grads(False)
            ctx.reverse, ctx.impl, ctx.has_b_hh = reverse, impl, b_hh is not None

        def backward_rule(ctx, d_out, d_h_n, d_saved):
            out, saved, h0, w_hh, batch_sizes = ctx.saved_tensors
            if d_out is None and d_h_n is None:
                return None, None, None, None, None, None, None
            d_xw, d_h0, d_w_hh, d_b_hh = self.differentiable_backward(
                d_out, d_h_n, out, saved, h0, w_hh, batch_sizes, ctx.reverse, ctx.has_b_hh, ctx.impl)
            return d_xw, None, d_h0, d_w_hh, (d_b_hh if ctx.has_b_hh else None), None, None

        forward.register_autograd(backward_rule, setup_context=setup_context)
        register_vmap_by_loop(forward)
        register_vmap_by_loop(backward)
        self.forward, self.backward = forward, backward
        self.differentiable = differentiable(f"seqops.{mode}_layer", forward, setup_context, backward_rule)
        self.differentiable_backward = without_double_backward(f"seqops.{mode}_layer_backward", backward)


LAYERS = {mode: HiddenLayerOp(mode) for mode in SAVED_PER_UNIT}


def run_fused_hidden_rnn(impl: dispatch.Impl, mode: str, input: Tensor, batch_sizes: Optional[Tensor], hx: Tensor,
                         weights: list[Tensor], has_biases: bool, num_layers: int, dropout: float, training: bool,
                         bidirectional: bool) -> tuple[Tensor, Tensor]:
    """A multi-layer GRU or RNN on the fused layer op of `impl`: per layer and direction,
    one GEMM projects the input of every step (with b_ih), then the layer op runs the
    steps, adding b_hh to the recurrent product (b_ih + b_hh rounded once would put one
    rounding error into every step's pre-activation alike)."""
    layer_op = LAYERS[mode]

    def run_direction(layer_input: Tensor, steps: Steps, direction: Direction) -> tuple[Tensor, Tensor]:
        w = direction.weights
        b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
        xw = _project_steps(layer_input, w[0], b_ih)
        out, h, _ = layer_op.differentiable(xw, steps.as_tensor(), hx[direction.index], w[1], b_hh, direction.reverse,
                                            impl.key)
        return out, h

    output, (h_n,) = run_stack(input, batch_sizes, weights, 4 if has_biases else 2, num_layers, bidirectional,
                               dropout, training, run_direction)
    return output, h_n
