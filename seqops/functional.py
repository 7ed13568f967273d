"""The public functions of seqops: check the arguments (clear errors naming the argument),
then run the backend that seqops.backends picks."""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor

from seqops.ops.attention import ATTENTION
from seqops.ops.lstm import LSTM, LSTM_CELL
from seqops.ops.softmax import SOFTMAX


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _check_tensor(fn: str, name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_dim(fn: str, dim: object, ndim: int) -> int:
    """`dim` made non-negative, with torch's rule that a 0-d tensor has dims -1 and 0."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{fn}: argument 'dim' must be an int, got {type(dim).__name__}")
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(
            f"{fn}: dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})"
        )
    return dim % rank


def _check_mask_placement(fn: str, name: str, mask: Tensor, other: Tensor, other_name: str, shape: tuple,
                          shape_name: str) -> None:
    """`mask` is on `other`'s device and broadcasts to `shape` without growing it."""
    if mask.device != other.device:
        raise ValueError(f"{fn}: '{name}' is on {mask.device} but '{other_name}' is on {other.device}")
    try:
        broadcast = tuple(torch.broadcast_shapes(mask.shape, shape))
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"{fn}: '{name}' of shape {tuple(mask.shape)} does not broadcast to {shape_name} {shape}")


def softmax(
    input: Tensor,
    dim: int = -1,
    dtype: Optional[torch.dtype] = None,
    *,
    scale: float = 1.0,
    mask: Optional[Tensor] = None,
    causal: bool = False,
) -> Tensor:
    """Softmax along `dim`, as torch.softmax, with optional attention-style extras.

    input: any shape, floating point (or any dtype when `dtype` is given).
    dtype: the input is cast to it before the op, and the output has it (torch's rule).
    scale: the input is multiplied by it first: softmax(scale * input).
    mask: bool, broadcastable to input; False entries are excluded (set to -inf).
    causal: exclude entry (..., i, j) when j > i over the last two dims of input, as in a
        causal score matrix [..., Lq, Lk] (torch's is_causal alignment).
    A row left with no entry (every one masked or -inf) gives NaN, as torch does.
    Returns a contiguous tensor of input's shape.
    """
    fn = "seqops.softmax"
    _check_tensor(fn, "input", input)
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"{fn}: argument 'dtype' must be a floating-point torch.dtype or None, got {dtype!r}")
    elif not input.dtype.is_floating_point:
        raise TypeError(
            f"{fn}: input must be floating point, got {_describe(input)}; "
            "pass dtype= to cast it first, as torch.softmax does"
        )
    dim = _check_dim(fn, dim, input.dim())
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"{fn}: argument 'scale' must be a real number, got {type(scale).__name__}")
    if mask is not None:
        _check_tensor(fn, "mask", mask)
        if mask.dtype != torch.bool:
            raise TypeError(
                f"{fn}: argument 'mask' must be a bool tensor (True = keep), got {mask.dtype}; "
                "add a float bias to the input instead"
            )
        _check_mask_placement(fn, "mask", mask, input, "input", tuple(input.shape), "the input's shape")
    if not isinstance(causal, bool):
        raise TypeError(f"{fn}: argument 'causal' must be a bool, got {type(causal).__name__}")
    if causal and input.dim() < 2:
        raise ValueError(f"{fn}: causal=True needs an input of at least 2 dims [..., Lq, Lk], got {_describe(input)}")
    scale = float(scale)
    run = SOFTMAX.select(input.device, input, dim, dtype, scale=scale, mask=mask, causal=causal)
    return run(input, dim, dtype, scale=scale, mask=mask, causal=causal)


