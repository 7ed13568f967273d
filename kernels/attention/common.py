"""What every attention kernel shares: score units, masking, dropout, the recomputed
probabilities and score gradients of the backward, and the host-side operand helpers."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from ..masks import causal_visible
from ..runtime import dot, ensure_scratch_allocator, exp_accurate, next_power_of_2, tensor_descriptors_run
from .tuning import LONGEST_TILE_EDGE

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
def online_softmax_step(s, m_i, l_i, EXACT: tl.constexpr):
    """One key block of the online softmax: scores s [M, N] in the kernel's units, the
    rows' running max m_i and sum l_i. Returns (p, alpha, m_new, l_new): the block's
    probabilities unnormalised (relative to m_new), the factor alpha that rescales what
    was accumulated before it, and the updated max and sum."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # A row that has seen only -inf keeps max -inf; shift it by 0 so that its
    # probabilities are exp(-inf) = 0, not exp(-inf - -inf) = NaN.
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = exp_units(s - shift[:, None], EXACT)
    alpha = exp_units(m_i - shift, EXACT)
    return p, alpha, m_new, l_i * alpha + tl.sum(p, axis=1)


@triton.jit
def normalised_rows(acc, m_i, l_i, EXACT: tl.constexpr):
    """The end of the online softmax: (out, lse), out = acc / l_i (0 for a row that saw no
    key) and lse its logsumexp in natural log (-inf for such a row)."""
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    if EXACT:  # in float64: see lse_dtype
        lse = m_i.to(tl.float64) + tl.log(l_i.to(tl.float64))
    else:
        lse = (m_i + tl.log2(l_i)) * LN2
    return out, tl.where(empty, float("-inf"), lse)


@triton.jit
def query_block_of_program(n_heads, group_size, L, BLOCK_M: tl.constexpr):
    """The block of queries a program of a query-block grid (cdiv(L, BLOCK_M) * B * Hq
    programs) owns: (its first query, batch * n_heads + head, then as int64, so that the
    base offset of a (batch, head) slice never wraps: batch, query head, key/value head)."""
    n_blocks = tl.cdiv(L, BLOCK_M)
    start_m = (tl.program_id(0) % n_blocks) * BLOCK_M
    bh = tl.program_id(0) // n_blocks
    h = bh % n_heads
    return start_m, bh, (bh // n_heads).to(tl.int64), h.to(tl.int64), (h // group_size).to(tl.int64)


@triton.jit
def score_units(scale, EXACT: tl.constexpr):
    """(qk_scale, mask_scale): the factors taking q.k and a float mask to the kernel's
    units, natural for fp32 (EXACT) and log2 otherwise."""
    qk_scale = scale if EXACT else scale * LOG2E
    mask_scale = 1.0 if EXACT else LOG2E
    return qk_scale, mask_scale


@triton.jit
def head_slice(ptr, strides, batch, head):
    """Pointer to the (batch, head) slice of a 4-D tensor whose strides are the tuple
    (batch, head, row, column), as every attention kernel takes them; batch and head are
    int64, so that the offset of a slice never wraps."""
    return ptr + batch * strides[0] + head * strides[1]


@triton.jit
def tile_pointers(base, offs_rows, offs_cols, stride_row, stride_col, INT64_OFFSETS: tl.constexpr):
    """Pointers [rows, cols] to a tile of the (batch, head) slice that starts at `base`.
    Offsets are int32 (cheaper address arithmetic) unless the launcher found that one of
    this launch can pass 2**31 - 1 (needs_int64_offsets), then int64. The row and column
    terms go onto the pointer one at a time: adding their int32 sum instead made the
    forward spill registers (benchmarks/static_report)."""
    if INT64_OFFSETS:
        offs_rows = offs_rows.to(tl.int64)
        offs_cols = offs_cols.to(tl.int64)
    return base + offs_rows[:, None] * stride_row + offs_cols[None, :] * stride_col


@triton.jit
def scores(q, k, offs_m, offs_n, mask_base, mask_row_stride, mask_col_stride, L, S, qk_scale, mask_scale,
           causal_offset, MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, CHECK_KEYS: tl.constexpr,
           INT64_OFFSETS: tl.constexpr):
    """Scores [BLOCK_M, BLOCK_N] of queries q [BLOCK_M, D] against keys k [BLOCK_N, D], in
    the kernel's units, -inf where masked (by the mask, causality, or keys past S)."""
    s = dot(q, tl.trans(k)) * qk_scale
    if MASK_KIND != MASK_NONE:
        mask_ptrs = tile_pointers(mask_base, offs_m, offs_n, mask_row_stride, mask_col_stride, INT64_OFFSETS)
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
def dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p, INT64_OFFSETS: tl.constexpr):
    """bool [BLOCK_M, BLOCK_N]: the probabilities dropout keeps, the same in the forward
    and every backward kernel: Philox keyed by (seed + batch*head), counter query*S + key.
    tl.rand takes a 64-bit counter as its low and high words, the high word 0 below 2**32,
    so an int64 counter draws the same numbers as an int32 one wherever both are exact:
    launches that differ in INT64_OFFSETS still agree on the mask."""
    queries = offs_m.to(tl.int64) if INT64_OFFSETS else offs_m
    return tl.rand(seed + bh, queries[:, None] * S + offs_n[None, :]) >= dropout_p


