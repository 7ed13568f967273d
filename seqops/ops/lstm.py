"""LSTM as torch ops: the fused cell step and the fused layer (one direction of one layer
over a whole, possibly packed, sequence) registered with torch.library (autograd, fake
kernels); the multi-layer LSTM built on the layer op; and the backend tables of
seqops.lstm_cell and seqops.lstm."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from seqops import backends, reference, torch_backend

FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _launchers(backend: str):
    """The module holding the LSTM step and layer launchers of a fused backend."""
    if backend == "triton":
        from seqops.kernels import lstm as triton_lstm

        return triton_lstm
    raise ValueError(f"seqops::lstm has no fused backend {backend!r}")


# ---------------------------------------------------------------------------- the cell

@torch.library.custom_op("seqops::lstm_cell", mutates_args=())
def fused_lstm_cell(
    input: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
    b_hh: Optional[Tensor], backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM step in one kernel: input [B, I], h0, c0 [B, H], w_ih [4H, I],
    w_hh [4H, H], biases [4H] or None. Returns h1, c1 [B, H] and the gate activations
    [B, 4H] (fp32), which the backward needs."""
    kernels = _launchers(backend)
    B, H = c0.shape
    h1, c1 = torch.empty_like(c0, dtype=input.dtype), torch.empty_like(c0, dtype=input.dtype)
    gates = torch.empty(B, 4 * H, dtype=torch.float32, device=input.device)
    kernels.lstm_step_forward(kernels.StepState(None, h0, 0), kernels.StepState(None, c0, 0), w_hh, B, h1, c1, gates,
                              x=input, w_ih=w_ih, b_ih=b_ih, b_hh=b_hh)
    return h1, c1, gates


@fused_lstm_cell.register_fake
def _fused_lstm_cell_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, backend):
    B, H = c0.shape
    return c0.new_empty(B, H, dtype=input.dtype), c0.new_empty(B, H, dtype=input.dtype), \
        c0.new_empty(B, 4 * H, dtype=torch.float32)


