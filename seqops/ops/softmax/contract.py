"""What seqops.softmax accepts, written once: argument checks with clear errors, and what
every implementation receives.

An implementation gets the checked call: input (any shape and strides, floating point, or
any real dtype when `dtype` is given), dim (non-negative), dtype (None or floating),
scale (float), mask (None, or bool broadcastable to input, True = keep), causal (bool: key
j > query i of the last two dims hidden).
- composite ("run"): run(input, dim, dtype, *, scale, mask, causal) -> softmax, autograd
  its own.
- fused: forward(input, mask, dim, scale, causal, out_dtype) -> y, a new contiguous tensor
  of input's shape in out_dtype; backward(grad_y, y, mask, dim, scale, causal, in_dtype)
  -> dx, contiguous, in in_dtype, exactly 0 at hidden entries.
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch
from torch import Tensor

from seqops.ops.checks import check_dim, check_mask_placement, check_tensor, describe

# The dtypes a fused implementation computes in (float64 goes to torch).
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

FN = "seqops.softmax"


def check(input: Tensor, dim: int, dtype: Optional[torch.dtype], scale: float, mask: Optional[Tensor],
          causal: bool) -> tuple[int, float]:
    """Raise on a bad call; return (dim made non-negative, scale as a float)."""
    check_tensor(FN, "input", input)
    if dtype is not None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"{FN}: argument 'dtype' must be a floating-point torch.dtype or None, got {dtype!r}")
        if not dtype.is_floating_point:
            raise NotImplementedError(f"{FN}: argument 'dtype' must be a floating-point torch.dtype or None, "
                                      f"got {dtype!r}")
    elif not input.dtype.is_floating_point:
        raise NotImplementedError(
            f"{FN}: input must be floating point, got {describe(input)}; "
            "pass dtype= to cast it first, as torch.softmax does"
        )
    dim = check_dim(FN, dim, input.dim())
    if type(scale) is not float and (not isinstance(scale, numbers.Real) or isinstance(scale, bool)):
        raise TypeError(f"{FN}: argument 'scale' must be a real number, got {type(scale).__name__}")
    if mask is not None:
        check_tensor(FN, "mask", mask)
        if mask.dtype != torch.bool:
            raise TypeError(
                f"{FN}: argument 'mask' must be a bool tensor (True = keep), got {mask.dtype}; "
                "add a float bias to the input instead"
            )
        check_mask_placement(FN, "mask", mask, input, "input", tuple(input.shape), "the input's shape")
    if causal is not False and not isinstance(causal, bool):
        raise TypeError(f"{FN}: argument 'causal' must be a bool, got {type(causal).__name__}")
    if causal and input.dim() < 2:
        raise ValueError(f"{FN}: causal=True needs an input of at least 2 dims [..., Lq, Lk], got {describe(input)}")
    return dim, float(scale)


def fused_reason(input: Tensor, dim: int, dtype: Optional[torch.dtype], scale: float = 1.0,
                 mask: Optional[Tensor] = None, causal: bool = False) -> Optional[str]:
    """Why a fused implementation cannot take this call, whatever its backend, or None."""
    out_dtype = dtype or input.dtype
    if out_dtype not in FUSED_DTYPES:
        return (f"the fused softmax computes in float32, float16 and bfloat16, got {out_dtype} "
                "(float64 runs on the torch backend)")
    if input.dtype.is_complex or input.dtype == torch.bool:
        return f"the fused softmax reads real inputs, got {input.dtype}"
    return None