@triton.jit
def load_rows(base, offs_rows, offs_cols, stride_row, stride_col, n_rows, n_cols, INT64_OFFSETS: tl.constexpr):
    """A [rows, cols] tile, zeros outside [n_rows, n_cols]."""
    return tl.load(tile_pointers(base, offs_rows, offs_cols, stride_row, stride_col, INT64_OFFSETS),
                   mask=(offs_rows < n_rows)[:, None] & (offs_cols < n_cols)[None, :], other=0.0)


@triton.jit
def row_source(ptr, strides, batch, head, n_rows, n_cols, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
               TENSOR_DESCRIPTORS: tl.constexpr):
    """What load_block reads [BLOCK_ROWS, BLOCK_COLS] tiles of the (batch, head) slice of a
    4-D tensor from (strides as head_slice takes them): with TENSOR_DESCRIPTORS, a tensor
    descriptor of the [n_rows, n_cols] slice (TMA loads on sm_90; the launcher checked the
    alignment they need, tensor_descriptors_fit), else the slice's pointer."""
    base = head_slice(ptr, strides, batch, head)
    # One return, of whichever value the constexpr branch made: the compiler rejects a
    # function whose return statements differ in type, the one not taken included.
    if TENSOR_DESCRIPTORS:
        source = tl.make_tensor_descriptor(base, shape=[n_rows, n_cols], strides=[strides[2], 1],
                                           block_shape=[BLOCK_ROWS, BLOCK_COLS])
    else:
        source = base
    return source


@triton.jit
def load_block(source, strides, start, offs_rows, offs_cols, n_rows, n_cols, INT64_OFFSETS: tl.constexpr,
               TENSOR_DESCRIPTORS: tl.constexpr):
    """The tile of rows offs_rows = start + arange and columns offs_cols = arange of a
    row_source (of a tensor with these strides), zeros outside [n_rows, n_cols]: one
    descriptor load, or masked loads."""
    if TENSOR_DESCRIPTORS:
        tile = source.load([start, 0])
    else:
        tile = load_rows(source, offs_rows, offs_cols, strides[2], strides[3], n_rows, n_cols, INT64_OFFSETS)
    return tile


