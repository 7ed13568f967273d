"""What seqops.additive_attention accepts, written once: argument checks with clear errors
(torch's exception types, naming the argument), the limits of the fused kernels, and what
every implementation receives.

The checked call: query [B, Lq, Dq], keys [B, Lk, Dk], values [B, Lk, Dv], w_query
[d, Dq], w_key [d, Dk], v [d], b_query and b_key [d] or None (one floating dtype, one
device), mask None or bool (True = attend), normalised by `check` to a 3-D view
[B or 1, Lq or 1, Lk] (a 1-D mask is [Lk]; a 2-D mask is the key padding [B, Lk]; a 3-D
mask broadcasts to [B, Lq, Lk]), need_weights a bool.
- composite ("run"): run(query, keys, values, w_query, w_key, v, b_query, b_key, mask,
  need_weights) -> (context [B, Lq, Dv], weights [B, Lq, Lk] or None), autograd its own.
- fused, under the op's autograd:
  forward(query, keys, values, w_query, w_key, v, b_query, b_key, mask, need_weights)
    -> (context [B, Lq, Dv] contiguous in query's dtype, stats [B, Lq, 2] fp32 (each
    row's max score and sum of exp(score - max): the backward's P is exp(s - max) / sum,
    as accurate in fp32 as the forward's; 0 and 0 for a row that sees no key), weights
    [B, Lq, Lk] in query's dtype when need_weights, else None);
  backward(grad_context, grad_weights, query, keys, values, w_query, w_key, v, b_query,
    b_key, mask, context, stats, weights) -> gradients of query, keys, values, w_query,
    w_key, v, b_query, b_key in the inputs' shapes and dtype (None for an absent bias).
    grad_context or grad_weights may be None (no gradient reached it); weights is what
    the forward returned (None unless need_weights).
A row whose keys are all masked gives context 0 and weights 0 (as
seqops.scaled_dot_product_attention and torch's SDPA do), and passes no gradient.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops.ops.checks import check_tensor, describe

FN = "seqops.additive_attention"
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The widest values a fused implementation takes (a row of values is one register tile).
MAX_VALUE_DIM = 256


def check(query: Tensor, keys: Tensor, values: Tensor, w_query: Tensor, w_key: Tensor, v: Tensor,
          b_query: Optional[Tensor], b_key: Optional[Tensor], mask: Optional[Tensor],
          need_weights: bool) -> Optional[Tensor]:
    """Raise on a bad call; return the mask as a 3-D bool view [B or 1, Lq or 1, Lk] (None
    when none was given)."""
    named = [("query", query, 3), ("keys", keys, 3), ("values", values, 3), ("w_query", w_query, 2),
             ("w_key", w_key, 2), ("v", v, 1)]
    named += [(name, t, 1) for name, t in (("b_query", b_query), ("b_key", b_key)) if t is not None]
    for name, t, dims in named:
        check_tensor(FN, name, t)
        if t.dim() != dims:
            raise RuntimeError(f"{FN}: '{name}' must have {dims} dims, got {describe(t)}")
        if not t.dtype.is_floating_point:
            raise RuntimeError(f"{FN}: '{name}' must be floating point, got {describe(t)}")
        if t.dtype != query.dtype:
            raise RuntimeError(f"{FN}: '{name}' must have query's dtype {query.dtype}, got {describe(t)}")
        if t.device != query.device:
            raise RuntimeError(f"{FN}: '{name}' must be on query's device {query.device}, got {describe(t)}")
    B, Lq, Dq = query.shape
    Lk, Dk = keys.shape[1], keys.shape[2]
    hidden = v.shape[0]
    if keys.shape[0] != B or values.shape[0] != B:
        raise RuntimeError(f"{FN}: query, keys and values must share the batch size (dim 0), got query "
                           f"{describe(query)}, keys {describe(keys)}, values {describe(values)}")
    if values.shape[1] != Lk:
        raise RuntimeError(f"{FN}: 'values' must have keys' length Lk={Lk} (dim 1), got {describe(values)}")
    expected = [("w_query", w_query, (hidden, Dq)), ("w_key", w_key, (hidden, Dk))]
    expected += [(name, t, (hidden,)) for name, t in (("b_query", b_query), ("b_key", b_key)) if t is not None]
    for name, t, shape in expected:
        if tuple(t.shape) != shape:
            raise RuntimeError(f"{FN}: '{name}' must have shape {shape} ([hidden, in] with hidden = len(v) = "
                               f"{hidden}, Dq = {Dq}, Dk = {Dk}), got {describe(t)}")
    if not isinstance(need_weights, bool):
        raise TypeError(f"{FN}: argument 'need_weights' must be a bool, got {type(need_weights).__name__}")
    if mask is None:
        return None
    check_tensor(FN, "mask", mask)
    if mask.device != query.device:
        raise ValueError(f"{FN}: 'mask' is on {mask.device} but 'query' is on {query.device}")
    return mask_3d(mask, B, Lq, Lk)


def mask_3d(mask: Tensor, B: int, Lq: int, Lk: int) -> Tensor:
    """The mask as a 3-D view [B or 1, Lq or 1, Lk], or a clear error."""
    check_tensor(FN, "mask", mask)
    if mask.dtype != torch.bool:
        raise RuntimeError(f"{FN}: 'mask' must be bool (True = attend), got {describe(mask)}")
    if not 1 <= mask.dim() <= 3:
        raise RuntimeError(f"{FN}: 'mask' must be [Lk], [B, Lk] (key padding) or broadcastable to [B, Lq, Lk] "
                           f"= {(B, Lq, Lk)}, got {describe(mask)}")
    if mask.dim() == 1:
        mask = mask[None, None, :]
    elif mask.dim() == 2:
        mask = mask[:, None, :]
    for size, full in zip(mask.shape, (B, Lq, Lk)):
        if size not in (1, full):
            raise RuntimeError(f"{FN}: 'mask' of shape {tuple(mask.shape)} (a 2-D mask is the key padding "
                               f"[B, Lk]) does not broadcast to [B, Lq, Lk] = {(B, Lq, Lk)}")
    return mask


def fused_reason(query: Tensor, keys: Tensor, values: Tensor, w_query: Tensor, w_key: Tensor, v: Tensor,
                 b_query: Optional[Tensor], b_key: Optional[Tensor], mask: Optional[Tensor],
                 need_weights: bool) -> Optional[str]:
    """Why a fused implementation cannot take this call, whatever its backend, or None."""
    if query.dtype not in FUSED_DTYPES:
        return f"the fused additive attention takes float32, float16 and bfloat16, got {query.dtype} " \
               "(float64 runs on torch)"
    if values.shape[-1] > MAX_VALUE_DIM:
        return f"the fused additive attention takes values up to {MAX_VALUE_DIM} wide, got {values.shape[-1]}"
    return None
