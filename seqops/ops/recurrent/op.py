"""The recurrent ops as torch.library ops over a fused implementation: the LSTM cell step
and one direction of one LSTM layer over a (possibly packed) sequence, each with fake
kernels and autograd; their differentiable entry points for eager calls (reverse mode,
torch.func, and forward mode for the cell); and the multi-layer LSTM composed of layers."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from seqops import dispatch
from seqops.ops.autograd import differentiable, register_vmap_by_loop, without_double_backward
from seqops.ops.recurrent.stacking import Direction, Steps, run_stack

# ---------------------------------------------------------------------------- the cell


@torch.library.custom_op("seqops::lstm_cell", mutates_args=())
def lstm_cell_forward(
    input: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
    b_hh: Optional[Tensor], impl: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM step: input [B, I], h0, c0 [B, H], w_ih [4H, I], w_hh [4H, H], biases
    [4H] or None. Returns h1, c1 [B, H] and the gate activations [B, 4H] (fp32), which
    the backward needs."""
    return dispatch.implementation(impl).forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh)


@lstm_cell_forward.register_fake
def _lstm_cell_forward_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, impl):
    B, H = c0.shape
    return c0.new_empty(B, H, dtype=input.dtype), c0.new_empty(B, H, dtype=input.dtype), \
        c0.new_empty(B, 4 * H, dtype=torch.float32)