def _broadcast_or_raise(fn: str, what: str, shapes: list) -> tuple:
    try:
        return tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        raise ValueError(f"{fn}: {what} do not broadcast: {', '.join(str(tuple(s)) for s in shapes)}") from None


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> Tensor:
    """Attention as torch.nn.functional.scaled_dot_product_attention computes it.

    query [..., L, E], key [..., S, E], value [..., S, Ev] -> [..., L, Ev]; the leading
    dims broadcast. attn_mask: bool (True = attend) or float (added to the scores),
    broadcastable to [..., L, S]; a float mask that requires grad gets its gradient.
    is_causal: query i attends to keys j <= i (the upper-left triangle when L != S).
    Given both attn_mask and is_causal, seqops applies both (torch's fused kernels do; its
    math path raises). dropout_p: applied to the attention probabilities whenever > 0 (as
    torch: pass 0.0 in eval); torch.manual_seed makes it reproducible. scale: default
    1/sqrt(E). enable_gqa: dim -3 holds heads, and key/value heads divide query heads.
    A row whose keys are all masked gives 0, as torch does.
    """
    fn = "seqops.scaled_dot_product_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(fn, name, t)
        if t.dim() < 2:
            raise ValueError(f"{fn}: '{name}' must have at least 2 dims [..., length, features], got {_describe(t)}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{fn}: '{name}' must be floating point, got {_describe(t)}")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"{fn}: query, key and value must share a dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    if not (query.device == key.device == value.device):
        raise ValueError(f"{fn}: query, key and value must be on one device, got {query.device}, {key.device}, {value.device}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"{fn}: query and key must have the same last dim E, got {_describe(query)} and {_describe(key)}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{fn}: key and value must have the same length S (dim -2), got {_describe(key)} and {_describe(value)}")
    if not isinstance(enable_gqa, bool):
        raise TypeError(f"{fn}: argument 'enable_gqa' must be a bool, got {type(enable_gqa).__name__}")
    if enable_gqa:
        if min(query.dim(), key.dim(), value.dim()) < 3:
            raise ValueError(f"{fn}: enable_gqa needs heads at dim -3: query, key and value of at least 3 dims")
        heads_q, heads_k, heads_v = query.shape[-3], key.shape[-3], value.shape[-3]
        if heads_k != heads_v or heads_k == 0 or heads_q % heads_k:
            raise ValueError(
                f"{fn}: enable_gqa needs key and value heads (dim -3) equal and dividing the query heads, "
                f"got query {heads_q}, key {heads_k}, value {heads_v}"
            )
        lead = _broadcast_or_raise(fn, "the leading dims of query, key and value",
                                   [query.shape[:-3], key.shape[:-3], value.shape[:-3]]) + (heads_q,)
    else:
        lead = _broadcast_or_raise(fn, "the leading dims of query, key and value",
                                   [query.shape[:-2], key.shape[:-2], value.shape[:-2]])
    scores_shape = lead + (query.shape[-2], key.shape[-2])
    if attn_mask is not None:
        _check_tensor(fn, "attn_mask", attn_mask)
        if attn_mask.dtype != torch.bool and not attn_mask.dtype.is_floating_point:
            raise TypeError(f"{fn}: 'attn_mask' must be bool (True = attend) or floating point (added), got {attn_mask.dtype}")
        _check_mask_placement(fn, "attn_mask", attn_mask, query, "query", scores_shape, "the scores' shape")
    if not isinstance(dropout_p, numbers.Real) or isinstance(dropout_p, bool) or not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{fn}: 'dropout_p' must be a number in [0, 1], got {dropout_p!r}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"{fn}: argument 'is_causal' must be a bool, got {type(is_causal).__name__}")
    if scale is not None and (not isinstance(scale, numbers.Real) or isinstance(scale, bool)):
        raise TypeError(f"{fn}: argument 'scale' must be a real number or None, got {type(scale).__name__}")
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(query.shape[-1]) if query.shape[-1] else 1.0
    args = (query, key, value, attn_mask, float(dropout_p), is_causal, scale, enable_gqa)
    return ATTENTION.select(query.device, *args)(*args)


