"""The CUDA C++ whole-sequence LSTM (csrc/recurrent/lstm_sequence.cu) behind the layer
contract of seqops/ops/recurrent/op.py (lstm_layer_forward / lstm_layer_backward, as the
Triton sequence kernels of kernels/recurrent/sequence.py implement it), and the GRU and
RNNs (csrc/recurrent/hidden_sequence.cu) behind hidden_layer_op.py's (as
kernels/recurrent/hidden_sequence.py): one cooperative launch a layer and direction
forward, one backward, the weight gradient a GEMM over every step's gate gradients after
it.

What they take: hidden sizes whose W_hh slices (8 units a block, one block a
multiprocessor; with the LSTM's projection, W_hr's slice beside) fit the GPU's
multiprocessors and shared memory: on an H100 or H200, H up to 1056 in every dtype (the
LSTM's fp32: 4 x 8 x 1024 x 4 bytes, 128 KiB, of 227). Elsewhere `reason`
(`hidden_layer_reason`) says why and the op takes another implementation."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from seqops import _ext
from seqops.backends.cuda_values import DTYPE_CODES, dtype_code, launch_place
from seqops.ops.recurrent import contract
from seqops.kernels.packed_steps import (SAVED_PER_UNIT, bound_to_mode, final_rows,  # pure torch: no triton
                                         layer_backward_around, previous_rows, schedule_tensors, summed_over_rows)


@functools.lru_cache(maxsize=None)
def _device_limits(index: int) -> dict:
    return _ext.load().device_limits(index)


# Gate rows of W_hh a unit has, per layer mode: the size of a block's W_hh slice.
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _hidden_reason(hidden: int, dtype: torch.dtype, device: torch.device, mode: str = "lstm",
                   projection: int = 0) -> Optional[str]:
    """Why this GPU cannot hold the kernels' plan for `hidden` units of `dtype` (and the
    LSTM's `projection`, 0: none) (None: it can)."""
    limits = _device_limits(device.index if device.index is not None else torch.cuda.current_device())
    if not limits["cooperative_launch"]:
        return "the CUDA sequence kernels need cooperative launches, which this GPU does not take"
    plan = _ext.load().sequence_plan(hidden, DTYPE_CODES[dtype], GATES[mode], limits["multiprocessors"],
                                     limits["max_shared_bytes"], projection)
    return None if plan["reason"] is None else f"hidden size {hidden}: {plan['reason']}"


def _rows_reason(input: torch.Tensor, batch_sizes: Optional[torch.Tensor]) -> Optional[str]:
    rows = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]
    if rows >= 2**31:
        return f"{rows} rows of steps: the sequence kernels index steps in 32 bits"
    return None


def reason(input: torch.Tensor, batch_sizes: Optional[torch.Tensor], hx, weights, has_biases, num_layers, dropout,
           training, bidirectional, proj_size) -> Optional[str]:
    """Why the CUDA sequence kernels cannot take this nn.LSTM call (None: they can)."""
    why = contract.fused_lstm_reason(input, batch_sizes, hx, weights)
    if why is not None:
        return why
    return _rows_reason(input, batch_sizes) or _hidden_reason(hx[1].shape[-1], input.dtype, input.device,
                                                               projection=proj_size)


def hidden_layer_reason(mode: str, input: torch.Tensor, batch_sizes: Optional[torch.Tensor], hx: torch.Tensor,
                        *args) -> Optional[str]:
    """Why the CUDA sequence kernels cannot take this nn.GRU or nn.RNN call of `mode` (None:
    they can); the GRU/RNN sequence Impls' `supports`, `mode` bound."""
    return (contract.fused_hidden_layer_reason(input, batch_sizes, hx, *args) or _rows_reason(input, batch_sizes)
            or _hidden_reason(hx.shape[-1], input.dtype, input.device, mode))


