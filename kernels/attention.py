"""Fused scaled-dot-product attention in Triton, FlashAttention-style: the Lq x Lk score
matrix is never stored, on any path.

Forward: per block of queries, an online softmax over blocks of keys; key blocks every
query of the block sees run unmasked, the causal diagonal band and the ragged last block
run masked, and blocks past the diagonal are skipped. Only the logsumexp of each row is
saved. Backward: delta = rowsum(dO * O); then dK, dV per block of keys (looping over the
query blocks, and over the query heads of a GQA group) and dQ per block of queries, with P
recomputed from the logsumexp: no atomics, so the gradients are deterministic. A float
mask that needs a gradient gets its own kernel, reducing dS over the dims the mask
broadcasts along, straight into the mask's shape; on that path delta is recomputed as
rowsum(P * dP) over every key instead, since the rounding of O to the output dtype in
rowsum(dO * O) would accumulate in that reduction.

Tensors are 4-D: q [B, Hq, L, E], k [B, Hkv, S, E], v [B, Hkv, S, Ev], any strides;
Hkv divides Hq (query head h reads key/value head h // (Hq / Hkv)). Masks are 4-D and
broadcastable to [B, Hq, L, S]: bool (True = attend) or float (added to the scores).
fp16/bf16 scores are kept in log2 units (exp2, with log2(e) folded into the scale);
fp32 keeps natural units and an accurate exp, and its dots are true fp32, not tf32.
Offsets within one (batch, head) are 32-bit, across them 64-bit.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .runtime import INTERPRETED, cast_rounded, dot, exp_accurate

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

MASK_NONE = tl.constexpr(0)
MASK_BOOL = tl.constexpr(1)
MASK_FLOAT = tl.constexpr(2)

# Largest head dim the kernels take (BLOCK_D is the next power of two >= the head dim).
MAX_HEAD_DIM = 256


# Tiles (BLOCK_M, BLOCK_N, num_warps) the autotuner may try, per kernel, dtype class
# ("fp32": FMA dots; "16-bit": tensor cores), head-dim class (BLOCK_D, the larger of the
# two head dims rounded up to a power of two: 64 and below, 128, 256) and feature weight
# ("plain"; "heavy": a mask or dropout). Each tile in TILES was compiled for sm_90 by
# `python tests/compile_triton_kernels.py --calibrate` and spilled no registers; the
# candidates left out spilled, some by kilobytes. CI compiles, for sm_80 and sm_90, the
# tile of each class with the most elements per thread (`--all-tiles`: every tile).
# fp32 has no class 256: its dK/dV kernel spilled at every tile tried down to 16 x 16, so
# the op sends fp32 head dims above FP32_MAX_HEAD_DIM to another backend.
CANDIDATE_TILES = [
    (16, 16, 4), (16, 16, 8), (16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (64, 32, 4),
    (64, 32, 8), (64, 64, 4), (64, 64, 8), (32, 128, 8), (128, 32, 8), (128, 64, 8), (64, 128, 8), (128, 128, 8),
]
FP32_MAX_HEAD_DIM = 128
STAGES = {"forward": (2, 3), "backward_dkdv": (1, 2), "backward_dq": (1, 2)}
TILES = {
    'forward': {
        ('16-bit', 64, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (64, 64, 4), (64, 64, 8), (128, 32, 8), (128, 64, 8)],
        ('16-bit', 64, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (64, 64, 4), (64, 64, 8), (64, 128, 8), (128, 32, 8), (128, 64, 8), (128, 128, 8)],
        ('16-bit', 128, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (64, 64, 4), (64, 64, 8), (128, 32, 8)],
        ('16-bit', 128, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (64, 32, 4), (64, 32, 8), (64, 64, 4), (64, 64, 8), (64, 128, 8), (128, 32, 8), (128, 64, 8)],
        ('16-bit', 256, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 8), (32, 128, 8), (64, 32, 8), (64, 64, 8), (128, 32, 8)],
        ('16-bit', 256, 'plain'): [(32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (128, 32, 8)],
        ('fp32', 64, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 8), (64, 32, 8)],
        ('fp32', 64, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 8), (64, 32, 8)],
        ('fp32', 128, 'heavy'): [(32, 64, 8)],
        ('fp32', 128, 'plain'): [(32, 64, 8)],
    },
    'backward_dkdv': {
        ('16-bit', 64, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (128, 32, 8)],
        ('16-bit', 64, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (64, 64, 4), (64, 64, 8), (128, 32, 8), (128, 64, 8)],
        ('16-bit', 128, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (128, 32, 8)],
        ('16-bit', 128, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 8), (128, 32, 8)],
        ('16-bit', 256, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 8)],
        ('16-bit', 256, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 64, 8)],
        ('fp32', 64, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (64, 32, 8)],
        ('fp32', 64, 'plain'): [(16, 32, 4), (32, 32, 8)],
        ('fp32', 128, 'heavy'): [(16, 16, 4), (16, 16, 8), (16, 32, 4)],
        ('fp32', 128, 'plain'): [(16, 16, 8)],
    },
    'backward_dq': {
        ('16-bit', 64, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (64, 64, 4), (64, 64, 8), (128, 32, 8), (128, 64, 8)],
        ('16-bit', 64, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (64, 64, 4), (64, 64, 8), (64, 128, 8), (128, 32, 8), (128, 64, 8), (128, 128, 8)],
        ('16-bit', 128, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 8), (32, 128, 8), (64, 32, 4), (64, 32, 8), (128, 32, 8)],
        ('16-bit', 128, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (64, 32, 4), (64, 32, 8), (64, 64, 4), (64, 64, 8), (64, 128, 8), (128, 32, 8), (128, 64, 8)],
        ('16-bit', 256, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (128, 32, 8)],
        ('16-bit', 256, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (32, 128, 8), (64, 32, 8), (64, 64, 8), (128, 32, 8), (128, 64, 8)],
        ('fp32', 64, 'heavy'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 8), (64, 32, 8)],
        ('fp32', 64, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 8), (64, 32, 8)],
        ('fp32', 128, 'heavy'): [(16, 32, 4), (32, 32, 8)],
        ('fp32', 128, 'plain'): [(16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 8), (64, 32, 8)],
    },
}
# When set (by a calibration run), the prune keeps every candidate tile.
CALIBRATING = False


def _head_dim_class(block_d: int) -> int:
    return 64 if block_d <= 64 else block_d


def _prune(kernel: str):
    """The autotuner's early prune: the calibrated tiles for this launch's classes."""
    def prune(configs, named_args, **kwargs):
        if INTERPRETED or CALIBRATING:
            return configs
        dtype_class = "fp32" if named_args["q_ptr"].dtype == torch.float32 else "16-bit"
        head_class = _head_dim_class(max(kwargs["BLOCK_D"], kwargs["BLOCK_DV"]))
        weight = "heavy" if kwargs["MASK_KIND"] or kwargs["DROPOUT"] else "plain"
        allowed = TILES[kernel].get((dtype_class, head_class, weight))
        if not allowed:
            raise ValueError(f"no {kernel} tile for {dtype_class} head dims of class {head_class} ({weight}); "
                             "the op should have refused this input")
        return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) in allowed]

    return dict(early_config_prune=prune)


def _configs(kernel: str) -> list[triton.Config]:
    """The autotuning space: under the interpreter one small config (tuning there would
    measure nothing, and small blocks make more block edges to test)."""
    if INTERPRETED:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w in CANDIDATE_TILES for s in STAGES[kernel]]


def dmask_tile(block_d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of the float-mask gradient kernel, which holds q, k,
    v and dO tiles with three score-sized ones: smaller as the head dim grows, so that it
    does not spill on sm_80 or sm_90 (tests/compile_triton_kernels.py)."""
    if INTERPRETED:
        return 32, 16, 4
    return DMASK_TILES[_head_dim_class(block_d)]