@torch.library.custom_op("seqops::lstm_cell_backward", mutates_args=())
def fused_lstm_cell_backward(
    d_h1: Optional[Tensor], d_c1: Optional[Tensor], input: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor,
    w_hh: Tensor, c1: Tensor, gates: Tensor, has_bias: bool, backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of fused_lstm_cell: d_input, d_h0, d_c0, d_w_ih, d_w_hh and d_bias (the
    same for b_ih and b_hh; empty without biases). The gate gradients and
    dgates @ W_hh come from one kernel, which also sums dgates per block of rows."""
    kernels = _launchers(backend)
    B, H = c0.shape
    fp32 = dict(dtype=torch.float32, device=input.device)
    dgates = torch.empty(B, 4 * H, **fp32)
    d_h0, d_c0 = torch.zeros(B, H, **fp32), torch.zeros(B, H, **fp32)
    dbias = torch.zeros(kernels.bias_grad_blocks(B, H, H), 4 * H, **fp32) if has_bias else None
    dc_carry = kernels.StepState(None, d_c1, 0) if d_c1 is not None else None
    kernels.lstm_step_backward(d_h1, None, dc_carry, gates, c1, kernels.StepState(None, c0, 0), w_hh, B, dgates,
                               kernels.StepState(None, d_c0, 0), kernels.StepState(None, d_h0, 0), dbias)
    dgates = dgates.to(w_ih.dtype)
    d_bias = dbias.sum(0).to(w_ih.dtype) if has_bias else input.new_empty(0)
    return (dgates @ w_ih, d_h0.to(h0.dtype), d_c0.to(c0.dtype), dgates.t() @ input, dgates.t() @ h0.to(w_hh.dtype),
            d_bias)


@fused_lstm_cell_backward.register_fake
def _fused_lstm_cell_backward_fake(d_h1, d_c1, input, h0, c0, w_ih, w_hh, c1, gates, has_bias, backend):
    d_bias = w_ih.new_empty(w_ih.shape[0]) if has_bias else input.new_empty(0)
    return (input.new_empty(input.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape), w_ih.new_empty(w_ih.shape),
            w_hh.new_empty(w_hh.shape), d_bias)


def _cell_setup_context(ctx, inputs, output):
    input, h0, c0, w_ih, w_hh, b_ih, b_hh, backend = inputs
    h1, c1, gates = output
    ctx.save_for_backward(input, h0, c0, w_ih, w_hh, c1, gates)
    ctx.has_bias, ctx.backend = b_ih is not None, backend


def _cell_backward(ctx, d_h1, d_c1, d_gates):
    input, h0, c0, w_ih, w_hh, c1, gates = ctx.saved_tensors
    d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias = fused_lstm_cell_backward(
        d_h1, d_c1, input, h0, c0, w_ih, w_hh, c1, gates, ctx.has_bias, ctx.backend)
    d_bias = d_bias if ctx.has_bias else None
    return d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_bias, d_bias, None


fused_lstm_cell.register_autograd(_cell_backward, setup_context=_cell_setup_context)


# --------------------------------------------------------------------------- the layer

@torch.library.custom_op("seqops::lstm_layer", mutates_args=())
def fused_lstm_layer(
    xw: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], reverse: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One direction of one layer over a packed sequence: xw [N, 4H] (input projection
    with biases), batch_sizes [T] (int64, on the CPU), h0 [B, P], c0 [B, H], w_hh [4H, P],
    w_hr [P, H] or None. Returns out [N, P], h_n, c_n, and for the backward the gate
    activations, cell states (fp32) and h before the projection (empty without one)."""
    out, h_n, c_n, gates, cells, h_raw = _launchers(backend).lstm_layer_forward(
        xw, batch_sizes.tolist(), h0, c0, w_hh, w_hr, reverse)
    return out, h_n, c_n, gates, cells, (h_raw if h_raw is not None else xw.new_empty(0))


@fused_lstm_layer.register_fake
def _fused_lstm_layer_fake(xw, batch_sizes, h0, c0, w_hh, w_hr, reverse, backend):
    N, H = xw.shape[0], xw.shape[1] // 4
    fp32 = dict(dtype=torch.float32)
    return (xw.new_empty(N, h0.shape[1]), h0.new_empty(h0.shape), c0.new_empty(c0.shape), xw.new_empty(N, 4 * H, **fp32),
            xw.new_empty(N, H, **fp32), xw.new_empty(N, H) if w_hr is not None else xw.new_empty(0))


@torch.library.custom_op("seqops::lstm_layer_backward", mutates_args=())
def fused_lstm_layer_backward(
    d_out: Optional[Tensor], d_h_n: Optional[Tensor], d_c_n: Optional[Tensor], out: Tensor, gates: Tensor,
    cells: Tensor, h_raw: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], batch_sizes: Tensor,
    reverse: bool, backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward through time of fused_lstm_layer: d_xw, d_h0, d_c0, d_w_hh, d_w_hr (empty
    without a projection)."""
    d_xw, d_h0, d_c0, d_w_hh, d_w_hr = _launchers(backend).lstm_layer_backward(
        d_out, d_h_n, d_c_n, out, gates, cells, h_raw if w_hr is not None else None, h0, c0, w_hh, w_hr,
        batch_sizes.tolist(), reverse)
    return d_xw, d_h0, d_c0, d_w_hh, (d_w_hr if d_w_hr is not None else w_hh.new_empty(0))


@fused_lstm_layer_backward.register_fake
def _fused_lstm_layer_backward_fake(d_out, d_h_n, d_c_n, out, gates, cells, h_raw, h0, c0, w_hh, w_hr, batch_sizes,
                                    reverse, backend):
    N, H = gates.shape[0], gates.shape[1] // 4
    return (out.new_empty(N, 4 * H), h0.new_empty(h0.shape), c0.new_empty(c0.shape), w_hh.new_empty(w_hh.shape),
            w_hr.new_empty(w_hr.shape) if w_hr is not None else w_hh.new_empty(0))


def _layer_setup_context(ctx, inputs, output):
    xw, batch_sizes, h0, c0, w_hh, w_hr, reverse, backend = inputs
    out, h_n, c_n, gates, cells, h_raw = output
    ctx.save_for_backward(out, gates, cells, h_raw, h0, c0, w_hh, w_hr, batch_sizes)
    ctx.reverse, ctx.backend = reverse, backend


def _layer_backward(ctx, d_out, d_h_n, d_c_n, d_gates, d_cells, d_h_raw):
    out, gates, cells, h_raw, h0, c0, w_hh, w_hr, batch_sizes = ctx.saved_tensors
    d_xw, d_h0, d_c0, d_w_hh, d_w_hr = fused_lstm_layer_backward(
        d_out, d_h_n, d_c_n, out, gates, cells, h_raw, h0, c0, w_hh, w_hr, batch_sizes, ctx.reverse, ctx.backend)
    return d_xw, None, d_h0, d_c0, d_w_hh, (d_w_hr if w_hr is not None else None), None, None


fused_lstm_layer.register_autograd(_layer_backward, setup_context=_layer_setup_context)


# ---------------------------------------------------------------------- the whole LSTM

def _fused_lstm(backend: str):
    def run(input: Tensor, batch_sizes: Optional[Tensor], hx: tuple[Tensor, Tensor], weights: list[Tensor],
            has_biases: bool, num_layers: int, dropout: float, training: bool, bidirectional: bool,
            proj_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """A multi-layer LSTM on the fused layer op: per layer and direction, one GEMM
        projects the input of every step, then the layer op runs the steps."""
        if batch_sizes is None:
            T, B = input.shape[:2]
            data, sizes = input.reshape(T * B, input.shape[2]), torch.full((T,), B, dtype=torch.int64)
        else:
            data, sizes = input, batch_sizes
        directions = 2 if bidirectional else 1
        per_direction = 2 + 2 * has_biases + (proj_size > 0)
        h0, c0 = hx
        h_n, c_n, layer_input = [], [], data
        for layer in range(num_layers):
            outs = []
            for direction in range(directions):
                index = layer * directions + direction
                w = weights[index * per_direction:(index + 1) * per_direction]
                bias = w[2] + w[3] if has_biases else None
                xw = F.linear(layer_input, w[0], bias)
                out, h, c, _, _, _ = fused_lstm_layer(xw, sizes, h0[index], c0[index], w[1],
                                                      w[-1] if proj_size > 0 else None, direction == 1, backend)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            layer_input = torch.cat(outs, -1) if directions == 2 else outs[0]
            if dropout > 0 and training and layer < num_layers - 1:
                layer_input = F.dropout(layer_input, dropout, training=True)
        output = layer_input if batch_sizes is not None else layer_input.view(input.shape[0], input.shape[1], -1)
        return output, torch.stack(h_n), torch.stack(c_n)

    return run


def _fused_cell_run(backend: str):
    def run(input: Tensor, hx: tuple[Tensor, Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
            b_hh: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        h1, c1, _ = fused_lstm_cell(input, hx[0], hx[1], w_ih, w_hh, b_ih, b_hh, backend)
        return h1, c1

    return run


def _fused_supports_dtype(dtype: torch.dtype) -> Optional[str]:
    if dtype not in FUSED_DTYPES:
        return f"the fused LSTM takes float32, float16 and bfloat16, got {dtype} (float64 runs on torch)"
    return None


def _cell_supports(input: Tensor, hx, w_ih: Tensor, w_hh: Tensor, b_ih, b_hh) -> Optional[str]:
    return _fused_supports_dtype(input.dtype)


def _sequence_supports(input: Tensor, batch_sizes, hx, weights, *args) -> Optional[str]:
    return _fused_supports_dtype(input.dtype)


LSTM_CELL = backends.OpBackends("lstm_cell")
LSTM_CELL.register("triton", _fused_cell_run("triton"), supports=_cell_supports)
LSTM_CELL.register("torch", torch_backend.lstm_cell)
LSTM_CELL.register("reference", reference.lstm_cell)

LSTM = backends.OpBackends("lstm")
LSTM.register("triton", _fused_lstm("triton"), supports=_sequence_supports)
LSTM.register("torch", torch_backend.lstm)
LSTM.register("reference", reference.lstm)
