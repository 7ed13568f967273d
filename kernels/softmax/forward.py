"""Softmax forward kernels (one pass over whole rows; two online sweeps over long rows) and
their launcher."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import cast_rounded
from ..layout import softmax_row_operands
from .rows import Plan, exp_for, load_input, plan, row_offsets, row_operand_bytes, rows_need_int64


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
def softmax_forward_online_kernel(
    x_ptr, y_ptr, mask_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    x_strides, y_strides, mask_strides,
    scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """y = softmax(scale * x) over long rows, one row at a time in two sweeps, every
    num_programs-th row a program (rows.online_programs bounds the grid so that the
    second sweep reads from L2); strides as in softmax_forward_kernel."""
    # disable_licm: hoisted out of this loop, the lane predicates of the row reductions
    # outlive the sweeps and ptxas spills one of them in the 16-bit builds (static report).
    for row in tl.range(tl.program_id(0), n_rows, tl.num_programs(0), disable_licm=True):
        x_row = x_ptr + row_offsets(row, rows_b, rows_c, x_strides)
        y_row = y_ptr + row_offsets(row, rows_b, rows_c, y_strides)
        m_row = mask_ptr + row_offsets(row, rows_b, rows_c, mask_strides)
        n_seen = n_cols
        if CAUSAL:
            n_seen = tl.minimum(n_cols, row % causal_rows + 1)
        # First sweep: a running max and a running sum per lane, merged at the end, so
        # that no cross-lane reduction runs inside the loop.
        lane_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
        lane_sum = tl.zeros([BLOCK_N], tl.float32)
        for start in range(0, n_seen, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
            keep = cols < n_seen
            if HAS_MASK:
                keep = keep & (tl.load(m_row + cols * mask_strides[3], mask=keep, other=0) != 0)
            x = load_input(x_row + cols * x_strides[3], keep, y_ptr.dtype.element_ty)
            z = tl.where(keep, x * scale, float("-inf"))
            new_max = tl.maximum(lane_max, z)
            # While a lane has seen only -inf its max is -inf; subtract 0 instead so that
            # -inf - -inf does not turn its sum into NaN.
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            lane_sum = (lane_sum * exp_for(lane_max - shift, y_ptr.dtype.element_ty)
                        + exp_for(z - shift, y_ptr.dtype.element_ty))
            lane_max = new_max
        row_max = tl.max(lane_max, axis=0)
        row_shift = tl.where(row_max == float("-inf"), 0.0, row_max)
        row_sum = tl.sum(lane_sum * exp_for(lane_max - row_shift, y_ptr.dtype.element_ty), axis=0)
        # Second sweep: write every column, zeros where masked. A row with nothing left
        # unmasked has max -inf and gives NaN, as torch does.
        for start in range(0, n_cols, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
            in_bounds = cols < n_cols
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
    else:
        softmax_forward_online_kernel[p.grid(layout.n_rows)](*args, **flags)
    return y
