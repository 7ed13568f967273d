"""Attention for decode steps: a few queries a head (a token, or a short draft, appended
to a key/value cache) against a long cache, in two kernels.

The forward's grid is a program per block of queries per (batch, query head): at decode
that is B * Hq programs, each walking all S keys, too few to keep the GPU's memory system
busy, and a GQA group reads its key/value head once per query head. Here:

- the query heads of a group are packed: a program's rows are its group's Hq / Hkv query
  heads times the L queries (row r: head h_kv * group + r // L, query r % L), so each
  key/value tile is read once for the whole group; groups with more rows than
  DECODE_BLOCK_M take several row blocks;
- each (batch, key/value head)'s keys are split over `splits` programs (decode_plan), each
  writing its rows' output normalised over its own keys and their logsumexp, fp32; the
  combine kernel then takes each row's logsumexp over the splits and weights the partial
  outputs by exp(partial lse - lse). With one split the first kernel writes the output.

Same operands and results as attention_forward (q [B, Hq, L, E], k [B, Hkv, S, E],
v [B, Hkv, S, Ev], any strides; bool or float mask broadcastable to [B, Hq, L, S];
causal with the bottom-right offset), no dropout. The backward is attention_backward's:
it needs only the output and the logsumexp, which are the same."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from ..masks import causal_visible
from ..runtime import cast_rounded, ceil_div, dot, exp_accurate, multiprocessor_count, next_power_of_2
from .common import (MASK_BOOL, MASK_FLOAT, MASK_NONE, head_block, lse_dtype, mask_operand, normalised_rows,
                     online_softmax_step, score_units)

# Most queries a head a call may have to run here (a decode step, or a short draft).
DECODE_MAX_QUERIES = 16
# (packed rows, keys) a program takes a step at most: (64, 64) up to head dim 128,
# (32, 32) above, where the fp32 output accumulator and the key tile are twice as wide.
# fp32 operands past head dim 64 take half the keys a step (at 64, sm_80's fp32 head dim
# 128 split kernel spilled 8 bytes at 128 registers: benchmarks/static_report).
DECODE_TILES = ((128, (64, 64)), (256, (32, 32)))
# A split keeps at least this many key blocks (fewer would spend more on the combine than
# they save), and a row is split at most MAX_DECODE_SPLITS ways.
MIN_BLOCKS_PER_SPLIT = 4
MAX_DECODE_SPLITS = 64
# Programs a launch aims at, per multiprocessor: two, so that one's loads cover the other's math.
PROGRAMS_PER_PROCESSOR = 2


@dataclass(frozen=True)
class DecodePlan:
    """block_m packed rows a program, row_blocks of them a group; block_n keys a step;
    each (batch, key/value head)'s keys in `splits` runs of keys_per_split (a multiple
    of block_n)."""

    block_m: int
    row_blocks: int
    block_n: int
    splits: int
    keys_per_split: int


def decode_plan(batch: int, kv_heads: int, group_size: int, n_queries: int, n_keys: int, head_dim: int,
                processors: int, fp32: bool = False) -> DecodePlan:
    """The tiling of a decode launch on a GPU of `processors` multiprocessors: as many
    splits as bring the programs to PROGRAMS_PER_PROCESSOR a multiprocessor, each keeping
    at least MIN_BLOCKS_PER_SPLIT key blocks."""
    most_rows, block_n = next(tiles for widest, tiles in DECODE_TILES if head_dim <= widest)
    if fp32 and head_dim > 64:
        block_n //= 2
    rows = group_size * n_queries
    block_m = max(16, min(most_rows, next_power_of_2(rows)))
    row_blocks = ceil_div(rows, block_m)
    key_blocks = max(1, ceil_div(n_keys, block_n))
    programs = batch * kv_heads * row_blocks
    wanted = ceil_div(PROGRAMS_PER_PROCESSOR * processors, programs)
    splits = max(1, min(MAX_DECODE_SPLITS, wanted, key_blocks // MIN_BLOCKS_PER_SPLIT))
    keys_per_split = ceil_div(key_blocks, splits) * block_n
    return DecodePlan(block_m, row_blocks, block_n, ceil_div(max(n_keys, 1), keys_per_split), keys_per_split)


@triton.jit
def _packed_scores(q, k, heads, queries, offs_n, rows_valid, mask_base, mask_strides, S, qk_scale, mask_scale,
                   causal_offset, MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr):
    """Scores [BLOCK_M, BLOCK_N] of packed rows (query head heads[r], query queries[r])
    against keys offs_n, in the kernel's units; -inf where masked or past S."""
    s = dot(q, tl.trans(k)) * qk_scale
    in_bounds = rows_valid[:, None] & (offs_n < S)[None, :]
    if MASK_KIND != MASK_NONE:
        mask_ptrs = (mask_base + (heads * mask_strides[1] + queries.to(tl.int64) * mask_strides[2])[:, None]
                     + offs_n.to(tl.int64)[None, :] * mask_strides[3])
        if MASK_KIND == MASK_FLOAT:
            s += tl.load(mask_ptrs, mask=in_bounds, other=0.0).to(tl.float32) * mask_scale
        else:
            s = tl.where(tl.load(mask_ptrs, mask=in_bounds, other=0) != 0, s, float("-inf"))
    if CAUSAL:
        s = tl.where(causal_visible(queries, offs_n, causal_offset), s, float("-inf"))
    return tl.where(in_bounds, s, float("-inf"))


