"""Softmax backward kernels, dx = scale * y * (dy - sum(dy * y)) (one pass over whole rows;
two sweeps over long rows, split into parts swept side by side past what one program per
row can keep in L2, as the forward's) and their launcher."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import arrive_and_wait, cast_rounded
from ..layout import softmax_row_operands
from .rows import (MAX_SPLITS, Plan, part_columns, plan, row_offsets, row_operand_bytes, rows_need_int64,
                   split_max_spins, split_part)


@triton.jit
def softmax_backward_kernel(
    dy_ptr, y_ptr, mask_ptr, dx_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    dy_strides, y_strides, mask_strides, dx_strides,
    scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    INT64_ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dx = scale * y * (dy - sum(dy * y)) over each row, 0 where masked; BLOCK_M whole
    rows a program. Masked entries get exactly 0 even in a row that is NaN because all of
    it is masked: the output does not depend on them (torch's masked_fill backward).
    Each *_strides is its tensor's (a, b, c, column) strides (layout.RowLayout)."""
    # Row indices in int32 unless this launch's pass 2**31 - 1 (rows_need_int64).
    first_block = tl.program_id(0)
    if INT64_ROWS:
        first_block = first_block.to(tl.int64)
    rows = first_block * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N).to(tl.int64)
    in_bounds = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    y_offs = row_offsets(rows, rows_b, rows_c, y_strides)[:, None] + cols[None, :] * y_strides[3]
    dy_offs = row_offsets(rows, rows_b, rows_c, dy_strides)[:, None] + cols[None, :] * dy_strides[3]
    y = tl.load(y_ptr + y_offs, mask=in_bounds, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + dy_offs, mask=in_bounds, other=0.0).to(tl.float32)
    # sum(dy * y) in fp64 from exact products (24-bit by 24-bit significands fit fp64's 53),
    # rounded once to fp32. Summed in fp32, a row whose mass sits on a few entries lost 1-2
    # ulps of a dot near 1 to the adds, and dx's error is that one rounding times y: a
    # split row's gradient came out at 6.6x torch's error (seed 1307215825), whose own
    # fp32 sum can as well (400 rows of 1005: torch's worst 3.7e-7, fp64's 8.4e-8). The
    # kernels are memory-bound; two conversions and a DFMA an element cost little there.
    dot = tl.sum(y.to(tl.float64) * dy.to(tl.float64), axis=1).to(tl.float32)
    dx = scale * y * (dy - dot[:, None])
    if CAUSAL:
        dx = tl.where(cols[None, :] <= (rows % causal_rows)[:, None], dx, 0.0)
    if HAS_MASK:
        mask_offs = row_offsets(rows, rows_b, rows_c, mask_strides)[:, None] + cols[None, :] * mask_strides[3]
        dx = tl.where(tl.load(mask_ptr + mask_offs, mask=in_bounds, other=0) != 0, dx, 0.0)
    dx_offs = row_offsets(rows, rows_b, rows_c, dx_strides)[:, None] + cols[None, :] * dx_strides[3]
    tl.store(dx_ptr + dx_offs, cast_rounded(dx, dx_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def _sweep_dot(dy_row, y_row, lo, hi, dy_col_stride, y_col_stride, BLOCK_N: tl.constexpr):
    """sum(dy * y) over the columns in [lo, hi) of a row (0 where empty), in fp64 (the
    one-pass kernel's reason): a running sum a lane, reduced across lanes once at the end.
    Steps of BLOCK_N / 2 columns: the fp64 lanes take the registers fp32 ones of BLOCK_N
    did (at BLOCK_N, ptxas held 16-bit launches at 64 registers and spilled 8 bytes on
    sm_90, or took 128). Masked columns need no mask here: y is 0 there."""
    LANES: tl.constexpr = BLOCK_N // 2
    lane_dot = tl.zeros([LANES], tl.float64)
    for start in range(lo, hi, LANES):
        cols = start + tl.arange(0, LANES).to(tl.int64)
        in_bounds = cols < hi
        y = tl.load(y_row + cols * y_col_stride, mask=in_bounds, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + cols * dy_col_stride, mask=in_bounds, other=0.0).to(tl.float32)
        lane_dot += y.to(tl.float64) * dy.to(tl.float64)
    return tl.sum(lane_dot, axis=0)


@triton.jit
def softmax_backward_online_kernel(
    dy_ptr, y_ptr, mask_ptr, dx_ptr, partials_ptr, arrivals_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    dy_strides, y_strides, mask_strides, dx_strides,
    scale, splits, chunk, max_spins,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, SPLIT: tl.constexpr, BLOCK_SPLITS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dx = scale * y * (dy - sum(dy * y)), 0 where masked, over long rows in two sweeps;
    strides as in softmax_backward_kernel.

    Unsplit: one row at a time, every num_programs-th row a program (the grid bounded as
    the forward's). SPLIT (rows.split_rows, as the forward): each row in `splits` parts of
    `chunk` columns, program p sweeping part p % splits of every (num_programs / splits)-th
    row: its first sweep's sum(dy * y) goes to partials[row, part] (fp64) and the row's
    arrival counter; once every part has arrived, each adds up the parts' sums, else
    (max_spins polls in vain) it sweeps the whole row for the sum itself. The second sweep
    writes the part's columns."""
    part, first, step = split_part(splits, SPLIT)
    for row in tl.range(first, n_rows, step):
        y_row = y_ptr + row_offsets(row, rows_b, rows_c, y_strides)
        dy_row = dy_ptr + row_offsets(row, rows_b, rows_c, dy_strides)
        m_row = mask_ptr + row_offsets(row, rows_b, rows_c, mask_strides)
        dx_row = dx_ptr + row_offsets(row, rows_b, rows_c, dx_strides)
        lo, hi = part_columns(part, chunk, n_cols, SPLIT)
        if SPLIT:
            slots = partials_ptr + tl.cast(row, tl.int64) * splits
            tl.store(slots + part, _sweep_dot(dy_row, y_row, lo, hi, dy_strides[3], y_strides[3], BLOCK_N))
            all_arrived = arrive_and_wait(arrivals_ptr + row, splits, max_spins) >= splits
            # The parts' sums when all arrived (read through L2, ".cg": other programs
            # wrote them), else a sweep of the whole row; each way the other term is 0.
            parts = tl.arange(0, BLOCK_SPLITS)
            dots = tl.load(slots + parts, mask=(parts < splits) & all_arrived, other=0.0, cache_modifier=".cg")
            dot = tl.sum(dots, axis=0) + _sweep_dot(dy_row, y_row, 0, tl.where(all_arrived, 0, n_cols),
                                                    dy_strides[3], y_strides[3], BLOCK_N)
        else:
            dot = _sweep_dot(dy_row, y_row, 0, n_cols, dy_strides[3], y_strides[3], BLOCK_N)
        dot = dot.to(tl.float32)
        for start in range(lo, hi, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
            in_bounds = cols < hi
            y = tl.load(y_row + cols * y_strides[3], mask=in_bounds, other=0.0).to(tl.float32)
            dy = tl.load(dy_row + cols * dy_strides[3], mask=in_bounds, other=0.0).to(tl.float32)
            dx = scale * y * (dy - dot)
            if CAUSAL:
                dx = tl.where(cols <= row % causal_rows, dx, 0.0)
            if HAS_MASK:
                dx = tl.where(tl.load(m_row + cols * mask_strides[3], mask=in_bounds, other=0) != 0, dx, 0.0)
            tl.store(dx_row + cols * dx_strides[3], cast_rounded(dx, dx_ptr.dtype.element_ty), mask=in_bounds)


def softmax_backward(
    grad_y: torch.Tensor,
    y: torch.Tensor,
    mask: Optional[torch.Tensor],
    dim: int,
    scale: float,
    causal: bool,
    in_dtype: torch.dtype,
    tiling: Optional[Plan] = None,
) -> torch.Tensor:
    """Gradient w.r.t. x of y = softmax(scale * x) along `dim` (masked as the forward was).

    grad_y, y: same shape, any strides; mask, causal: as given to the forward;
    tiling: as for softmax_forward. Returns a contiguous tensor in `in_dtype`.
    """
    dx = torch.empty(y.shape, dtype=in_dtype, device=y.device)
    if dx.numel() == 0:
        return dx
    (dy_rows, y_rows, dx_rows), mask_rows, causal_rows, layout = softmax_row_operands(
        [grad_y, y, dx], mask, causal, dim, target=2
    )
    causal, causal_rows = causal_rows > 0, max(causal_rows, 1)  # 1 (unused without causal) compiles as a constant
    p = tiling or plan(layout.n_rows, layout.n_cols, layout.n_cols * row_operand_bytes([grad_y, y, dx], mask_rows),
                       y.device, tensors_held=2)
    no_mask_strides = (0, 0, 0, 0)
    args = (
        dy_rows, y_rows, y_rows if mask_rows is None else mask_rows, dx_rows,
        layout.n_rows, layout.n_cols, layout.rows_b, layout.rows_c, causal_rows,
        layout.strides[0], layout.strides[1], layout.strides[3] if mask_rows is not None else no_mask_strides,
        layout.strides[2],
        float(scale),
    )
    flags = dict(HAS_MASK=mask_rows is not None, CAUSAL=causal, BLOCK_N=p.block_n, num_warps=p.num_warps)
    if p.one_pass:
        softmax_backward_kernel[p.grid(layout.n_rows)](*args, INT64_ROWS=rows_need_int64(layout.n_rows, p.block_m),
                                                          BLOCK_M=p.block_m, **flags)
        return dx
    split = p.splits > 1
    # A split row's parts' sums and its arrival counter (rows.split_rows); an unsplit
    # launch never touches them and gets dx in their place.
    partials, arrivals = dx_rows, dx_rows
    if split:
        partials = torch.empty(layout.n_rows * p.splits, dtype=torch.float64, device=y.device)
        arrivals = torch.zeros(layout.n_rows, dtype=torch.int32, device=y.device)
    softmax_backward_online_kernel[p.grid(layout.n_rows)](
        *args[:4], partials, arrivals, *args[4:], p.splits, p.chunk, split_max_spins(),
        SPLIT=split, BLOCK_SPLITS=MAX_SPLITS, **flags)
    return dx