def lstm_cell(
    input: Tensor,
    hx: tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step, as torch.lstm_cell: gates = input @ w_ih^T + b_ih + h @ w_hh^T + b_hh,
    in the order i, f, g, o; c' = sigmoid(f) c + sigmoid(i) tanh(g); h' = sigmoid(o) tanh(c').

    input [B, I] (or [I]); hx = (h [B, H], c [B, H]) (or [H] each); w_ih [4H, I];
    w_hh [4H, H]; b_ih, b_hh [4H], both or neither. Returns (h', c'), shaped like hx.
    """
    fn = "seqops.lstm_cell"
    _check_tensor(fn, "input", input)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{fn}: 'hx' must be a pair (h, c) of tensors, got {type(hx).__name__}")
    h, c = (_check_tensor(fn, name, t) for name, t in (("hx[0]", hx[0]), ("hx[1]", hx[1])))
    for name, t in (("w_ih", w_ih), ("w_hh", w_hh)):
        _check_tensor(fn, name, t)
        if t.dim() != 2:
            raise ValueError(f"{fn}: '{name}' must be 2-D [4 * hidden_size, features], got {_describe(t)}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{fn}: give both b_ih and b_hh, or neither")
    if input.dim() not in (1, 2) or h.dim() != input.dim() or c.dim() != input.dim():
        raise ValueError(f"{fn}: input and hx must be all 2-D [batch, features] or all 1-D, got "
                         f"{input.dim()}-D, {h.dim()}-D and {c.dim()}-D")
    batched = input.dim() == 2
    if not batched:
        input, h, c = input.unsqueeze(0), h.unsqueeze(0), c.unsqueeze(0)
    hidden = w_hh.shape[1]
    if w_ih.shape[0] != 4 * hidden or w_hh.shape[0] != 4 * hidden:
        raise ValueError(f"{fn}: w_ih and w_hh must have 4 * hidden_size = {4 * hidden} rows, got "
                         f"{_describe(w_ih)} and {_describe(w_hh)}")
    if input.shape[1] != w_ih.shape[1]:
        raise RuntimeError(f"{fn}: input has inconsistent input_size: got {input.shape[1]} expected {w_ih.shape[1]}")
    for label, state in (("0", h), ("1", c)):
        if state.shape[0] != input.shape[0]:
            raise RuntimeError(f"{fn}: Input batch size {input.shape[0]} doesn't match hidden{label} batch size "
                               f"{state.shape[0]}")
        if state.shape[1] != hidden:
            raise RuntimeError(f"{fn}: hidden{label} has inconsistent hidden_size: got {state.shape[1]}, expected {hidden}")
    for b in (b_ih, b_hh):
        if b is not None and tuple(b.shape) != (4 * hidden,):
            raise ValueError(f"{fn}: biases must be [4 * hidden_size] = [{4 * hidden}], got {_describe(b)}")
    tensors = [t for t in (input, h, c, w_ih, w_hh, b_ih, b_hh) if t is not None]
    if len({t.dtype for t in tensors}) != 1 or not input.dtype.is_floating_point:
        raise TypeError(f"{fn}: input, hx, weights and biases must share one floating dtype, got "
                        f"{sorted({str(t.dtype) for t in tensors})}")
    if len({t.device for t in tensors}) != 1:
        raise ValueError(f"{fn}: input, hx, weights and biases must be on one device, got {sorted({str(t.device) for t in tensors})}")
    args = (input, (h, c), w_ih, w_hh, b_ih, b_hh)
    h1, c1 = LSTM_CELL.select(input.device, *args)(*args)
    return (h1, c1) if batched else (h1.squeeze(0), c1.squeeze(0))


def lstm(
    input: Tensor,
    batch_sizes: Optional[Tensor],
    hx: tuple[Tensor, Tensor],
    weights: list[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
    proj_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """A multi-layer LSTM as torch.nn.LSTM runs it (its arguments already checked by the
    module: seqops.nn.LSTM is the way in). input [T, B, I] time-major, or packed data [N, I]
    with batch_sizes [T]; hx = (h0 [layers * directions, B, P], c0 [..., B, H]); weights
    in the module's _flat_weights order. Returns (output, h_n, c_n)."""
    args = (input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional, proj_size)
    return LSTM.select(input.device, *args)(*args)