@triton.jit(do_not_specialize=["causal_offset"])
def attention_decode_split_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, lse_ptr,
    kv_heads, group_size, L, S, keys_per_split, splits, causal_offset,
    q_strides, k_strides, v_strides, mask_strides, out_strides, lse_strides,
    scale,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One split of the keys of one (batch, key/value head) for one block of its packed
    rows: each row's output normalised over these keys (0 where it sees none) and their
    logsumexp (natural log, -inf where none). Program id: ((batch * kv_heads + kv head)
    * row blocks + row block) * splits + split. Strides are (batch, head, row, column)
    for q, k, v and the mask; out_strides (batch, head, query, column, split) and
    lse_strides (batch, head, query, split) address the output and logsumexp, or their
    per-split partials (split strides 0 when unsplit)."""
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = score_units(scale, EXACT)
    rows = group_size * L
    row_blocks = tl.cdiv(rows, BLOCK_M)
    split = tl.program_id(0) % splits
    rest = tl.program_id(0) // splits
    row_block = rest % row_blocks
    bh_kv = rest // row_blocks
    b = (bh_kv // kv_heads).to(tl.int64)
    h_kv = (bh_kv % kv_heads).to(tl.int64)

    offs_r = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_valid = offs_r < rows
    heads = h_kv * group_size + (offs_r // L).to(tl.int64)  # query head of each packed row
    queries = offs_r % L
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_rows = q_ptr + b * q_strides[0] + heads * q_strides[1] + queries.to(tl.int64) * q_strides[2]
    q = tl.load(q_rows[:, None] + offs_d.to(tl.int64)[None, :] * q_strides[3],
                mask=rows_valid[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    k_base = k_ptr + b * k_strides[0] + h_kv * k_strides[1]
    v_base = v_ptr + b * v_strides[0] + h_kv * v_strides[1]
    mask_base = mask_ptr + b * mask_strides[0]

    lo = split * keys_per_split
    hi = tl.minimum(S, lo + keys_per_split)
    if CAUSAL:  # keys past the last query's diagonal are seen by no row
        hi = tl.minimum(hi, tl.maximum(L + causal_offset, 0))
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keys = offs_n < hi
        k = tl.load(k_base + offs_n.to(tl.int64)[:, None] * k_strides[2] + offs_d.to(tl.int64)[None, :] * k_strides[3],
                    mask=keys[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
        s = _packed_scores(q, k, heads, queries, offs_n, rows_valid, mask_base, mask_strides, hi, qk_scale,
                           mask_scale, causal_offset, MASK_KIND, CAUSAL)
        p, alpha, m_new, l_i = online_softmax_step(s, m_i, l_i, EXACT)
        v = tl.load(v_base + offs_n.to(tl.int64)[:, None] * v_strides[2]
                    + offs_dv.to(tl.int64)[None, :] * v_strides[3],
                    mask=keys[:, None] & (offs_dv < HEAD_DIM_V)[None, :], other=0.0)
        acc = acc * alpha[:, None] + dot(cast_rounded(p, v.dtype), v)
        m_i = m_new

    out, lse = normalised_rows(acc, m_i, l_i, EXACT)
    split_64 = split.to(tl.int64)
    out_rows = (out_ptr + b * out_strides[0] + heads * out_strides[1] + queries.to(tl.int64) * out_strides[2]
                + split_64 * out_strides[4])
    tl.store(out_rows[:, None] + offs_dv.to(tl.int64)[None, :] * out_strides[3],
             cast_rounded(out, out_ptr.dtype.element_ty),
             mask=rows_valid[:, None] & (offs_dv < HEAD_DIM_V)[None, :])
    tl.store(lse_ptr + b * lse_strides[0] + heads * lse_strides[1] + queries.to(tl.int64) * lse_strides[2]
             + split_64 * lse_strides[3], lse, mask=rows_valid)


@triton.jit
def attention_decode_combine_kernel(
    partial_out_ptr, partial_lse_ptr, out_ptr, lse_ptr, splits, out_strides,
    HEAD_DIM_V: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_SPLITS: tl.constexpr,
):
    """One row (program id: (batch * heads + head) * L + query) of the output from its
    splits' partials (contiguous [rows, splits, Ev] and [rows, splits]): lse = log sum
    exp(partial lse), out = sum exp(partial lse - lse) partial out; 0 and -inf for a
    row no split saw a key of. out_strides: the output's (row, column); the lse is
    contiguous [rows]."""
    row = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_SPLITS)
    offs_dv = tl.arange(0, BLOCK_DV)
    in_splits = offs_s < splits
    partial_lse = tl.load(partial_lse_ptr + row * splits + offs_s, mask=in_splits, other=float("-inf"))
    top = tl.max(partial_lse, axis=0)
    shift = tl.where(top == float("-inf"), 0.0, top)
    weights = exp_accurate(partial_lse - shift)  # 0 for the splits that saw no key
    total = tl.sum(weights, axis=0)
    partial_out = tl.load(partial_out_ptr + (row * splits + offs_s)[:, None] * HEAD_DIM_V + offs_dv[None, :],
                          mask=in_splits[:, None] & (offs_dv < HEAD_DIM_V)[None, :], other=0.0)
    out = tl.sum(partial_out * weights[:, None], axis=0) / tl.where(total == 0.0, 1.0, total)
    lse = tl.where(total == 0.0, float("-inf"), shift + tl.log(total))
    tl.store(out_ptr + row * out_strides[0] + offs_dv * out_strides[1], cast_rounded(out, out_ptr.dtype.element_ty),
             mask=offs_dv < HEAD_DIM_V)
    tl.store(lse_ptr + row, lse)


def attention_decode_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
    dropout_p: float, is_causal: bool, causal_offset: int, scale: float, seed: int,
    plan: Optional[DecodePlan] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_forward's contract for calls of at most DECODE_MAX_QUERIES queries and no
    dropout (the Impl's supports refuses the rest): out [B, Hq, L, Ev] in q's dtype,
    contiguous; lse [B, Hq, L] (lse_dtype). plan: a tiling to force (tests), else decode_plan's
    for the device."""
    if dropout_p > 0:
        raise ValueError("the decode kernels take no dropout (the forward kernel does)")
    B, Hq, L, E = q.shape
    Hkv, S, Ev = k.shape[1], k.shape[2], v.shape[3]
    if L > DECODE_MAX_QUERIES:
        raise ValueError(f"the decode kernels take at most {DECODE_MAX_QUERIES} queries a head, got {L}")
    out = torch.empty(B, Hq, L, Ev, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, Hq, L, dtype=lse_dtype(q.dtype), device=q.device)
    if B * Hq * L == 0 or S == 0 or Ev == 0:
        out.zero_()
        lse.fill_(float("-inf"))
        return out, lse
    group = Hq // Hkv
    p = plan or decode_plan(B, Hkv, group, L, S, max(E, Ev), multiprocessor_count(q.device),
                            fp32=q.dtype == torch.float32)
    mask_kind, mask_arg, mask_strides = mask_operand(mask, (B, Hq, L, S), q)
    common = dict(HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=head_block(E), BLOCK_DV=head_block(Ev), MASK_KIND=mask_kind,
                  CAUSAL=bool(is_causal), BLOCK_M=p.block_m, BLOCK_N=p.block_n)
    grid = (B * Hkv * p.row_blocks * p.splits,)
    if p.splits == 1:
        attention_decode_split_kernel[grid](
            q, k, v, mask_arg, out, lse, Hkv, group, L, S, p.keys_per_split, 1, int(causal_offset),
            q.stride(), k.stride(), v.stride(), mask_strides, (*out.stride(), 0), (*lse.stride(), 0), float(scale),
            **common)
        return out, lse
    partial_out = torch.empty(B, Hq, L, p.splits, Ev, dtype=torch.float32, device=q.device)
    partial_lse = torch.empty(B, Hq, L, p.splits, dtype=lse_dtype(q.dtype), device=q.device)
    po, pl = partial_out.stride(), partial_lse.stride()
    attention_decode_split_kernel[grid](
        q, k, v, mask_arg, partial_out, partial_lse, Hkv, group, L, S, p.keys_per_split, p.splits,
        int(causal_offset), q.stride(), k.stride(), v.stride(), mask_strides,
        (po[0], po[1], po[2], po[4], po[3]), pl, float(scale), **common)
    attention_decode_combine_kernel[(B * Hq * L,)](
        partial_out, partial_lse, out, lse, p.splits, (out.stride(2), out.stride(3)),
        HEAD_DIM_V=Ev, BLOCK_DV=head_block(Ev), BLOCK_SPLITS=max(2, next_power_of_2(p.splits)))
    return out, lse