DMASK_TILES = {64: (32, 32, 8), 128: (16, 32, 8), 256: (16, 32, 8)}


AUTOTUNE_KEY = ["HEAD_DIM", "HEAD_DIM_V", "CAUSAL", "MASK_KIND", "DROPOUT"]


@triton.jit
def _exp(x, EXACT: tl.constexpr):
    """e**x (EXACT: natural units, accurate) or 2**x (log2 units, one instruction)."""
    if EXACT:
        return exp_accurate(x)
    return tl.exp2(x)


@triton.jit
def _query_block_of_program(n_heads, group_size, L, BLOCK_M: tl.constexpr):
    """The block of queries a program of a query-block grid (cdiv(L, BLOCK_M) * B * Hq
    programs) owns: (its first query, batch * n_heads + head, batch as int64, query
    head, key/value head)."""
    n_blocks = tl.cdiv(L, BLOCK_M)
    start_m = (tl.program_id(0) % n_blocks) * BLOCK_M
    bh = tl.program_id(0) // n_blocks
    h = bh % n_heads
    return start_m, bh, (bh // n_heads).to(tl.int64), h, h // group_size


@triton.jit
def _score_units(scale, EXACT: tl.constexpr):
    """(qk_scale, mask_scale): the factors taking q.k and a float mask to the kernel's
    units, natural for fp32 (EXACT) and log2 otherwise."""
    qk_scale = scale if EXACT else scale * LOG2E
    mask_scale = 1.0 if EXACT else LOG2E
    return qk_scale, mask_scale


@triton.jit
def _scores(q, k, offs_m, offs_n, mask_base, m_sl, m_ss, L, S, qk_scale, mask_scale,
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
        s = tl.where(offs_n[None, :] <= offs_m[:, None], s, float("-inf"))
    if CHECK_KEYS:
        s = tl.where((offs_n < S)[None, :], s, float("-inf"))
    return s


@triton.jit
def _dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p):
    """bool [BLOCK_M, BLOCK_N]: the probabilities dropout keeps, the same in the forward
    and every backward kernel: Philox keyed by (seed + batch*head), counter query*S + key."""
    return tl.rand(seed + bh, offs_m[:, None] * S + offs_n[None, :]) >= dropout_p


@triton.jit
def _load_rows(base, offs_rows, offs_cols, stride_row, stride_col, n_rows, n_cols):
    """A [rows, cols] tile, zeros outside [n_rows, n_cols]."""
    return tl.load(base + offs_rows[:, None] * stride_row + offs_cols[None, :] * stride_col,
                   mask=(offs_rows < n_rows)[:, None] & (offs_cols < n_cols)[None, :], other=0.0)


@triton.jit
def _forward_key_blocks(
    acc, m_i, l_i, q, k_base, v_base, mask_base, k_ss, k_se, v_ss, v_se, m_sl, m_ss,
    offs_m, lo, hi, L, S, qk_scale, mask_scale, dropout_p, seed, bh,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
    DROPOUT: tl.constexpr, EXACT: tl.constexpr,
):
    """The online softmax over key blocks [lo, hi): causal and key-bound masks only when MASKED."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(k_base, offs_n, offs_d, k_ss, k_se, S, HEAD_DIM)
        s = _scores(q, k, offs_m, offs_n, mask_base, m_sl, m_ss, L, S, qk_scale, mask_scale,
                    MASK_KIND, CAUSAL and MASKED, MASKED)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row that has seen only -inf keeps max -inf; shift it by 0 so that its
        # probabilities are exp(-inf) = 0, not exp(-inf - -inf) = NaN.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = _exp(s - shift[:, None], EXACT)
        alpha = _exp(m_i - shift, EXACT)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            keep = _dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p)
            p = tl.where(keep, p * (1.0 / (1.0 - dropout_p)), 0.0)
        v = _load_rows(v_base, offs_n, offs_dv, v_ss, v_se, S, HEAD_DIM_V)
        acc = acc * alpha[:, None] + dot(cast_rounded(p, v.dtype), v)
        m_i = m_new
    return acc, m_i, l_i


@triton.autotune(configs=_configs("forward"), key=AUTOTUNE_KEY, prune_configs_by=_prune("forward"))
@triton.jit
def attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, lse_ptr,
    n_heads, group_size, L, S,
    q_sb, q_sh, q_sl, q_se,
    k_sb, k_sh, k_ss, k_se,
    v_sb, v_sh, v_ss, v_se,
    m_sb, m_sh, m_sl, m_ss,
    o_sb, o_sh, o_sl, o_se,
    scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out = softmax(scale * q k^T + mask) v for one block of BLOCK_M queries of one
    (batch, head); lse = the logsumexp of each row's scores (natural log; -inf for a row
    with every key masked, whose output is 0, as torch gives)."""
    start_m, bh, b, h, h_kv = _query_block_of_program(n_heads, group_size, L, BLOCK_M)
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = _score_units(scale, EXACT)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = _load_rows(q_ptr + b * q_sb + h * q_sh, offs_m, tl.arange(0, BLOCK_D), q_sl, q_se, L, HEAD_DIM)
    k_base = k_ptr + b * k_sb + h_kv * k_sh
    v_base = v_ptr + b * v_sb + h_kv * v_sh
    mask_base = mask_ptr + b * m_sb + h * m_sh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    full_key_blocks_end = (S // BLOCK_N) * BLOCK_N
    if CAUSAL:
        # Keys below start_m are seen by every query of the block; the band up to the
        # block's last query is masked; keys past it are never seen.
        hi = tl.minimum(S, start_m + BLOCK_M)
        unmasked_end = tl.minimum((start_m // BLOCK_N) * BLOCK_N, full_key_blocks_end)
    else:
        hi = S
        unmasked_end = full_key_blocks_end
    acc, m_i, l_i = _forward_key_blocks(
        acc, m_i, l_i, q, k_base, v_base, mask_base, k_ss, k_se, v_ss, v_se, m_sl, m_ss,
        offs_m, 0, unmasked_end, L, S, qk_scale, mask_scale, dropout_p, seed, bh,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N, MASK_KIND, CAUSAL, False, DROPOUT, EXACT)
    acc, m_i, l_i = _forward_key_blocks(
        acc, m_i, l_i, q, k_base, v_base, mask_base, k_ss, k_se, v_ss, v_se, m_sl, m_ss,
        offs_m, unmasked_end, hi, L, S, qk_scale, mask_scale, dropout_p, seed, bh,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N, MASK_KIND, CAUSAL, True, DROPOUT, EXACT)

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    if EXACT:
        lse = m_i + tl.log(l_i)
    else:
        lse = (m_i + tl.log2(l_i)) * LN2
    lse = tl.where(empty, float("-inf"), lse)
    offs_dv = tl.arange(0, BLOCK_DV)
    out_ptrs = out_ptr + b * o_sb + h * o_sh + offs_m[:, None] * o_sl + offs_dv[None, :] * o_se
    tl.store(out_ptrs, cast_rounded(out, out_ptr.dtype.element_ty),
             mask=(offs_m < L)[:, None] & (offs_dv < HEAD_DIM_V)[None, :])
    tl.store(lse_ptr + bh.to(tl.int64) * L + offs_m, lse, mask=offs_m < L)


@triton.jit
def attention_backward_delta_kernel(
    out_ptr, do_ptr, delta_ptr, n_heads, L,
    o_sb, o_sh, o_sl, o_se,
    do_sb, do_sh, do_sl, do_se,
    HEAD_DIM_V: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """delta = rowsum(dO * O) [B, H, L] in fp32, the softmax backward's row term."""
    start_m, bh, b, h, _ = _query_block_of_program(n_heads, 1, L, BLOCK_M)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    o = _load_rows(out_ptr + b * o_sb + h * o_sh, offs_m, offs_dv, o_sl, o_se, L, HEAD_DIM_V)
    do = _load_rows(do_ptr + b * do_sb + h * do_sh, offs_m, offs_dv, do_sl, do_se, L, HEAD_DIM_V)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(delta_ptr + bh.to(tl.int64) * L + offs_m, delta, mask=offs_m < L)


@triton.jit
def attention_backward_delta_from_probs_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr,
    n_heads, group_size, L, S,
    q_sb, q_sh, q_sl, q_se,
    k_sb, k_sh, k_ss, k_se,
    v_sb, v_sh, v_ss, v_se,
    m_sb, m_sh, m_sl, m_ss,
    do_sb, do_sh, do_sl, do_se,
    scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """delta = rowsum(P * dP) [B, H, L] in fp32, recomputed over every key: the same
    quantity as rowsum(dO * O) without the rounding of O to the output dtype. A float
    mask's gradient sums dS = P * (dP - delta) over queries and heads, where that
    rounding (about one bf16 ulp of delta per row) would add up to more than the
    rounding of the gradient itself; the float-mask path pays this extra pass for it."""
    start_m, bh, b, h, h_kv = _query_block_of_program(n_heads, group_size, L, BLOCK_M)
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = _score_units(scale, EXACT)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = _load_rows(q_ptr + b * q_sb + h * q_sh, offs_m, offs_d, q_sl, q_se, L, HEAD_DIM)
    do = _load_rows(do_ptr + b * do_sb + h * do_sh, offs_m, offs_dv, do_sl, do_se, L, HEAD_DIM_V)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=float("inf"))
    no_delta = tl.zeros([BLOCK_M], tl.float32)
    mask_base = mask_ptr + b * m_sb + h * m_sh
    hi = tl.minimum(S, start_m + BLOCK_M) if CAUSAL else S
    delta = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(k_ptr + b * k_sb + h_kv * k_sh, offs_n, offs_d, k_ss, k_se, S, HEAD_DIM)
        v = _load_rows(v_ptr + b * v_sb + h_kv * v_sh, offs_n, offs_dv, v_ss, v_se, S, HEAD_DIM_V)
        # With delta 0, _grad_scores' dS is P * dP (dP scaled by dropout's keep mask).
        _, p_dp = _grad_scores(q, k, v, do, lse, no_delta, offs_m, offs_n, mask_base, m_sl, m_ss, L, S,
                                qk_scale, mask_scale, dropout_p, seed, bh,
                                MASK_FLOAT, CAUSAL, True, DROPOUT, EXACT)
        delta += tl.sum(p_dp, axis=1)
    tl.store(delta_ptr + bh.to(tl.int64) * L + offs_m, delta, mask=offs_m < L)


@triton.jit
def _grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, m_sl, m_ss, L, S,
                 qk_scale, mask_scale, dropout_p, seed, bh,
                 MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, CHECK_KEYS: tl.constexpr,
                 DROPOUT: tl.constexpr, EXACT: tl.constexpr):
    """For one tile of queries x keys: P (after dropout, as the forward used it) and dS,
    the gradient w.r.t. the scores (and so w.r.t. a float mask), both [BLOCK_M, BLOCK_N]
    fp32. lse, delta: [BLOCK_M] (lse +inf for rows outside L, so their P is 0)."""
    s = _scores(q, k, offs_m, offs_n, mask_base, m_sl, m_ss, L, S, qk_scale, mask_scale,
                MASK_KIND, CAUSAL, CHECK_KEYS)
    # lse in the kernel's units; a row with every key masked (lse -inf) has P = 0.
    lse = tl.where(lse == float("-inf"), float("inf"), lse if EXACT else lse * LOG2E)
    p = _exp(s - lse[:, None], EXACT)
    dp = dot(do, tl.trans(v))
    if DROPOUT:
        keep = _dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p)
        p_used = tl.where(keep, p * (1.0 / (1.0 - dropout_p)), 0.0)
        dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
    else:
        p_used = p
    ds = p * (dp - delta[:, None])
    return p_used, ds


@triton.jit
def _dkdv_query_blocks(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, mask_base,
    q_sl, q_se, do_sl, do_se, m_sl, m_ss,
    offs_n, lo, hi, L, S, qk_scale, mask_scale, dropout_p, seed, bh,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    EXACT: tl.constexpr,
):
    """dK, dV contributions of query blocks [lo, hi) to one block of keys."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _load_rows(q_base, offs_m, offs_d, q_sl, q_se, L, HEAD_DIM)
        do = _load_rows(do_base, offs_m, offs_dv, do_sl, do_se, L, HEAD_DIM_V)
        lse = tl.load(lse_base + offs_m, mask=offs_m < L, other=float("inf"))
        delta = tl.load(delta_base + offs_m, mask=offs_m < L, other=0.0)
        p, ds = _grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, m_sl, m_ss, L, S,
                             qk_scale, mask_scale, dropout_p, seed, bh, MASK_KIND, CAUSAL, False, DROPOUT, EXACT)
        dv += dot(tl.trans(cast_rounded(p, do.dtype)), do)
        dk += dot(tl.trans(cast_rounded(ds, q.dtype)), q)
    return dk, dv


@triton.autotune(configs=_configs("backward_dkdv"), key=AUTOTUNE_KEY, prune_configs_by=_prune("backward_dkdv"))
@triton.jit
def attention_backward_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    n_heads, group_size, L, S,
    q_sb, q_sh, q_sl, q_se,
    k_sb, k_sh, k_ss, k_se,
    v_sb, v_sh, v_ss, v_se,
    m_sb, m_sh, m_sl, m_ss,
    do_sb, do_sh, do_sl, do_se,
    dk_sb, dk_sh, dk_ss, dk_se,
    dv_sb, dv_sh, dv_ss, dv_se,
    scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dK, dV for one block of BLOCK_N keys of one (batch, key/value head), summed over
    the query heads of its GQA group and over their query blocks (no atomics)."""
    n_blocks = tl.cdiv(S, BLOCK_N)
    start_n = (tl.program_id(0) % n_blocks) * BLOCK_N
    bh_kv = tl.program_id(0) // n_blocks
    n_kv_heads = n_heads // group_size
    b = (bh_kv // n_kv_heads).to(tl.int64)
    h_kv = bh_kv % n_kv_heads
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = _score_units(scale, EXACT)

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    k = _load_rows(k_ptr + b * k_sb + h_kv * k_sh, offs_n, offs_d, k_ss, k_se, S, HEAD_DIM)
    v = _load_rows(v_ptr + b * v_sb + h_kv * v_sh, offs_n, offs_dv, v_ss, v_se, S, HEAD_DIM_V)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    if CAUSAL:
        # Query i sees key j when i >= j: query blocks before start_n see none of these
        # keys; those up to the block's last key are masked; later ones see them all.
        lo = (start_n // BLOCK_M) * BLOCK_M
        unmasked_start = tl.minimum(tl.cdiv(start_n + BLOCK_N, BLOCK_M) * BLOCK_M, L)
    else:
        lo = 0
        unmasked_start = 0
    for g in range(group_size):
        h = h_kv * group_size + g
        bh = b * n_heads + h
        q_base = q_ptr + b * q_sb + h * q_sh
        do_base = do_ptr + b * do_sb + h * do_sh
        mask_base = mask_ptr + b * m_sb + h * m_sh
        dk, dv = _dkdv_query_blocks(
            dk, dv, k, v, q_base, do_base, lse_ptr + bh * L, delta_ptr + bh * L, mask_base,
            q_sl, q_se, do_sl, do_se, m_sl, m_ss, offs_n, lo, unmasked_start, L, S,
            qk_scale, mask_scale, dropout_p, seed, bh.to(tl.int32),
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, MASK_KIND, CAUSAL, DROPOUT, EXACT)
        dk, dv = _dkdv_query_blocks(
            dk, dv, k, v, q_base, do_base, lse_ptr + bh * L, delta_ptr + bh * L, mask_base,
            q_sl, q_se, do_sl, do_se, m_sl, m_ss, offs_n, unmasked_start, L, L, S,
            qk_scale, mask_scale, dropout_p, seed, bh.to(tl.int32),
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, MASK_KIND, False, DROPOUT, EXACT)
    key_ok = (offs_n < S)[:, None]
    dk_ptrs = dk_ptr + b * dk_sb + h_kv * dk_sh + offs_n[:, None] * dk_ss + offs_d[None, :] * dk_se
    tl.store(dk_ptrs, cast_rounded(dk * scale, dk_ptr.dtype.element_ty), mask=key_ok & (offs_d < HEAD_DIM)[None, :])
    dv_ptrs = dv_ptr + b * dv_sb + h_kv * dv_sh + offs_n[:, None] * dv_ss + offs_dv[None, :] * dv_se
    tl.store(dv_ptrs, cast_rounded(dv, dv_ptr.dtype.element_ty), mask=key_ok & (offs_dv < HEAD_DIM_V)[None, :])


@triton.jit
def _dq_key_blocks(
    dq, q, do, lse, delta, k_base, v_base, mask_base, k_ss, k_se, v_ss, v_se, m_sl, m_ss,
    offs_m, lo, hi, L, S, qk_scale, mask_scale, dropout_p, seed, bh,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
    DROPOUT: tl.constexpr, EXACT: tl.constexpr,
):
    """dQ contributions of key blocks [lo, hi) to one block of queries."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(k_base, offs_n, offs_d, k_ss, k_se, S, HEAD_DIM)
        v = _load_rows(v_base, offs_n, offs_dv, v_ss, v_se, S, HEAD_DIM_V)
        p, ds = _grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, m_sl, m_ss, L, S,
                             qk_scale, mask_scale, dropout_p, seed, bh,
                             MASK_KIND, CAUSAL and MASKED, MASKED, DROPOUT, EXACT)
        dq += dot(cast_rounded(ds, k.dtype), k)
    return dq


@triton.autotune(configs=_configs("backward_dq"), key=AUTOTUNE_KEY, prune_configs_by=_prune("backward_dq"))
@triton.jit
def attention_backward_dq_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    n_heads, group_size, L, S,
    q_sb, q_sh, q_sl, q_se,
    k_sb, k_sh, k_ss, k_se,
    v_sb, v_sh, v_ss, v_se,
    m_sb, m_sh, m_sl, m_ss,
    do_sb, do_sh, do_sl, do_se,
    dq_sb, dq_sh, dq_sl, dq_se,
    scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dQ for one block of BLOCK_M queries of one (batch, head), over its key blocks."""
    start_m, bh, b, h, h_kv = _query_block_of_program(n_heads, group_size, L, BLOCK_M)
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = _score_units(scale, EXACT)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_rows(q_ptr + b * q_sb + h * q_sh, offs_m, offs_d, q_sl, q_se, L, HEAD_DIM)
    do = _load_rows(do_ptr + b * do_sb + h * do_sh, offs_m, tl.arange(0, BLOCK_DV), do_sl, do_se, L, HEAD_DIM_V)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=float("inf"))
    delta = tl.load(delta_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=0.0)
    k_base = k_ptr + b * k_sb + h_kv * k_sh
    v_base = v_ptr + b * v_sb + h_kv * v_sh
    mask_base = mask_ptr + b * m_sb + h * m_sh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    full_key_blocks_end = (S // BLOCK_N) * BLOCK_N
    if CAUSAL:
        hi = tl.minimum(S, start_m + BLOCK_M)
        unmasked_end = tl.minimum((start_m // BLOCK_N) * BLOCK_N, full_key_blocks_end)
    else:
        hi = S
        unmasked_end = full_key_blocks_end
    dq = _dq_key_blocks(dq, q, do, lse, delta, k_base, v_base, mask_base, k_ss, k_se, v_ss, v_se, m_sl, m_ss,
                        offs_m, 0, unmasked_end, L, S, qk_scale, mask_scale, dropout_p, seed, bh,
                        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N, MASK_KIND, CAUSAL, False, DROPOUT, EXACT)
    dq = _dq_key_blocks(dq, q, do, lse, delta, k_base, v_base, mask_base, k_ss, k_se, v_ss, v_se, m_sl, m_ss,
                        offs_m, unmasked_end, hi, L, S, qk_scale, mask_scale, dropout_p, seed, bh,
                        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N, MASK_KIND, CAUSAL, True, DROPOUT, EXACT)
    dq_ptrs = dq_ptr + b * dq_sb + h * dq_sh + offs_m[:, None] * dq_sl + offs_d[None, :] * dq_se
    tl.store(dq_ptrs, cast_rounded(dq * scale, dq_ptr.dtype.element_ty),
             mask=(offs_m < L)[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit
def attention_backward_dmask_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dmask_ptr,
    n_heads, group_size, n_batch, L, S, mask_heads,
    q_sb, q_sh, q_sl, q_se,
    k_sb, k_sh, k_ss, k_se,
    v_sb, v_sh, v_ss, v_se,
    m_sb, m_sh, m_sl, m_ss,
    do_sb, do_sh, do_sl, do_se,
    dm_sb, dm_sh, dm_sl, dm_ss,
    scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    REDUCE_B: tl.constexpr, REDUCE_H: tl.constexpr, REDUCE_L: tl.constexpr, REDUCE_S: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The gradient of a float mask: dS summed over the dims the mask broadcasts along
    (REDUCE_*), one tile of the mask's own [Bm, Hm, Lm, Sm] a program; dS is recomputed
    from the inputs, so nothing of size L x S is stored but the gradient itself."""
    n_m_tiles = 1 if REDUCE_L else tl.cdiv(L, BLOCK_M)
    n_n_tiles = 1 if REDUCE_S else tl.cdiv(S, BLOCK_N)
    pid = tl.program_id(0)
    tile_n = pid % n_n_tiles
    tile_m = (pid // n_n_tiles) % n_m_tiles
    bhm = pid // (n_n_tiles * n_m_tiles)
    bm = bhm // mask_heads
    hm = bhm % mask_heads
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = _score_units(scale, EXACT)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)

    b_lo, b_hi = (0, n_batch) if REDUCE_B else (bm, bm + 1)
    h_lo, h_hi = (0, n_heads) if REDUCE_H else (hm, hm + 1)
    m_lo, m_hi = (0, L) if REDUCE_L else (tile_m * BLOCK_M, tile_m * BLOCK_M + 1)
    n_lo, n_hi = (0, S) if REDUCE_S else (tile_n * BLOCK_N, tile_n * BLOCK_N + 1)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for b in range(b_lo, b_hi):
        b64 = tl.cast(b, tl.int64)
        for h in range(h_lo, h_hi):
            bh = (b64 * n_heads + h).to(tl.int32)
            h_kv = h // group_size
            mask_base = mask_ptr + b64 * m_sb + h * m_sh
            for start_m in range(m_lo, m_hi, BLOCK_M):
                offs_m = start_m + tl.arange(0, BLOCK_M)
                q = _load_rows(q_ptr + b64 * q_sb + h * q_sh, offs_m, offs_d, q_sl, q_se, L, HEAD_DIM)
                do = _load_rows(do_ptr + b64 * do_sb + h * do_sh, offs_m, offs_dv, do_sl, do_se, L, HEAD_DIM_V)
                lse = tl.load(lse_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=float("inf"))
                delta = tl.load(delta_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=0.0)
                for start_n in range(n_lo, n_hi, BLOCK_N):
                    offs_n = start_n + tl.arange(0, BLOCK_N)
                    k = _load_rows(k_ptr + b64 * k_sb + h_kv * k_sh, offs_n, offs_d, k_ss, k_se, S, HEAD_DIM)
                    v = _load_rows(v_ptr + b64 * v_sb + h_kv * v_sh, offs_n, offs_dv, v_ss, v_se, S, HEAD_DIM_V)
                    p, ds = _grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, m_sl, m_ss, L, S,
                                         qk_scale, mask_scale, dropout_p, seed, bh,
                                         MASK_FLOAT, CAUSAL, True, DROPOUT, EXACT)
                    acc += ds
    dm_base = dmask_ptr + bm.to(tl.int64) * dm_sb + hm * dm_sh
    rows = tl.arange(0, BLOCK_M) if REDUCE_L else tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N) if REDUCE_S else tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if REDUCE_L:
        acc = tl.sum(acc, axis=0)[None, :]
        rows = tl.arange(0, 1)
    if REDUCE_S:
        acc = tl.sum(acc, axis=1)[:, None]
        cols = tl.arange(0, 1)
    rows_end = 1 if REDUCE_L else L
    cols_end = 1 if REDUCE_S else S
    tl.store(dm_base + rows[:, None] * dm_sl + cols[None, :] * dm_ss, cast_rounded(acc, dmask_ptr.dtype.element_ty),
             mask=(rows < rows_end)[:, None] & (cols < cols_end)[None, :])


def _head_block(dim: int) -> int:
    """BLOCK_D for a head dim: the next power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(dim))


def _mask_operand(mask: Optional[torch.Tensor], shape: tuple, fallback: torch.Tensor):
    """(MASK_* kind, tensor to pass, its 4 strides expanded to `shape` [B, Hq, L, S])."""
    if mask is None:
        return 0, fallback, (0, 0, 0, 0)
    kind = 1 if mask.dtype == torch.bool else 2
    if kind == 1:
        mask = mask.view(torch.uint8)
    expanded = mask.expand(shape)
    return kind, expanded, expanded.stride()


def attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
    dropout_p: float, is_causal: bool, scale: float, seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention forward.

    q [B, Hq, L, E], k [B, Hkv, S, E], v [B, Hkv, S, Ev] (any strides, Hkv divides Hq);
    mask: None, or bool/float 4-D broadcastable to [B, Hq, L, S]; dropout_p in [0, 1),
    with the Philox `seed`. Returns out [B, Hq, L, Ev] (q's dtype, contiguous) and
    lse [B, Hq, L] fp32 (natural log; -inf for rows with every key masked).
    """
    B, Hq, L, E = q.shape
    Hkv, S, Ev = k.shape[1], k.shape[2], v.shape[3]
    out = torch.empty(B, Hq, L, Ev, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, Hq, L, dtype=torch.float32, device=q.device)
    if B * Hq * L == 0 or S == 0 or Ev == 0:
        out.zero_()
        lse.fill_(float("-inf"))
        return out, lse
    mask_kind, mask_arg, mask_strides = _mask_operand(mask, (B, Hq, L, S), q)
    grid = lambda meta: (triton.cdiv(L, meta["BLOCK_M"]) * B * Hq,)
    attention_forward_kernel[grid](
        q, k, v, mask_arg, out, lse,
        Hq, Hq // Hkv, L, S,
        *q.stride(), *k.stride(), *v.stride(), *mask_strides, *out.stride(),
        float(scale), float(dropout_p), int(seed),
        HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=_head_block(E), BLOCK_DV=_head_block(Ev),
        MASK_KIND=mask_kind, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0,
    )
    return out, lse


def attention_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, mask: Optional[torch.Tensor], dropout_p: float, is_causal: bool, scale: float,
    seed: int, mask_needs_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Gradients of attention_forward: dq, dk, dv (contiguous, in the inputs' shapes and
    dtype) and, when mask_needs_grad (a float mask), dmask in the mask's own shape."""
    B, Hq, L, E = q.shape
    Hkv, S, Ev = k.shape[1], k.shape[2], v.shape[3]
    dq = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
    dmask = torch.zeros(mask.shape, dtype=mask.dtype, device=mask.device) if mask_needs_grad else None
    if B * Hq * L == 0 or S == 0 or Ev == 0:
        return dq, dk, dv, dmask
    mask_kind, mask_arg, mask_strides = _mask_operand(mask, (B, Hq, L, S), q)
    dims = dict(HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=_head_block(E), BLOCK_DV=_head_block(Ev))
    flags = dict(MASK_KIND=mask_kind, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0)
    common = (float(scale), float(dropout_p), int(seed))
    delta = torch.empty(B, Hq, L, dtype=torch.float32, device=q.device)
    if dmask is None:
        delta_block = 32 if INTERPRETED else max(16, 4096 // _head_block(Ev))
        attention_backward_delta_kernel[(triton.cdiv(L, delta_block) * B * Hq,)](
            out, grad_out, delta, Hq, L, *out.stride(), *grad_out.stride(),
            HEAD_DIM_V=Ev, BLOCK_DV=_head_block(Ev), BLOCK_M=delta_block,
        )
    else:
        block_m, block_n, warps = dmask_tile(max(dims["BLOCK_D"], dims["BLOCK_DV"]))
        attention_backward_delta_from_probs_kernel[(triton.cdiv(L, block_m) * B * Hq,)](
            q, k, v, mask_arg, grad_out, lse, delta,
            Hq, Hq // Hkv, L, S,
            *q.stride(), *k.stride(), *v.stride(), *mask_strides, *grad_out.stride(),
            *common, **dims, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
        )
    grid_keys = lambda meta: (triton.cdiv(S, meta["BLOCK_N"]) * B * Hkv,)
    attention_backward_dkdv_kernel[grid_keys](
        q, k, v, mask_arg, grad_out, lse, delta, dk, dv,
        Hq, Hq // Hkv, L, S,
        *q.stride(), *k.stride(), *v.stride(), *mask_strides, *grad_out.stride(), *dk.stride(), *dv.stride(),
        *common, **dims, **flags,
    )
    grid_queries = lambda meta: (triton.cdiv(L, meta["BLOCK_M"]) * B * Hq,)
    attention_backward_dq_kernel[grid_queries](
        q, k, v, mask_arg, grad_out, lse, delta, dq,
        Hq, Hq // Hkv, L, S,
        *q.stride(), *k.stride(), *v.stride(), *mask_strides, *grad_out.stride(), *dq.stride(),
        *common, **dims, **flags,
    )
    if dmask is not None:
        Bm, Hm, Lm, Sm = mask.shape
        reduce = dict(REDUCE_B=Bm == 1 and B > 1, REDUCE_H=Hm == 1 and Hq > 1,
                      REDUCE_L=Lm == 1 and L > 1, REDUCE_S=Sm == 1 and S > 1)
        block_m, block_n, warps = dmask_tile(max(dims["BLOCK_D"], dims["BLOCK_DV"]))
        tiles = (1 if reduce["REDUCE_L"] else triton.cdiv(L, block_m)) * (1 if reduce["REDUCE_S"] else triton.cdiv(S, block_n))
        attention_backward_dmask_kernel[(tiles * Bm * Hm,)](
            q, k, v, mask_arg, grad_out, lse, delta, dmask,
            Hq, Hq // Hkv, B, L, S, Hm,
            *q.stride(), *k.stride(), *v.stride(), *mask_strides, *grad_out.stride(), *dmask.stride(),
            *common, **dims, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0, **reduce,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
        )
    return dq, dk, dv, dmask
