"""The public functions of seqops: check the arguments (clear errors naming the argument),
then run the backend that seqops.backends picks."""
from __future__ import annotations

import numbers
from typing import Optional

import torch
from torch import Tensor

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
        if mask.device != input.device:
            raise ValueError(f"{fn}: 'mask' is on {mask.device} but 'input' is on {input.device}")
        try:
            broadcast = torch.broadcast_shapes(mask.shape, input.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != input.shape:
            raise ValueError(
                f"{fn}: 'mask' of shape {tuple(mask.shape)} does not broadcast to the input's shape {tuple(input.shape)}"
            )
    if not isinstance(causal, bool):
        raise TypeError(f"{fn}: argument 'causal' must be a bool, got {type(causal).__name__}")
    if causal and input.dim() < 2:
        raise ValueError(f"{fn}: causal=True needs an input of at least 2 dims [..., Lq, Lk], got {_describe(input)}")
    scale = float(scale)
    run = SOFTMAX.select(input.device, input, dim, dtype, scale=scale, mask=mask, causal=causal)
    return run(input, dim, dtype, scale=scale, mask=mask, causal=causal)
