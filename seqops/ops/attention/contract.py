"""What seqops.scaled_dot_product_attention accepts, written once: argument checks with
clear errors (torch's exception types), the limits of the fused kernels, and what every
implementation receives.

The checked call: query [..., L, E], key [..., S, E], value [..., S, Ev] (leading dims
broadcast; with enable_gqa, dim -3 holds heads and key/value heads divide query heads),
attn_mask None or bool/float broadcastable to [..., L, S], dropout_p in [0, 1], is_causal,
causal_offset (query i sees key j when j <= i + causal_offset; 0 is torch's upper-left
alignment, S - L the bottom-right one), scale (float), enable_gqa.
- composite ("run"): run(query, key, value, attn_mask, dropout_p, is_causal, scale,
  enable_gqa, causal_offset) -> output, autograd its own; scale None means 1/sqrt(E).
- fused: 4-D operands, flattened by the op: q [B, Hq, L, E], k [B, Hkv, S, E],
  v [B, Hkv, S, Ev] (any strides; Hkv divides Hq), mask None or 4-D broadcastable to
  [B, Hq, L, S] (its dims full or 1).
  forward(q, k, v, mask, dropout_p, is_causal, causal_offset, scale, seed)
    -> (out [B, Hq, L, Ev] contiguous in q's dtype, lse [B, Hq, L] in lse_dtype(q.dtype), natural log,
    -inf for a row that sees no key);
  backward(grad_out, q, k, v, out, lse, mask, dropout_p, is_causal, causal_offset, scale,
    seed, mask_needs_grad) -> (dq, dk, dv contiguous in the inputs' shapes, dmask in the
    mask's shape or None). Dropout keeps probabilities by Philox(seed), the same in both.
"""
from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from seqops.ops.checks import broadcast_or_raise, check_mask_placement, check_tensor, describe

if TYPE_CHECKING:
    from torch.nn.attention.bias import CausalBias

FN = "seqops.scaled_dot_product_attention"
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The largest head dim a fused implementation takes, per dtype; a backend may narrow it.
MAX_HEAD_DIM = 256