@triton.jit
def grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, mask_row_stride, mask_col_stride, L, S,
                 qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
                 MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, CHECK_KEYS: tl.constexpr,
                 DROPOUT: tl.constexpr, EXACT: tl.constexpr, INT64_OFFSETS: tl.constexpr):
    """For one tile of queries x keys: P (after dropout, as the forward used it) and dS,
    the gradient w.r.t. the scores (and so w.r.t. a float mask), both [BLOCK_M, BLOCK_N]
    fp32. lse, delta: [BLOCK_M] (lse +inf for rows outside L, so their P is 0)."""
    s = scores(q, k, offs_m, offs_n, mask_base, mask_row_stride, mask_col_stride, L, S, qk_scale, mask_scale,
               causal_offset, MASK_KIND, CAUSAL, CHECK_KEYS, INT64_OFFSETS)
    # lse in the kernel's units; a row with every key masked (lse -inf) has P = 0.
    lse = tl.where(lse == float("-inf"), float("inf"), lse if EXACT else lse * LOG2E)
    if EXACT:  # s - lse in float64 (lse_dtype), then a small difference rounded to fp32 once
        p = exp_units((s.to(tl.float64) - lse[:, None]).to(tl.float32), EXACT)
    else:
        p = exp_units(s - lse[:, None], EXACT)
    dp = dot(do, tl.trans(v))
    if DROPOUT:
        keep = dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p, INT64_OFFSETS)
        p_used = tl.where(keep, p * (1.0 / (1.0 - dropout_p)), 0.0)
        dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
    else:
        p_used = p
    ds = p * (dp - delta[:, None])
    return p_used, ds


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the rows' logsumexp the forward saves for the backward: float64 for
    fp32 attention, fp32 otherwise. The backward recomputes P = exp(s - lse); an fp32 lse
    is rounded to the ulp of its own size (log S plus the row's max: a few units), an
    error every probability of the row then shares, which put fp32 dV at 1.5-2x torch's
    error (torch normalises by the sum, rounding each probability once). 16-bit P is
    rounded far more coarsely than that, so fp32 serves them."""
    return torch.float64 if dtype == torch.float32 else torch.float32


def head_block(dim: int) -> int:
    """BLOCK_D for a head dim: the next power of two, at least 16 (tl.dot's minimum)."""
    return max(16, next_power_of_2(dim))


def mask_operand(mask: Optional[torch.Tensor], shape: tuple, fallback: torch.Tensor):
    """(MASK_* kind, tensor to pass, its strides expanded to `shape` [B, Hq, L, S], a tuple)."""
    if mask is None:
        return 0, fallback, (0, 0, 0, 0)
    kind = 1 if mask.dtype == torch.bool else 2
    if kind == 1:
        mask = mask.view(torch.uint8)
    expanded = mask.expand(shape)
    return kind, expanded, expanded.stride()


# A tensor descriptor (TMA on sm_90) needs its base address and every stride but the
# last, in bytes, to be multiples of 16, and the last stride to be 1.
DESCRIPTOR_ALIGNMENT = 16


def tensor_descriptors_fit(operands: Sequence[torch.Tensor]) -> bool:
    """Whether every (batch, head) slice of each 4-D operand [B, H, rows, cols] can be read
    through a tensor descriptor: contiguous rows of at least DESCRIPTOR_ALIGNMENT bytes, a
    positive row stride (the descriptor's) and the slices' base addresses (the data pointer plus
    batch and head steps; a dim of extent 1 is never stepped along) in multiples of it."""
    for operand in operands:
        size = operand.element_size()
        rows_apart = operand.stride(2) * size
        batches_apart, heads_apart = (stride * size if extent > 1 else 0
                                      for extent, stride in zip(operand.shape[:2], operand.stride()[:2]))
        if (operand.stride(3) != 1 or operand.shape[3] * size < DESCRIPTOR_ALIGNMENT or rows_apart <= 0
                or any(n % DESCRIPTOR_ALIGNMENT for n in (operand.data_ptr(), rows_apart, batches_apart, heads_apart))):
            return False
    return True


def descriptor_loads(requested: Optional[bool], operands: Sequence[torch.Tensor]) -> bool:
    """Whether a launch reads `operands` through tensor descriptors: as `requested`, or
    where the device runs them and the operands fit (None); then with Triton's scratch
    allocator set, which descriptors built on the device need."""
    use = requested if requested is not None else (
        tensor_descriptors_run(operands[0].device) and tensor_descriptors_fit(operands))
    if use:
        ensure_scratch_allocator()
    return bool(use)


INT32_MAX = 2**31 - 1


def needs_int64_offsets(operands: Sequence[torch.Tensor], dropout_counters: Optional[tuple[int, int]]) -> bool:
    """Whether the element offsets a launch forms can pass 2**31 - 1, so that its kernels
    must compute them in int64 (INT64_OFFSETS). Base offsets of a (batch, head) slice are
    int64 always (one per program); this is about the per-element offsets inside a slice.

    operands: the 4-D tensors [B, H, rows, cols] the kernels index (strides as passed);
    dropout_counters: (L, S) when dropout draws a counter query * S + key, else None.
    Each length is padded by the longest tile edge: the lanes of a tile past a length
    form offsets too (their loads are masked, but their arithmetic must not wrap)."""
    pad = LONGEST_TILE_EDGE
    extents = []
    for operand in operands:
        rows, cols = operand.shape[2:]
        row_stride, col_stride = operand.stride()[2:]
        extents.append((rows + pad - 1) * row_stride + (cols + pad - 1) * col_stride)
    if dropout_counters is not None:
        L, S = dropout_counters
        extents.append((L + pad - 1) * S + S + pad - 1)
    return max(extents, default=0) > INT32_MAX
