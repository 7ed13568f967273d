"""Softmax backward kernels, dx = scale * y * (dy - sum(dy * y)), and their launcher."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import cast_rounded
from ..layout import softmax_row_operands
from .rows import Plan, plan, row_offsets, row_operand_bytes, rows_need_int64


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
    dot = tl.sum(y * dy, axis=1)
    dx = scale * y * (dy - dot[:, None])
    if CAUSAL:
        dx = tl.where(cols[None, :] <= (rows % causal_rows)[:, None], dx, 0.0)
    if HAS_MASK:
        mask_offs = row_offsets(rows, rows_b, rows_c, mask_strides)[:, None] + cols[None, :] * mask_strides[3]
        dx = tl.where(tl.load(mask_ptr + mask_offs, mask=in_bounds, other=0) != 0, dx, 0.0)
    dx_offs = row_offsets(rows, rows_b, rows_c, dx_strides)[:, None] + cols[None, :] * dx_strides[3]
    tl.store(dx_ptr + dx_offs, cast_rounded(dx, dx_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def softmax_backward_online_kernel(
    dy_ptr, y_ptr, mask_ptr, dx_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    dy_strides, y_strides, mask_strides, dx_strides,
    scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dx = scale * y * (dy - sum(dy * y)), 0 where masked, over long rows, one row at a
    time in two sweeps, every num_programs-th row a program (the grid bounded as the
    forward's); strides as in softmax_backward_kernel."""
    for row in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        y_row = y_ptr + row_offsets(row, rows_b, rows_c, y_strides)
        dy_row = dy_ptr + row_offsets(row, rows_b, rows_c, dy_strides)
        m_row = mask_ptr + row_offsets(row, rows_b, rows_c, mask_strides)
        dx_row = dx_ptr + row_offsets(row, rows_b, rows_c, dx_strides)
        lane_dot = tl.zeros([BLOCK_N], tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
            in_bounds = cols < n_cols
            y = tl.load(y_row + cols * y_strides[3], mask=in_bounds, other=0.0).to(tl.float32)
            dy = tl.load(dy_row + cols * dy_strides[3], mask=in_bounds, other=0.0).to(tl.float32)
            lane_dot += y * dy
        dot = tl.sum(lane_dot, axis=0)
        for start in range(0, n_cols, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
            in_bounds = cols < n_cols
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
                       y.device)
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
    else:
        softmax_backward_online_kernel[p.grid(layout.n_rows)](*args, **flags)
    return dx