def check(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor], dropout_p: float,
          is_causal: bool, scale: Optional[float], enable_gqa: bool) -> float:
    """Raise on a bad call; return the scale to use (default 1/sqrt(E))."""
    plain = _plain_call_scale(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if plain is not None:
        return plain
    return _check_in_full(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def _plain_call_scale(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa) -> Optional[float]:
    """The scale of a call of the common form (tensors of one floating dtype and device,
    equal leading dims, no GQA, float arguments, a mask that broadcasts), else None: a
    few comparisons, since every call pays them. Anything else takes the full check."""
    if not (isinstance(query, Tensor) and isinstance(key, Tensor) and isinstance(value, Tensor)):
        return None
    q, k, v = query.shape, key.shape, value.shape
    if len(q) < 2 or len(k) != len(q) or len(v) != len(q) or q[:-2] != k[:-2] or k[:-2] != v[:-2]:
        return None
    dtype = query.dtype
    if key.dtype != dtype or value.dtype != dtype or not dtype.is_floating_point:
        return None
    if q[-1] != k[-1] or k[-2] != v[-2] or key.device != query.device or value.device != query.device:
        return None
    if enable_gqa is not False or type(is_causal) is not bool or type(dropout_p) is not float or not (
            0.0 <= dropout_p <= 1.0):
        return None
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor) or attn_mask.device != query.device or not (
                attn_mask.dtype == torch.bool or attn_mask.dtype.is_floating_point):
            return None
        target = (*q[:-1], k[-2])
        mask_shape = attn_mask.shape
        if len(mask_shape) > len(target):
            return None
        for size, full in zip(reversed(mask_shape), reversed(target)):
            if size != 1 and size != full:
                return None
    if scale is None:
        return default_scale(q[-1])
    return scale if type(scale) is float else None


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the logsumexp a fused forward returns for queries of `dtype`: float64
    for float32 (recomputed probabilities would otherwise share its rounding, a few fp32
    ulps; kernels/attention/common.py's lse_dtype), float32 for 16-bit ones."""
    return torch.float64 if dtype == torch.float32 else torch.float32


def default_scale(head_dim: int) -> float:
    """The scale when none is given: 1/sqrt(E), and 1 for E = 0 (no scores to scale: torch
    then averages the values)."""
    return 1.0 / math.sqrt(head_dim) if head_dim else 1.0


def _check_in_full(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa) -> float:
    """Every check, each with its clear error; the scale to use when all pass."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_tensor(FN, name, t)
        if t.dim() < 2:
            raise RuntimeError(f"{FN}: '{name}' must have at least 2 dims [..., length, features], got {describe(t)}")
        if not t.dtype.is_floating_point:
            raise RuntimeError(f"{FN}: '{name}' must be floating point, got {describe(t)}")
    if not (query.dtype == key.dtype == value.dtype):
        raise RuntimeError(f"{FN}: query, key and value must share a dtype, got {query.dtype}, {key.dtype}, "
                           f"{value.dtype}")
    if not (query.device == key.device == value.device):
        raise RuntimeError(f"{FN}: query, key and value must be on one device, got {query.device}, {key.device}, "
                           f"{value.device}")
    if query.shape[-1] != key.shape[-1]:
        raise RuntimeError(f"{FN}: query and key must have the same last dim E, got {describe(query)} and "
                           f"{describe(key)}")
    if key.shape[-2] != value.shape[-2]:
        raise RuntimeError(f"{FN}: key and value must have the same length S (dim -2), got {describe(key)} and "
                           f"{describe(value)}")
    if not isinstance(enable_gqa, bool):
        raise TypeError(f"{FN}: argument 'enable_gqa' must be a bool, got {type(enable_gqa).__name__}")
    if attn_mask is not None:
        check_tensor(FN, "attn_mask", attn_mask)
        if attn_mask.dtype != torch.bool and not attn_mask.dtype.is_floating_point:
            raise RuntimeError(f"{FN}: 'attn_mask' must be bool (True = attend) or floating point (added), "
                               f"got {attn_mask.dtype}")
        check_mask_placement(FN, "attn_mask", attn_mask, query, "query", scores_shape(query, key, value, enable_gqa),
                             "the scores' shape")
    elif enable_gqa or query.shape[:-2] != key.shape[:-2] or key.shape[:-2] != value.shape[:-2]:
        scores_shape(query, key, value, enable_gqa)  # raises if the leading dims do not broadcast
    if not isinstance(dropout_p, numbers.Real) or isinstance(dropout_p, bool):
        raise TypeError(f"{FN}: 'dropout_p' must be a number in [0, 1], got {dropout_p!r}")
    if not 0.0 <= dropout_p <= 1.0:
        raise RuntimeError(f"{FN}: 'dropout_p' must be a number in [0, 1], got {dropout_p!r}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"{FN}: argument 'is_causal' must be a bool, got {type(is_causal).__name__}")
    if scale is None:
        return default_scale(query.shape[-1])
    if isinstance(scale, Tensor) and scale.numel() == 1 and scale.dtype.is_floating_point:
        return float(scale)  # torch takes a one-element tensor too
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"{FN}: argument 'scale' must be a real number or None, got {type(scale).__name__}")
    return float(scale)


def causal_bias(bias: "CausalBias", query: Tensor, key: Tensor, is_causal: bool) -> tuple[None, bool, int]:
    """torch's causal bias object passed as attn_mask, as (attn_mask, is_causal,
    causal_offset): causal_upper_left is is_causal, causal_lower_right is is_causal with
    offset S - L (torch.nn.attention.bias.CausalBias)."""
    from torch.nn.attention.bias import CausalVariant

    if (bias.seq_len_q, bias.seq_len_kv) != (query.shape[-2], key.shape[-2]):
        raise RuntimeError(f"{FN}: the causal bias is for L={bias.seq_len_q}, S={bias.seq_len_kv}, but the query "
                           f"has L={query.shape[-2]} and the key S={key.shape[-2]}")
    offset = bias.seq_len_kv - bias.seq_len_q if bias.variant == CausalVariant.LOWER_RIGHT else 0
    if is_causal and offset:
        raise RuntimeError(f"{FN}: is_causal=True (upper-left) and a lower-right causal bias contradict each other")
    return None, True, offset


def scores_shape(query: Tensor, key: Tensor, value: Tensor, enable_gqa: bool) -> tuple:
    """The shape [..., L, S] of the scores (the leading dims broadcast), or a clear error."""
    if enable_gqa:
        if min(query.dim(), key.dim(), value.dim()) < 3:
            raise IndexError(f"{FN}: enable_gqa needs heads at dim -3: query, key and value of at least 3 dims")
        heads_q, heads_k, heads_v = query.shape[-3], key.shape[-3], value.shape[-3]
        if heads_k != heads_v or heads_k == 0 or heads_q % heads_k:
            raise RuntimeError(
                f"{FN}: enable_gqa needs key and value heads (dim -3) equal and dividing the query heads, "
                f"got query {heads_q}, key {heads_k}, value {heads_v}"
            )
        lead = broadcast_or_raise(FN, "the leading dims of query, key and value",
                                  [query.shape[:-3], key.shape[:-3], value.shape[:-3]]) + (heads_q,)
    else:
        lead = broadcast_or_raise(FN, "the leading dims of query, key and value",
                                  [query.shape[:-2], key.shape[:-2], value.shape[:-2]])
    return lead + (query.shape[-2], key.shape[-2])


def fused_reason(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor], dropout_p: float,
                 is_causal: bool, scale: float, enable_gqa: bool, causal_offset: int = 0) -> Optional[str]:
    """Why a fused implementation cannot take this call, whatever its backend, or None."""
    if query.dtype not in FUSED_DTYPES:
        return f"the fused attention takes float32, float16 and bfloat16, got {query.dtype} (float64 runs on torch)"
    if max(query.shape[-1], value.shape[-1]) > MAX_HEAD_DIM:
        return f"the fused attention takes head dims up to {MAX_HEAD_DIM}, got {query.shape[-1]} and {value.shape[-1]}"
    if dropout_p >= 1.0:
        return "dropout_p = 1 drops everything; the torch backend returns its zeros"
    return None
