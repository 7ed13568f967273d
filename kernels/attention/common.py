"""What every attention kernel shares: score units, masking, dropout, the recomputed
probabilities and score gradients of the backward, and the host-side operand helpers."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..masks import causal_visible
from ..runtime import dot, exp_accurate

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

MASK_NONE = tl.constexpr(0)
MASK_BOOL = tl.constexpr(1)
MASK_FLOAT = tl.constexpr(2)

# Largest head dim the kernels take (BLOCK_D is the next power of two >= the head dim);
# fp32's dK/dV kernel spills above FP32_MAX_HEAD_DIM (see tuning.py).
MAX_HEAD_DIM = 256
FP32_MAX_HEAD_DIM = 128


@triton.jit
def exp_units(x, EXACT: tl.constexpr):
    """e**x (EXACT: natural units, accurate) or 2**x (log2 units, one instruction)."""
    if EXACT:
        return exp_accurate(x)
    return tl.exp2(x)


@triton.jit
def query_block_of_program(n_heads, group_size, L, BLOCK_M: tl.constexpr):
    """The block of queries a program of a query-block grid (cdiv(L, BLOCK_M) * B * Hq
    programs) owns: (its first query, batch * n_heads + head, batch as int64, query
    head, key/value head)."""
    n_blocks = tl.cdiv(L, BLOCK_M)
    start_m = (tl.program_id(0) % n_blocks) * BLOCK_M
    bh = tl.program_id(0) // n_blocks
    h = bh % n_heads
    return start_m, bh, (bh // n_heads).to(tl.int64), h, h // group_size


@triton.jit
def score_units(scale, EXACT: tl.constexpr):
    """(qk_scale, mask_scale): the factors taking q.k and a float mask to the kernel's
    units, natural for fp32 (EXACT) and log2 otherwise."""
    qk_scale = scale if EXACT else scale * LOG2E
    mask_scale = 1.0 if EXACT else LOG2E
    return qk_scale, mask_scale


@triton.jit
def scores(q, k, offs_m, offs_n, mask_base, m_sl, m_ss, L, S, qk_scale, mask_scale, causal_offset,
            MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, CHECK_KEYS: tl.constexpr):
    """Scores [BLOCK_M, BLOCK_N] of queries q [BLOCK_M, D] against keys k [BLOCK_N, D], in
    the kernel's units, -inf where masked (by the mask, causality, or keys past S)."""
    s = dot(q, tl.trans(k)) * qk_scale
    if MASK_KIND != MASK_NONE:
        mask_ptrs = mask_base + offs_m[:, None] * m_sl + offs_n[None, :] * m_ss
        in_bounds = (offs_m < L)[:, None] & (offs_n < S)[None, :]
        if MASK_KIND == MASK_FLOAT:
            s += tl.load(mask_ptrs, mask=in_bounds, other=0.0).to(tl.float32) * mask_scale
        else:
            s = tl.where(tl.load(mask_ptrs, mask=in_bounds, other=0) != 0, s, float("-inf"))
    if CAUSAL:
        s = tl.where(causal_visible(offs_m, offs_n, causal_offset), s, float("-inf"))
    if CHECK_KEYS:
        s = tl.where((offs_n < S)[None, :], s, float("-inf"))
    return s


@triton.jit
def dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p):
    """bool [BLOCK_M, BLOCK_N]: the probabilities dropout keeps, the same in the forward
    and every backward kernel: Philox keyed by (seed + batch*head), counter query*S + key."""
    return tl.rand(seed + bh, offs_m[:, None] * S + offs_n[None, :]) >= dropout_p


@triton.jit
def load_rows(base, offs_rows, offs_cols, stride_row, stride_col, n_rows, n_cols):
    """A [rows, cols] tile, zeros outside [n_rows, n_cols]."""
    return tl.load(base + offs_rows[:, None] * stride_row + offs_cols[None, :] * stride_col,
                   mask=(offs_rows < n_rows)[:, None] & (offs_cols < n_cols)[None, :], other=0.0)


@triton.jit
def grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, m_sl, m_ss, L, S,
                 qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
                 MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, CHECK_KEYS: tl.constexpr,
                 DROPOUT: tl.constexpr, EXACT: tl.constexpr):
    """For one tile of queries x keys: P (after dropout, as the forward used it) and dS,
    the gradient w.r.t. the scores (and so w.r.t. a float mask), both [BLOCK_M, BLOCK_N]
    fp32. lse, delta: [BLOCK_M] (lse +inf for rows outside L, so their P is 0)."""
    s = scores(q, k, offs_m, offs_n, mask_base, m_sl, m_ss, L, S, qk_scale, mask_scale, causal_offset,
                MASK_KIND, CAUSAL, CHECK_KEYS)
    # lse in the kernel's units; a row with every key masked (lse -inf) has P = 0.
    lse = tl.where(lse == float("-inf"), float("inf"), lse if EXACT else lse * LOG2E)
    p = exp_units(s - lse[:, None], EXACT)
    dp = dot(do, tl.trans(v))
    if DROPOUT:
        keep = dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p)
        p_used = tl.where(keep, p * (1.0 / (1.0 - dropout_p)), 0.0)
        dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
    else:
        p_used = p
    ds = p * (dp - delta[:, None])
    return p_used, ds


def head_block(dim: int) -> int:
    """BLOCK_D for a head dim: the next power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(dim))


def mask_operand(mask: Optional[torch.Tensor], shape: tuple, fallback: torch.Tensor):
    """(MASK_* kind, tensor to pass, its 4 strides expanded to `shape` [B, Hq, L, S])."""
    if mask is None:
        return 0, fallback, (0, 0, 0, 0)
    kind = 1 if mask.dtype == torch.bool else 2
    if kind == 1:
        mask = mask.view(torch.uint8)
    expanded = mask.expand(shape)
    return kind, expanded, expanded.stride()
