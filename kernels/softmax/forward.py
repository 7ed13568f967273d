"""Softmax forward kernels (one pass over whole rows; two online sweeps over long rows,
split into parts swept side by side past what one program per row can keep in L2) and
their launcher."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import arrive_and_wait, cast_rounded
from ..layout import softmax_row_operands
from .rows import (MAX_SPLITS, Plan, exp_for, load_input, part_columns, plan, row_offsets, row_operand_bytes,
                   rows_need_int64, split_max_spins, split_part)


@triton.jit
def softmax_forward_kernel(
    x_ptr, y_ptr, mask_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    x_strides, y_strides, mask_strides,
    scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    INT64_ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """y = softmax(scale * x) over each row, BLOCK_M whole rows a program. Each *_strides
    is its tensor's (a, b, c, column) strides (layout.RowLayout)."""
    # Row indices in int32 unless this launch's pass 2**31 - 1 (rows_need_int64).
    first_block = tl.program_id(0)
    if INT64_ROWS:
        first_block = first_block.to(tl.int64)
    rows = first_block * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N).to(tl.int64)
    in_bounds = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    keep = in_bounds
    if CAUSAL:
        # Row r is query r % causal_rows of its score matrix: it sees keys 0..query.
        keep = keep & (cols[None, :] <= (rows % causal_rows)[:, None])
    if HAS_MASK:
        mask_offs = row_offsets(rows, rows_b, rows_c, mask_strides)[:, None] + cols[None, :] * mask_strides[3]
        keep = keep & (tl.load(mask_ptr + mask_offs, mask=keep, other=0) != 0)
    x_offs = row_offsets(rows, rows_b, rows_c, x_strides)[:, None] + cols[None, :] * x_strides[3]
    x = load_input(x_ptr + x_offs, keep, y_ptr.dtype.element_ty)
    # Mask after scaling, as torch's masked_fill(scale * x) does. z - max is exact for
    # nearby values, however large (folding log2(e) into the scale would lose that).
    z = tl.where(keep, x * scale, float("-inf"))
    z_max = tl.max(z, axis=1)
    p = exp_for(z - z_max[:, None], y_ptr.dtype.element_ty)
    y = p / tl.sum(p, axis=1)[:, None]
    y_offs = row_offsets(rows, rows_b, rows_c, y_strides)[:, None] + cols[None, :] * y_strides[3]
    tl.store(y_ptr + y_offs, cast_rounded(y, y_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def _sweep_statistics(x_row, m_row, lo, hi, x_col_stride, m_col_stride, scale, out_dtype: tl.constexpr,
                      HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    """(max, sum of e**(z - max)) of z = scale * x over the kept columns in [lo, hi) of a
    row, in one sweep: a running max and sum per lane, merged at the end, so that no
    cross-lane reduction runs inside the loop. (-inf, 0) where none is kept."""
    lane_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
    lane_sum = tl.zeros([BLOCK_N], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        keep = cols < hi
        if HAS_MASK:
            keep = keep & (tl.load(m_row + cols * m_col_stride, mask=keep, other=0) != 0)
        x = load_input(x_row + cols * x_col_stride, keep, out_dtype)
        z = tl.where(keep, x * scale, float("-inf"))
        new_max = tl.maximum(lane_max, z)
        # While a lane has seen only -inf its max is -inf; subtract 0 instead so that
        # -inf - -inf does not turn its sum into NaN.
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        lane_sum = lane_sum * exp_for(lane_max - shift, out_dtype) + exp_for(z - shift, out_dtype)
        lane_max = new_max
    return _merged(lane_max, lane_sum, out_dtype)


@triton.jit
def _merged(maxes, sums, out_dtype: tl.constexpr):
    """(max, sum) of partial (max, sum) pairs, each sum taken relative to its own max."""
    row_max = tl.max(maxes, axis=0)
    shift = tl.where(row_max == float("-inf"), 0.0, row_max)
    return row_max, tl.sum(sums * exp_for(maxes - shift, out_dtype), axis=0)


@triton.jit
def softmax_forward_online_kernel(
    x_ptr, y_ptr, mask_ptr, partials_ptr, arrivals_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    x_strides, y_strides, mask_strides,
    scale, splits, chunk, max_spins,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, SPLIT: tl.constexpr, BLOCK_SPLITS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """y = softmax(scale * x) over long rows in two sweeps; strides as in
    softmax_forward_kernel.

    Unsplit: one row at a time, every num_programs-th row a program (rows.online_programs
    bounds the grid so that the second sweep reads from L2). SPLIT (rows.split_rows): each
    row in `splits` parts of `chunk` columns, program p sweeping part p % splits of every
    (num_programs / splits)-th row: its first sweep's (max, sum) goes to
    partials[row, part, 0:2] (fp32) and the row's arrival counter; once every part has
    arrived, each combines them, else (max_spins polls in vain) it sweeps the whole row
    for them itself. The second sweep writes the part's columns."""
    part, first, step = split_part(splits, SPLIT)
    # disable_licm: hoisted out of this loop, the lane predicates of the row reductions
    # outlive the sweeps and ptxas spills one of them in the 16-bit builds (static report).
    for row in tl.range(first, n_rows, step, disable_licm=True):
        x_row = x_ptr + row_offsets(row, rows_b, rows_c, x_strides)
        y_row = y_ptr + row_offsets(row, rows_b, rows_c, y_strides)
        m_row = mask_ptr + row_offsets(row, rows_b, rows_c, mask_strides)
        n_seen = n_cols
        if CAUSAL:
            n_seen = tl.minimum(n_cols, row % causal_rows + 1)
        lo, hi = part_columns(part, chunk, n_cols, SPLIT)
        if SPLIT:
            part_max, part_sum = _sweep_statistics(x_row, m_row, lo, tl.minimum(hi, n_seen), x_strides[3],
                                                   mask_strides[3], scale, y_ptr.dtype.element_ty, HAS_MASK, BLOCK_N)
            slots = partials_ptr + (tl.cast(row, tl.int64) * splits) * 2
            tl.store(slots + 2 * part, part_max)
            tl.store(slots + 2 * part + 1, part_sum)
            all_arrived = arrive_and_wait(arrivals_ptr + row, splits, max_spins) >= splits
            # The row's statistics from the parts' pairs when all arrived, else from a sweep
            # of the whole row; each way as a (max, sum) pair merged with the other's empty
            # one, (-inf, 0), which changes nothing: one code path, no branch.
            # The pairs were written by other programs: read through L2 (".cg"), past this
            # SM's L1, which is not coherent across SMs.
            parts = tl.arange(0, BLOCK_SPLITS)
            present = (parts < splits) & all_arrived
            maxes = tl.load(slots + 2 * parts, mask=present, other=float("-inf"), cache_modifier=".cg")
            sums = tl.load(slots + 2 * parts + 1, mask=present, other=0.0, cache_modifier=".cg")
            swept_max, swept_sum = _sweep_statistics(x_row, m_row, 0, tl.where(all_arrived, 0, n_seen), x_strides[3],
                                                     mask_strides[3], scale, y_ptr.dtype.element_ty, HAS_MASK, BLOCK_N)
            maxes = tl.where(parts == 0, tl.maximum(maxes, swept_max), maxes)
            sums = tl.where(parts == 0, sums + swept_sum, sums)
            row_max, row_sum = _merged(maxes, sums, y_ptr.dtype.element_ty)
        else:
            row_max, row_sum = _sweep_statistics(x_row, m_row, 0, n_seen, x_strides[3], mask_strides[3], scale,
                                                 y_ptr.dtype.element_ty, HAS_MASK, BLOCK_N)
        # Second sweep: write every column of [lo, hi), zeros where masked. A row with
        # nothing left unmasked has max -inf and gives NaN, as torch does.
        for start in range(lo, hi, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
            in_bounds = cols < hi
            keep = cols < n_seen
            if HAS_MASK:
                keep = keep & (tl.load(m_row + cols * mask_strides[3], mask=keep, other=0) != 0)
            x = load_input(x_row + cols * x_strides[3], keep, y_ptr.dtype.element_ty)
            z = tl.where(keep, x * scale, float("-inf"))
            y = exp_for(z - row_max, y_ptr.dtype.element_ty) / row_sum
            tl.store(y_row + cols * y_strides[3], cast_rounded(y, y_ptr.dtype.element_ty), mask=in_bounds)


def softmax_forward(
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    dim: int,
    scale: float,
    causal: bool,
    out_dtype: torch.dtype,
    tiling: Optional[Plan] = None,
) -> torch.Tensor:
    """softmax(scale * x) along `dim`, masked.

    x: any shape (0-d too); mask: bool, broadcastable to x, True = keep; causal masks
    keys j > query i in the last two dims of x; dim: 0 <= dim < max(x.dim(), 1);
    tiling: the Plan to launch with (default: `plan(...)` of the rows).
    Returns a contiguous tensor of x's shape in `out_dtype`.
    """
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if y.numel() == 0:
        return y
    (x_rows, y_rows), mask_rows, causal_rows, layout = softmax_row_operands([x, y], mask, causal, dim, target=1)
    causal, causal_rows = causal_rows > 0, max(causal_rows, 1)  # 1 (unused without causal) compiles as a constant
    p = tiling or plan(layout.n_rows, layout.n_cols, layout.n_cols * row_operand_bytes([x, y], mask_rows),
                       x.device)
    no_mask_strides = (0, 0, 0, 0)
    args = (
        x_rows, y_rows, x_rows if mask_rows is None else mask_rows,
        layout.n_rows, layout.n_cols, layout.rows_b, layout.rows_c, causal_rows,
        layout.strides[0], layout.strides[1], layout.strides[2] if mask_rows is not None else no_mask_strides,
        float(scale),
    )
    flags = dict(HAS_MASK=mask_rows is not None, CAUSAL=causal, BLOCK_N=p.block_n, num_warps=p.num_warps)
    if p.one_pass:
        softmax_forward_kernel[p.grid(layout.n_rows)](*args, INT64_ROWS=rows_need_int64(layout.n_rows, p.block_m),
                                                         BLOCK_M=p.block_m, **flags)
        return y
    split = p.splits > 1
    x_arg, y_arg, mask_arg = args[:3]
    # A split row's parts' (max, sum) pairs and its arrival counter (rows.split_rows); an
    # unsplit launch never touches them, so it gets y in their place, not an allocation
    # and a memset a call.
    partials, arrivals = y_arg, y_arg
    if split:
        partials = torch.empty(layout.n_rows * p.splits * 2, dtype=torch.float32, device=x.device)
        arrivals = torch.zeros(layout.n_rows, dtype=torch.int32, device=x.device)
    softmax_forward_online_kernel[p.grid(layout.n_rows)](
        x_arg, y_arg, mask_arg, partials, arrivals, *args[3:], p.splits, p.chunk, split_max_spins(),
        SPLIT=split, BLOCK_SPLITS=MAX_SPLITS, **flags)
    return y