def _pointer(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _strides(t: Optional[torch.Tensor]) -> tuple[int, int]:
    return (0, 0) if t is None else tuple(t.stride())


def _in_dtype(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """A gradient in the layer's dtype, which the kernels read it in."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def lstm_sequence_forward(
    xw: torch.Tensor, batch_sizes: list[int], h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
    w_hr: Optional[torch.Tensor], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """As kernels/recurrent/sequence.py's lstm_sequence_forward: xw [N, 4H], h0 [B, P], c0
    [B, H], w_hh [4H, P], w_hr [P, H] or None (P = H), any strides. Returns out [N, P],
    h_n, c_n, the gate activations [N, 4H] and cell states [N, H] (fp32), and h before the
    projection [N, H] (None without one)."""
    N, H = xw.shape[0], xw.shape[1] // 4
    B, P = h0.shape
    device = xw.device
    out = torch.empty(N, P, dtype=xw.dtype, device=device)
    h_raw = torch.empty(N, H, dtype=xw.dtype, device=device) if w_hr is not None else None
    cells = torch.empty(N, H, dtype=torch.float32, device=device)
    gates = torch.empty(N, 4 * H, dtype=torch.float32, device=device)
    if N == 0 or H == 0:
        return out, h0.clone(), c0.clone(), gates, cells, h_raw
    (offsets, rows, prev, carried), steps = schedule_tensors(batch_sizes, reverse, device)
    h0, c0, w_hh, w_hr = (_in_dtype(t, xw.dtype) for t in (h0, c0, w_hh, w_hr))
    _ext.load().lstm_sequence_forward(
        xw=xw.data_ptr(), xw_strides=_strides(xw), h0=h0.data_ptr(), h0_strides=_strides(h0), c0=c0.data_ptr(),
        c0_strides=_strides(c0), w_hh=w_hh.data_ptr(), w_hh_strides=_strides(w_hh), w_hr=_pointer(w_hr),
        w_hr_strides=_strides(w_hr), out=out.data_ptr(), out_strides=_strides(out), h_raw=_pointer(h_raw),
        h_raw_strides=_strides(h_raw), cells=cells.data_ptr(), cells_strides=_strides(cells),
        gates=gates.data_ptr(), gates_strides=_strides(gates), offsets=offsets.data_ptr(), rows=rows.data_ptr(),
        prev=prev.data_ptr(), carried=carried.data_ptr(), steps=len(steps), dtype=dtype_code(xw), batch=B,
        hidden=H, proj=P if w_hr is not None else 0, **launch_place(device))
    final = final_rows(steps, B).to(device)
    return out, out[final], cells[final].to(c0.dtype), gates, cells, h_raw


def lstm_sequence_backward(
    d_out: Optional[torch.Tensor], d_h_n: Optional[torch.Tensor], d_c_n: Optional[torch.Tensor],
    out: torch.Tensor, gates: torch.Tensor, cells: torch.Tensor, h_raw: Optional[torch.Tensor],
    h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor, w_hr: Optional[torch.Tensor],
    batch_sizes: list[int], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """As kernels/recurrent/sequence.py's lstm_sequence_backward: d_xw [N, 4H] (out's
    dtype), d_h0, d_c0, d_w_hh (a GEMM over the gate gradients of every step, summed per
    block of rows: packed_steps.summed_over_rows) and d_w_hr (the same over the gradient
    reaching the projected output; None without a projection)."""
    N, H = gates.shape[0], gates.shape[1] // 4
    B, P = h0.shape
    device = gates.device
    fp32 = dict(dtype=torch.float32, device=device)
    dgates = torch.empty(N, 4 * H, **fp32)
    d_h0, d_c0 = torch.zeros(B, P, **fp32), torch.zeros(B, H, **fp32)
    d_total = torch.empty(N, P, **fp32) if w_hr is not None else None
    if N == 0 or H == 0:
        if d_h_n is not None:
            d_h0 += d_h_n
        if d_c_n is not None:
            d_c0 += d_c_n
        d_w_hr = torch.zeros_like(w_hr) if w_hr is not None else None
        return dgates.to(out.dtype), d_h0.to(h0.dtype), d_c0.to(c0.dtype), torch.zeros_like(w_hh), d_w_hr
    (offsets, rows, prev, carried), steps = schedule_tensors(batch_sizes, reverse, device)
    dtype = out.dtype
    d_out, d_h_n, d_c_n, c0_in, w_hh_in, w_hr_in = (_in_dtype(t, dtype) for t in (d_out, d_h_n, d_c_n, c0, w_hh, w_hr))
    carry = torch.zeros(2, B, H, **fp32)
    _ext.load().lstm_sequence_backward(
        d_out=_pointer(d_out), d_out_strides=_strides(d_out), d_h_n=_pointer(d_h_n), d_h_n_strides=_strides(d_h_n),
        d_c_n=_pointer(d_c_n), d_c_n_strides=_strides(d_c_n), gates=gates.data_ptr(), gates_strides=_strides(gates),
        cells=cells.data_ptr(), cells_strides=_strides(cells), c0=c0_in.data_ptr(), c0_strides=_strides(c0_in),
        w_hh=w_hh_in.data_ptr(), w_hh_strides=_strides(w_hh_in), w_hr=_pointer(w_hr_in),
        w_hr_strides=_strides(w_hr_in), dgates=dgates.data_ptr(), d_total=_pointer(d_total), d_h0=d_h0.data_ptr(),
        d_c0=d_c0.data_ptr(), carry=carry.data_ptr(), offsets=offsets.data_ptr(), rows=rows.data_ptr(),
        prev=prev.data_ptr(), carried=carried.data_ptr(), steps=len(steps), dtype=dtype_code(out), batch=B,
        hidden=H, proj=P if w_hr is not None else 0, **launch_place(device))
    h_prev = torch.cat([out, h0.to(out.dtype)])[previous_rows(steps, N).to(device)]
    d_w_hh = summed_over_rows(dgates.to(w_hh.dtype), h_prev.to(w_hh.dtype))
    d_w_hr = summed_over_rows(d_total.to(w_hr.dtype), h_raw.to(w_hr.dtype)) if w_hr is not None else None
    return dgates.to(out.dtype), d_h0.to(h0.dtype), d_c0.to(c0.dtype), d_w_hh, d_w_hr


# The extension's name of each mode's cell (csrc HiddenCell).
CELLS = {"gru": "gru_cell", "rnn_tanh": "rnn_tanh_cell", "rnn_relu": "rnn_relu_cell"}


def hidden_sequence_forward(
    mode: str, xw: torch.Tensor, batch_sizes: list[int], h0: torch.Tensor, w_hh: torch.Tensor,
    b_hh: Optional[torch.Tensor], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As kernels/recurrent/hidden_sequence.py's hidden_sequence_forward: xw [N, G*H] (b_ih
    included), h0 [B, H], w_hh [G*H, H], b_hh [G*H] or None,
    any strides. Returns out [N, H], h_n [B, H] and saved [N, S*H] (fp32)."""
    N, H = xw.shape[0], w_hh.shape[1]
    B = h0.shape[0]
    device = xw.device
    out = torch.empty(N, H, dtype=xw.dtype, device=device)
    saved = torch.empty(N, SAVED_PER_UNIT[mode] * H, dtype=torch.float32, device=device)
    if N == 0 or H == 0:
        return out, h0.clone(), saved
    (offsets, rows, prev, carried), steps = schedule_tensors(batch_sizes, reverse, device)
    h0, w_hh, b_hh = (_in_dtype(t, xw.dtype) for t in (h0, w_hh, b_hh))
    _ext.load().hidden_sequence_forward(
        cell=CELLS[mode], xw=xw.data_ptr(), xw_strides=_strides(xw), h0=h0.data_ptr(), h0_strides=_strides(h0),
        w_hh=w_hh.data_ptr(), w_hh_strides=_strides(w_hh), b_hh=_pointer(b_hh),
        b_hh_stride=b_hh.stride(0) if b_hh is not None else 0, out=out.data_ptr(), out_strides=_strides(out),
        saved=saved.data_ptr(), saved_strides=_strides(saved), offsets=offsets.data_ptr(), rows=rows.data_ptr(),
        prev=prev.data_ptr(), carried=carried.data_ptr(), steps=len(steps), dtype=dtype_code(xw), batch=B, hidden=H,
        **launch_place(device))
    return out, out[final_rows(steps, B).to(device)], saved


def hidden_sequence_backward(
    mode: str, d_out: Optional[torch.Tensor], d_h_n: Optional[torch.Tensor], out: torch.Tensor, saved: torch.Tensor,
    h0: torch.Tensor, w_hh: torch.Tensor, batch_sizes: list[int], reverse: bool, has_b_hh: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """As kernels/recurrent/hidden_sequence.py's hidden_sequence_backward: d_xw [N, G*H]
    (out's dtype), d_h0, d_w_hh (one product over every step's gate gradients) and d_b_hh
    (None unless has_b_hh)."""
    H, B, dtype = w_hh.shape[1], h0.shape[0], out.dtype
    d_out, d_h_n_in, h0_in, w_hh_in = (_in_dtype(t, dtype) for t in (d_out, d_h_n, h0, w_hh))

    def gate_gradients(dgates, d_h0, schedule, steps):
        offsets, rows, prev, carried = schedule
        carry = torch.zeros(2, B, H, dtype=torch.float32, device=out.device) if mode == "gru" else None
        _ext.load().hidden_sequence_backward(
            cell=CELLS[mode], d_out=_pointer(d_out), d_out_strides=_strides(d_out), d_h_n=_pointer(d_h_n_in),
            d_h_n_strides=_strides(d_h_n_in), out=out.data_ptr(), out_strides=_strides(out), h0=h0_in.data_ptr(),
            h0_strides=_strides(h0_in), saved=saved.data_ptr(), saved_strides=_strides(saved),
            w_hh=w_hh_in.data_ptr(), w_hh_strides=_strides(w_hh_in), dgates=dgates.data_ptr(), d_h0=d_h0.data_ptr(),
            carry=_pointer(carry), offsets=offsets.data_ptr(), rows=rows.data_ptr(), prev=prev.data_ptr(),
            carried=carried.data_ptr(), steps=len(steps), dtype=dtype_code(out), batch=B, hidden=H,
            **launch_place(out.device))

    return layer_backward_around(mode, d_h_n, out, h0, w_hh, batch_sizes, reverse, has_b_hh, gate_gradients)


def _for_mode(mode: str):
    """The layer op's forward and backward for `mode`, `mode` bound."""
    return bound_to_mode(mode, hidden_sequence_forward, hidden_sequence_backward, "sequence")


gru_sequence_forward, gru_sequence_backward = _for_mode("gru")
rnn_tanh_sequence_forward, rnn_tanh_sequence_backward = _for_mode("rnn_tanh")
rnn_relu_sequence_forward, rnn_relu_sequence_backward = _for_mode("rnn_relu")
