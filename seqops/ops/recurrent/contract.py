"""What the recurrent ops accept, written once: argument checks with clear errors (torch's
exception types), and what every implementation receives.

lstm_cell, the checked call: input [B, I], h [B, H], c [B, H], w_ih [4H, I], w_hh [4H, H],
b_ih, b_hh [4H] or None (any strides, expanded included), one floating dtype, one device.
- composite ("run"): run(input, (h, c), w_ih, w_hh, b_ih, b_hh) -> (h', c').
- fused: forward(input, h, c, w_ih, w_hh, b_ih, b_hh) -> (h' [B, H], c' [B, H] in input's
  dtype, gates [B, 4H] fp32: the activations i, f, g, o the backward needs);
  backward(d_h', d_c' (either may be None), input, h, c, w_ih, w_hh, c', gates, has_bias)
  -> (d_input, d_h, d_c, d_w_ih, d_w_hh, d_bias or None), d_bias being the gradient of
  b_ih and of b_hh alike.

gru_cell, rnn_tanh_cell, rnn_relu_cell (the cells with one state; G gates: 3 for the GRU,
r, z, n; 1 for the RNNs), the checked call: input [B, I], h [B, H], w_ih [G*H, I], w_hh
[G*H, H], b_ih, b_hh [G*H] or None, one floating dtype, one device (any strides).
- composite ("run"): run(input, h, w_ih, w_hh, b_ih, b_hh) -> h'.
- fused: forward(input, h, w_ih, w_hh, b_ih, b_hh), biases both given or both None ->
  (h' [B, H] in input's dtype, saved [B, S*H] fp32: what the backward needs, S = 4 for
  the GRU (r, z, n and h W_hn^T + b_hn), 1 for the RNNs (h' in fp32));
  backward(d_h', input, h, w_ih, w_hh, saved, has_bias) -> (d_input, d_h, d_w_ih,
  d_w_hh, d_b_ih, d_b_hh (None without biases)).

lstm (a whole multi-layer LSTM, as torch.nn.LSTM runs it): input [T, B, I] time-major, or
the data [N, I] of a packed sequence with batch_sizes [T] (int64, CPU); hx = (h0 [L*D, B,
P], c0 [L*D, B, H]); weights in torch.nn.LSTM's _flat_weights order.
- composite ("run"): run(input, batch_sizes, hx, weights, has_biases, num_layers, dropout,
  training, bidirectional, proj_size) -> (output, h_n, c_n).
- fused, one direction of one layer (the op composes layers and directions):
  forward(xw [N, 4H] (input projection with biases), batch_sizes list[int], h0 [B, P],
  c0 [B, H], w_hh [4H, P], w_hr [P, H] or None, reverse) -> (out [N, P], h_n, c_n, gates
  [N, 4H] fp32, cells [N, H] fp32, h before the projection [N, H] or None);
  backward(d_out, d_h_n, d_c_n (each may be None), out, gates, cells, h_raw or None, h0,
  c0, w_hh, w_hr, batch_sizes list[int], reverse) -> (d_xw, d_h0, d_c0, d_w_hh, d_w_hr or
  None).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops.ops.checks import check_tensor, describe

FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_cell(input: Tensor, hx: object, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
               b_hh: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Raise on a bad lstm_cell call; return (input, h, c) as 2-D and whether input was."""
    if _plain_cell_call(input, hx, w_ih, w_hh, b_ih, b_hh):
        return input, hx[0], hx[1], True
    fn = "seqops.lstm_cell"
    check_tensor(fn, "input", input)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{fn}: 'hx' must be a pair (h, c) of tensors, got {type(hx).__name__}")
    h, c = (check_tensor(fn, name, t) for name, t in (("hx[0]", hx[0]), ("hx[1]", hx[1])))
    input, (h, c), batched = _check_cell_operands(fn, 4, input, [h, c], w_ih, w_hh, b_ih, b_hh)
    return input, h, c, batched