@torch.library.custom_op("seqops::lstm_cell_backward", mutates_args=())
def lstm_cell_backward(
    d_h1: Optional[Tensor], d_c1: Optional[Tensor], input: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor,
    w_hh: Tensor, c1: Tensor, gates: Tensor, has_bias: bool, impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of lstm_cell_forward: d_input, d_h0, d_c0, d_w_ih, d_w_hh and d_bias (the
    same for b_ih and b_hh; empty without biases)."""
    d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias = dispatch.implementation(impl).backward(
        d_h1, d_c1, input, h0, c0, w_ih, w_hh, c1, gates, has_bias)
    return d_input, d_h0, d_c0, d_w_ih, d_w_hh, (d_bias if d_bias is not None else input.new_empty(0))


@lstm_cell_backward.register_fake
def _lstm_cell_backward_fake(d_h1, d_c1, input, h0, c0, w_ih, w_hh, c1, gates, has_bias, impl):
    d_bias = w_ih.new_empty(w_ih.shape[0]) if has_bias else input.new_empty(0)
    return (input.new_empty(input.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape), w_ih.new_empty(w_ih.shape),
            w_hh.new_empty(w_hh.shape), d_bias)


def _cell_setup_context(ctx, inputs, output):
    input, h0, c0, w_ih, w_hh, b_ih, b_hh, impl = inputs
    h1, c1, gates = output
    ctx.save_for_backward(input, h0, c0, w_ih, w_hh, c1, gates)
    ctx.save_for_forward(input, h0, c0, w_ih, w_hh, c1, gates)
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)
    ctx.has_bias, ctx.impl = b_ih is not None, impl


def _cell_backward(ctx, d_h1, d_c1, d_gates):
    input, h0, c0, w_ih, w_hh, c1, gates = ctx.saved_tensors
    if d_h1 is None and d_c1 is None:
        return None, None, None, None, None, None, None, None
    d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias = differentiable_cell_backward(
        d_h1, d_c1, input, h0, c0, w_ih, w_hh, c1, gates, ctx.has_bias, ctx.impl)
    d_bias = d_bias if ctx.has_bias else None
    return d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias, d_bias, None


def _cell_jvp(ctx, t_input, t_h0, t_c0, t_w_ih, t_w_hh, t_b_ih, t_b_hh, _):
    """Tangents of h1 and c1 from the saved gate activations, in fp32 PyTorch ops:
    the gate pre-activations' tangent through each nonlinearity, then the cell update."""
    input, h0, c0, w_ih, w_hh, c1, gates = ctx.saved_tensors
    d_pre = torch.zeros_like(gates)
    for t, weight in ((t_input, w_ih), (t_h0, w_hh)):
        if t is not None:
            d_pre = d_pre + t.float() @ weight.float().t()
    for x, t in ((input, t_w_ih), (h0, t_w_hh)):
        if t is not None:
            d_pre = d_pre + x.float() @ t.float().t()
    for t in (t_b_ih, t_b_hh):
        if t is not None:
            d_pre = d_pre + t.float()
    i, f, g, o = gates.chunk(4, dim=-1)
    pre_i, pre_f, pre_g, pre_o = d_pre.chunk(4, dim=-1)
    d_i, d_f, d_g, d_o = i * (1 - i) * pre_i, f * (1 - f) * pre_f, (1 - g * g) * pre_g, o * (1 - o) * pre_o
    c = f * c0.float() + i * g
    d_c = d_f * c0.float() + i * d_g + d_i * g
    if t_c0 is not None:
        d_c = d_c + f * t_c0.float()
    tanh_c = torch.tanh(c)
    d_h = d_o * tanh_c + o * (1 - tanh_c * tanh_c) * d_c
    return d_h.to(c1.dtype), d_c.to(c1.dtype), None


lstm_cell_forward.register_autograd(_cell_backward, setup_context=_cell_setup_context)
differentiable_cell = differentiable("seqops.lstm_cell", lstm_cell_forward, _cell_setup_context, _cell_backward,
                                     _cell_jvp)
differentiable_cell_backward = without_double_backward("seqops.lstm_cell_backward", lstm_cell_backward)


# --------------------------------------------------------------------------- the layer


@torch.library.custom_op("seqops::lstm_layer", mutates_args=())
def lstm_layer_forward(
    xw: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], reverse: bool,
    impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One direction of one layer over a packed sequence: xw [N, 4H] (input projection
    with biases), batch_sizes [T] (int64, on the CPU), h0 [B, P], c0 [B, H], w_hh [4H, P],
    w_hr [P, H] or None. Returns out [N, P], h_n, c_n, and for the backward the gate
    activations, cell states (fp32) and h before the projection (empty without one)."""
    out, h_n, c_n, gates, cells, h_raw = dispatch.implementation(impl).forward(
        xw, batch_sizes.tolist(), h0, c0, w_hh, w_hr, reverse)
    return out, h_n, c_n, gates, cells, (h_raw if h_raw is not None else xw.new_empty(0))


@lstm_layer_forward.register_fake
def _lstm_layer_forward_fake(xw, batch_sizes, h0, c0, w_hh, w_hr, reverse, impl):
    N, H = xw.shape[0], xw.shape[1] // 4
    fp32 = dict(dtype=torch.float32)
    return (xw.new_empty(N, h0.shape[1]), h0.new_empty(h0.shape), c0.new_empty(c0.shape), xw.new_empty(N, 4 * H, **fp32),
            xw.new_empty(N, H, **fp32), xw.new_empty(N, H) if w_hr is not None else xw.new_empty(0))


@torch.library.custom_op("seqops::lstm_layer_backward", mutates_args=())
def lstm_layer_backward(
    d_out: Optional[Tensor], d_h_n: Optional[Tensor], d_c_n: Optional[Tensor], out: Tensor, gates: Tensor,
    cells: Tensor, h_raw: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], batch_sizes: Tensor,
    reverse: bool, impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward through time of lstm_layer_forward: d_xw, d_h0, d_c0, d_w_hh, d_w_hr (empty
    without a projection)."""
    d_xw, d_h0, d_c0, d_w_hh, d_w_hr = dispatch.implementation(impl).backward(
        d_out, d_h_n, d_c_n, out, gates, cells, h_raw if w_hr is not None else None, h0, c0, w_hh, w_hr,
        batch_sizes.tolist(), reverse)
    return d_xw, d_h0, d_c0, d_w_hh, (d_w_hr if d_w_hr is not None else w_hh.new_empty(0))


@lstm_layer_backward.register_fake
def _lstm_layer_backward_fake(d_out, d_h_n, d_c_n, out, gates, cells, h_raw, h0, c0, w_hh, w_hr, batch_sizes,
                              reverse, impl):
    N, H = gates.shape[0], gates.shape[1] // 4
    return (out.new_empty(N, 4 * H), h0.new_empty(h0.shape), c0.new_empty(c0.shape), w_hh.new_empty(w_hh.shape),
            w_hr.new_empty(w_hr.shape) if w_hr is not None else w_hh.new_empty(0))


def _layer_setup_context(ctx, inputs, output):
    xw, batch_sizes, h0, c0, w_hh, w_hr, reverse, impl = inputs
    out, h_n, c_n, gates, cells, h_raw = output
    ctx.save_for_backward(out, gates, cells, h_raw, h0, c0, w_hh, w_hr, batch_sizes)
    ctx.mark_non_differentiable(gates, cells, h_raw)
    ctx.set_materialize_grads(False)
    ctx.reverse, ctx.impl = reverse, impl


def _layer_backward(ctx, d_out, d_h_n, d_c_n, d_gates, d_cells, d_h_raw):
    out, gates, cells, h_raw, h0, c0, w_hh, w_hr, batch_sizes = ctx.saved_tensors
    if d_out is None and d_h_n is None and d_c_n is None:
        return None, None, None, None, None, None, None, None
    d_xw, d_h0, d_c0, d_w_hh, d_w_hr = differentiable_layer_backward(
        d_out, d_h_n, d_c_n, out, gates, cells, h_raw, h0, c0, w_hh, w_hr, batch_sizes, ctx.reverse, ctx.impl)
    return d_xw, None, d_h0, d_c0, d_w_hh, (d_w_hr if w_hr is not None else None), None, None


lstm_layer_forward.register_autograd(_layer_backward, setup_context=_layer_setup_context)
differentiable_layer = differentiable("seqops.lstm_layer", lstm_layer_forward, _layer_setup_context, _layer_backward)
differentiable_layer_backward = without_double_backward("seqops.lstm_layer_backward", lstm_layer_backward)


for _op in (lstm_cell_forward, lstm_cell_backward, lstm_layer_forward, lstm_layer_backward):
    register_vmap_by_loop(_op)


# ---------------------------------------------------------------------- the whole LSTM


# Rows per block of the input projection's weight gradient (_project_steps): few, so that
# a block's sum errs no more than the sums over one step's batch that torch's LSTM adds
# step by step.
WEIGHT_GRADIENT_BLOCK_ROWS = 16


def _project_steps(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """F.linear(input, weight, bias) for the rows of every step: input [N, I] -> [N, 4H].

    F.linear's backward takes the weight gradient as one GEMM over all N rows, which can
    add up all N products in one fp32 accumulator: an error that grows with the length of
    the sequence (on the CPU, 500 steps of 3 rows: typically 1.8x, at worst 3x the error of
    torch's own LSTM).
    Here the rows go in blocks through one batched product with the weight broadcast, so
    that autograd sums the weight gradient per block and then the blocks' partial sums
    (the broadcast's backward, torch.sum), as the layer op sums its own weight gradients.
    fp32 only: fp16 and bf16 results are rounded far more coarsely than any fp32 sum errs.
    A block has at least I rows, so that the partial sums take no more memory than the
    output."""
    N, I = input.shape
    rows = max(WEIGHT_GRADIENT_BLOCK_ROWS, I)
    if input.dtype != torch.float32 or N <= rows:
        return F.linear(input, weight, bias)
    blocks = -(-N // rows)
    padded = F.pad(input, (0, 0, 0, blocks * rows - N)).reshape(blocks, rows, I)
    out = padded @ weight.t().expand(blocks, I, weight.shape[0])
    if bias is not None:
        out = out + bias
    return out.view(blocks * rows, -1)[:N]


def run_fused_lstm(impl: dispatch.Impl, input: Tensor, batch_sizes: Optional[Tensor], hx: tuple[Tensor, Tensor],
                   weights: list[Tensor], has_biases: bool, num_layers: int, dropout: float, training: bool,
                   bidirectional: bool, proj_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """A multi-layer LSTM on the fused layer op of `impl`: per layer and direction, one
    GEMM projects the input of every step, then the layer op runs the steps."""
    h0, c0 = hx

    def run_direction(layer_input: Tensor, steps: Steps, direction: Direction) -> tuple[Tensor, Tensor, Tensor]:
        w = direction.weights
        xw = _project_steps(layer_input, w[0], w[2] + w[3] if has_biases else None)
        out, h, c, _, _, _ = differentiable_layer(xw, steps.as_tensor(), h0[direction.index], c0[direction.index],
                                                  w[1], w[-1] if proj_size > 0 else None, direction.reverse, impl.key)
        return out, h, c

    output, (h_n, c_n) = run_stack(input, batch_sizes, weights, 2 + 2 * has_biases + (proj_size > 0), num_layers,
                                   bidirectional, dropout, training, run_direction)
    return output, h_n, c_n