def _plain_cell_call(input, hx, w_ih, w_hh, b_ih, b_hh) -> bool:
    """Whether the call has the common form (2-D tensors of one floating dtype and
    device, consistent sizes, both biases of [4H]): a few comparisons, since every step
    of a recurrent model pays them. Anything else takes the full check."""
    if type(hx) is not tuple or len(hx) != 2:
        return False
    h, c = hx
    if not (isinstance(input, Tensor) and isinstance(h, Tensor) and isinstance(c, Tensor) and isinstance(w_ih, Tensor)
            and isinstance(w_hh, Tensor) and isinstance(b_ih, Tensor) and isinstance(b_hh, Tensor)):
        return False
    shape, state, w_shape = input.shape, h.shape, w_ih.shape
    if len(shape) != 2 or len(state) != 2 or len(w_shape) != 2:
        return False
    hidden4 = w_shape[0]
    if (shape[0] != state[0] or shape[1] != w_shape[1] or hidden4 != 4 * state[1] or c.shape != state
            or w_hh.shape != (hidden4, state[1]) or b_ih.shape != (hidden4,) or b_hh.shape != (hidden4,)):
        return False
    dtype = input.dtype
    if not (dtype.is_floating_point and h.dtype is dtype and c.dtype is dtype and w_ih.dtype is dtype
            and w_hh.dtype is dtype and b_ih.dtype is dtype and b_hh.dtype is dtype):
        return False
    device = input.device
    return (h.device == device and c.device == device and w_ih.device == device and w_hh.device == device
            and b_ih.device == device and b_hh.device == device)


# Gates per cell with one state: rows of w_ih and w_hh per hidden unit.
HIDDEN_CELL_GATES = {"gru_cell": 3, "rnn_tanh_cell": 1, "rnn_relu_cell": 1}
# S: the fp32 values a fused GRU/RNN cell or layer saves a hidden unit for its backward
# (the GRU's r, z, n and h W_hn^T + b_hn; the RNNs' one), keyed by the layer's mode.
# kernels/packed_steps.py holds its own copy (kernels import nothing from seqops); a test
# holds the two equal.
SAVED_PER_UNIT = {"gru": 4, "rnn_tanh": 1, "rnn_relu": 1}


def check_hidden_cell(op: str, input: Tensor, hx: object, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                      b_hh: Optional[Tensor]) -> tuple[Tensor, Tensor, bool]:
    """Raise on a bad call of `op` (a key of HIDDEN_CELL_GATES); return (input, h) as
    2-D and whether input was."""
    gates = HIDDEN_CELL_GATES[op]
    if _plain_hidden_cell_call(gates, input, hx, w_ih, w_hh, b_ih, b_hh):
        return input, hx, True
    fn = f"seqops.{op}"
    check_tensor(fn, "input", input)
    h = check_tensor(fn, "hx", hx)
    input, (h,), batched = _check_cell_operands(fn, gates, input, [h], w_ih, w_hh, b_ih, b_hh)
    return input, h, batched


def _check_cell_operands(fn: str, gates: int, input: Tensor, states: list[Tensor], w_ih: Tensor, w_hh: Tensor,
                         b_ih: Optional[Tensor], b_hh: Optional[Tensor]) -> tuple[Tensor, list[Tensor], bool]:
    """The checks every recurrent cell's call takes, with torch's messages: input and its
    states (already checked to be tensors) all 2-D or all 1-D, the weights' rows `gates`
    per hidden unit, sizes consistent, biases [gates * H] or None, one floating dtype and
    one device. Returns (input, states) as 2-D and whether input was."""
    what = f"{gates} * hidden_size" if gates > 1 else "hidden_size"
    for name, t in (("w_ih", w_ih), ("w_hh", w_hh)):
        check_tensor(fn, name, t)
        if t.dim() != 2:
            raise RuntimeError(f"{fn}: '{name}' must be 2-D [{what}, features], got {describe(t)}")
    if input.dim() not in (1, 2) or any(state.dim() != input.dim() for state in states):
        every = "all" if len(states) > 1 else "both"
        dims = [f"{t.dim()}-D" for t in (input, *states)]
        raise RuntimeError(f"{fn}: input and hx must be {every} 2-D [batch, features] or {every} 1-D, got "
                           f"{', '.join(dims[:-1])} and {dims[-1]}")
    batched = input.dim() == 2
    if not batched:
        input, states = input.unsqueeze(0), [state.unsqueeze(0) for state in states]
    hidden = w_hh.shape[1]
    if w_ih.shape[0] != gates * hidden or w_hh.shape[0] != gates * hidden:
        raise RuntimeError(f"{fn}: w_ih and w_hh must have {what} = {gates * hidden} rows, got "
                           f"{describe(w_ih)} and {describe(w_hh)}")
    if input.shape[1] != w_ih.shape[1]:
        raise RuntimeError(f"{fn}: input has inconsistent input_size: got {input.shape[1]} expected {w_ih.shape[1]}")
    for label, state in enumerate(states):
        if state.shape[0] != input.shape[0]:
            raise RuntimeError(f"{fn}: Input batch size {input.shape[0]} doesn't match hidden{label} batch size "
                               f"{state.shape[0]}")
        if state.shape[1] != hidden:
            raise RuntimeError(f"{fn}: hidden{label} has inconsistent hidden_size: got {state.shape[1]}, "
                               f"expected {hidden}")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            check_tensor(fn, name, b)
            if tuple(b.shape) != (gates * hidden,):
                raise RuntimeError(f"{fn}: '{name}' must be [{what}] = [{gates * hidden}], got {describe(b)}")
    tensors = [t for t in (input, *states, w_ih, w_hh, b_ih, b_hh) if t is not None]
    if len({t.dtype for t in tensors}) != 1 or not input.dtype.is_floating_point:
        raise RuntimeError(f"{fn}: input, hx, weights and biases must share one floating dtype, got "
                           f"{sorted({str(t.dtype) for t in tensors})}")
    if len({t.device for t in tensors}) != 1:
        raise RuntimeError(f"{fn}: input, hx, weights and biases must be on one device, got "
                           f"{sorted({str(t.device) for t in tensors})}")
    return input, states, batched


def _plain_hidden_cell_call(gates: int, input, h, w_ih, w_hh, b_ih, b_hh) -> bool:
    """Whether a GRU/RNN cell call has the common form (2-D tensors of one floating dtype
    and device, consistent sizes, both biases of [G*H] or neither): a few comparisons, as
    _plain_cell_call. Anything else takes the full check."""
    if not (isinstance(input, Tensor) and isinstance(h, Tensor) and isinstance(w_ih, Tensor)
            and isinstance(w_hh, Tensor)):
        return False
    shape, state = input.shape, h.shape
    if len(shape) != 2 or len(state) != 2 or shape[0] != state[0]:
        return False
    rows = gates * state[1]
    if w_ih.shape != (rows, shape[1]) or w_hh.shape != (rows, state[1]):
        return False
    dtype, device = input.dtype, input.device
    tensors = [h, w_ih, w_hh]
    if b_ih is not None or b_hh is not None:
        if not (isinstance(b_ih, Tensor) and isinstance(b_hh, Tensor) and b_ih.shape == (rows,)
                and b_hh.shape == (rows,)):
            return False
        tensors += [b_ih, b_hh]
    return dtype.is_floating_point and all(t.dtype is dtype and t.device == device for t in tensors)


def check_sequence(fn: str, input: Tensor, batch_sizes: Optional[Tensor]) -> None:
    """A multi-layer call (lstm, gru, rnn_tanh, rnn_relu) needs at least one step, as
    torch's RNNs do; an empty batch (B = 0) is fine and gives empty outputs."""
    steps = len(batch_sizes) if batch_sizes is not None else input.shape[0]
    if steps == 0:
        raise RuntimeError(f"{fn}: expected sequence length to be larger than 0 (as torch's RNNs), got input "
                           f"{describe(input)}")


def fused_dtype_reason(dtype: torch.dtype) -> Optional[str]:
    if dtype not in FUSED_DTYPES:
        return f"the fused LSTM takes float32, float16 and bfloat16, got {dtype} (float64 runs on torch)"
    return None


def fused_cell_reason(input: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                      b_hh: Optional[Tensor]) -> Optional[str]:
    """Why a fused implementation cannot take this lstm_cell call, whatever its backend."""
    return fused_dtype_reason(input.dtype)


def fused_hidden_cell_reason(input: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                             b_hh: Optional[Tensor]) -> Optional[str]:
    """Why a fused implementation cannot take this GRU or RNN cell call, whatever its backend."""
    if input.dtype not in FUSED_DTYPES:
        return f"the fused recurrent cells take float32, float16 and bfloat16, got {input.dtype} (float64 runs on torch)"
    return None


def fused_hidden_layer_reason(input: Tensor, *args) -> Optional[str]:
    """Why a fused implementation cannot take this multi-layer GRU or RNN call."""
    return fused_hidden_cell_reason(input, None, None, None, None, None)


def fused_lstm_reason(input: Tensor, batch_sizes: Optional[Tensor], hx, weights, *args) -> Optional[str]:
    """Why a fused implementation cannot take this lstm call, whatever its backend."""
    return fused_dtype_reason(input.dtype)
