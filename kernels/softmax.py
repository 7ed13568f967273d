"""Fused softmax in Triton: forward and backward, any dim, scale, boolean mask and causal mask.

Two forms of each kernel:
- one pass, for rows that fit on chip (n_cols <= MAX_ONE_PASS_COLS): a tile of BLOCK_M
  whole rows is read once and written once;
- online, for longer rows: one program per row, a first sweep keeps a running max and a
  running sum rescaled as the max grows (the online softmax), a second sweep writes. Two
  reads and one write per element forward; the backward reads y and dy twice.

Everything accumulates in fp32; inputs and outputs are fp32, fp16 or bf16, and the output
dtype may differ from the input's (the `dtype=` cast of torch.softmax, fused). Offsets are
64-bit. Rows are indexed through seqops.kernels.layout, so strided and broadcast inputs
are read in place; the softmax dim need not be the last or contiguous.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from seqops.masks import causal_keep

from .layout import RowLayout, row_layout_copying
from .runtime import cast_rounded, exp_accurate

# Longest row held on chip whole: 16 fp32 values a thread at 32 warps. Longer rows
# spill registers (tests/compile_triton_kernels.py) and go online; their second read of
# a row read moments before mostly hits L2.
MAX_ONE_PASS_COLS = 16384
# fp32 values a thread holds per row tile in the one-pass kernels.
VALUES_PER_THREAD = 16
# Columns per sweep step of the online kernels.
ONLINE_BLOCK_N = 4096
# Elements a one-pass program handles at least: short rows are batched BLOCK_M to a program.
MIN_TILE_ELEMENTS = 2048

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _row_offsets(rows, rows_b, rows_c, stride_a, stride_b, stride_c):
    """64-bit offsets of the first element of each row; see layout.RowLayout."""
    rows = rows.to(tl.int64)
    c = rows % rows_c
    rest = rows // rows_c
    return (rest // rows_b) * stride_a + (rest % rows_b) * stride_b + c * stride_c


@triton.jit
def _exp(d, out_dtype: tl.constexpr):
    """e**d for d <= 0, as accurately as an output of out_dtype needs: exp2(d * log2 e)
    (one instruction) loses |d| * 2**-24 in the product, hidden by fp16/bf16 rounding
    but not by fp32's, which gets the accurate exp."""
    if out_dtype == tl.float32:
        return exp_accurate(d)
    return tl.exp2(d * LOG2E)


@triton.jit
def _load_input(pointers, keep, out_dtype: tl.constexpr):
    """Input entries as fp32, 0 where not kept. An input of another dtype than the output
    is rounded to the output dtype first: torch.softmax(x, dtype=d) casts x, then computes."""
    x = tl.load(pointers, mask=keep, other=0.0)
    if x.dtype != out_dtype:
        x = cast_rounded(x.to(tl.float32), out_dtype)
    return x.to(tl.float32)


@triton.jit
def softmax_forward_kernel(
    x_ptr, y_ptr, mask_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    x_sa, x_sb, x_sc, x_sn,
    y_sa, y_sb, y_sc, y_sn,
    m_sa, m_sb, m_sc, m_sn,
    scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """y = softmax(scale * x) over each row, BLOCK_M whole rows a program."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N).to(tl.int64)
    in_bounds = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    keep = in_bounds
    if CAUSAL:
        # Row r is query r % causal_rows of its score matrix: it sees keys 0..query.
        keep = keep & (cols[None, :] <= (rows % causal_rows)[:, None])
    if HAS_MASK:
        mask_offs = _row_offsets(rows, rows_b, rows_c, m_sa, m_sb, m_sc)[:, None] + cols[None, :] * m_sn
        keep = keep & (tl.load(mask_ptr + mask_offs, mask=keep, other=0) != 0)
    x_offs = _row_offsets(rows, rows_b, rows_c, x_sa, x_sb, x_sc)[:, None] + cols[None, :] * x_sn
    x = _load_input(x_ptr + x_offs, keep, y_ptr.dtype.element_ty)
    # Mask after scaling, as torch's masked_fill(scale * x) does. z - max is exact for
    # nearby values, however large (folding log2(e) into the scale would lose that).
    z = tl.where(keep, x * scale, float("-inf"))
    z_max = tl.max(z, axis=1)
    p = _exp(z - z_max[:, None], y_ptr.dtype.element_ty)
    y = p / tl.sum(p, axis=1)[:, None]
    y_offs = _row_offsets(rows, rows_b, rows_c, y_sa, y_sb, y_sc)[:, None] + cols[None, :] * y_sn
    tl.store(y_ptr + y_offs, cast_rounded(y, y_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def softmax_forward_online_kernel(
    x_ptr, y_ptr, mask_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    x_sa, x_sb, x_sc, x_sn,
    y_sa, y_sb, y_sc, y_sn,
    m_sa, m_sb, m_sc, m_sn,
    scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """y = softmax(scale * x) over one long row a program, in two sweeps."""
    row = tl.program_id(0)
    x_row = x_ptr + _row_offsets(row, rows_b, rows_c, x_sa, x_sb, x_sc)
    y_row = y_ptr + _row_offsets(row, rows_b, rows_c, y_sa, y_sb, y_sc)
    m_row = mask_ptr + _row_offsets(row, rows_b, rows_c, m_sa, m_sb, m_sc)
    n_seen = n_cols
    if CAUSAL:
        n_seen = tl.minimum(n_cols, row % causal_rows + 1)
    # First sweep: a running max and a running sum per lane, merged at the end, so that
    # no cross-lane reduction runs inside the loop.
    lane_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
    lane_sum = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, n_seen, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        keep = cols < n_seen
        if HAS_MASK:
            keep = keep & (tl.load(m_row + cols * m_sn, mask=keep, other=0) != 0)
        x = _load_input(x_row + cols * x_sn, keep, y_ptr.dtype.element_ty)
        z = tl.where(keep, x * scale, float("-inf"))
        new_max = tl.maximum(lane_max, z)
        # While a lane has seen only -inf its max is -inf; subtract 0 instead so that
        # -inf - -inf does not turn its sum into NaN.
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        lane_sum = lane_sum * _exp(lane_max - shift, y_ptr.dtype.element_ty) + _exp(z - shift, y_ptr.dtype.element_ty)
        lane_max = new_max
    row_max = tl.max(lane_max, axis=0)
    row_shift = tl.where(row_max == float("-inf"), 0.0, row_max)
    row_sum = tl.sum(lane_sum * _exp(lane_max - row_shift, y_ptr.dtype.element_ty), axis=0)
    # Second sweep: write every column, zeros where masked. A row with nothing left
    # unmasked has max -inf and gives NaN, as torch does.
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        in_bounds = cols < n_cols
        keep = cols < n_seen
        if HAS_MASK:
            keep = keep & (tl.load(m_row + cols * m_sn, mask=keep, other=0) != 0)
        x = _load_input(x_row + cols * x_sn, keep, y_ptr.dtype.element_ty)
        z = tl.where(keep, x * scale, float("-inf"))
        y = _exp(z - row_max, y_ptr.dtype.element_ty) / row_sum
        tl.store(y_row + cols * y_sn, cast_rounded(y, y_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def softmax_backward_kernel(
    dy_ptr, y_ptr, mask_ptr, dx_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    dy_sa, dy_sb, dy_sc, dy_sn,
    y_sa, y_sb, y_sc, y_sn,
    m_sa, m_sb, m_sc, m_sn,
    dx_sa, dx_sb, dx_sc, dx_sn,
    scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dx = scale * y * (dy - sum(dy * y)) over each row, 0 where masked; BLOCK_M whole
    rows a program. Masked entries get exactly 0 even in a row that is NaN because all of
    it is masked: the output does not depend on them (torch's masked_fill backward)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N).to(tl.int64)
    in_bounds = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    y_offs = _row_offsets(rows, rows_b, rows_c, y_sa, y_sb, y_sc)[:, None] + cols[None, :] * y_sn
    dy_offs = _row_offsets(rows, rows_b, rows_c, dy_sa, dy_sb, dy_sc)[:, None] + cols[None, :] * dy_sn
    y = tl.load(y_ptr + y_offs, mask=in_bounds, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + dy_offs, mask=in_bounds, other=0.0).to(tl.float32)
    dot = tl.sum(y * dy, axis=1)
    dx = scale * y * (dy - dot[:, None])
    if CAUSAL:
        dx = tl.where(cols[None, :] <= (rows % causal_rows)[:, None], dx, 0.0)
    if HAS_MASK:
        mask_offs = _row_offsets(rows, rows_b, rows_c, m_sa, m_sb, m_sc)[:, None] + cols[None, :] * m_sn
        dx = tl.where(tl.load(mask_ptr + mask_offs, mask=in_bounds, other=0) != 0, dx, 0.0)
    dx_offs = _row_offsets(rows, rows_b, rows_c, dx_sa, dx_sb, dx_sc)[:, None] + cols[None, :] * dx_sn
    tl.store(dx_ptr + dx_offs, cast_rounded(dx, dx_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def softmax_backward_online_kernel(
    dy_ptr, y_ptr, mask_ptr, dx_ptr,
    n_rows, n_cols, rows_b, rows_c, causal_rows,
    dy_sa, dy_sb, dy_sc, dy_sn,
    y_sa, y_sb, y_sc, y_sn,
    m_sa, m_sb, m_sc, m_sn,
    dx_sa, dx_sb, dx_sc, dx_sn,
    scale,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dx = scale * y * (dy - sum(dy * y)), 0 where masked, over one long row a program."""
    row = tl.program_id(0)
    y_row = y_ptr + _row_offsets(row, rows_b, rows_c, y_sa, y_sb, y_sc)
    dy_row = dy_ptr + _row_offsets(row, rows_b, rows_c, dy_sa, dy_sb, dy_sc)
    m_row = mask_ptr + _row_offsets(row, rows_b, rows_c, m_sa, m_sb, m_sc)
    dx_row = dx_ptr + _row_offsets(row, rows_b, rows_c, dx_sa, dx_sb, dx_sc)
    lane_dot = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        in_bounds = cols < n_cols
        y = tl.load(y_row + cols * y_sn, mask=in_bounds, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + cols * dy_sn, mask=in_bounds, other=0.0).to(tl.float32)
        lane_dot += y * dy
    dot = tl.sum(lane_dot, axis=0)
    for start in range(0, n_cols, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N).to(tl.int64)
        in_bounds = cols < n_cols
        y = tl.load(y_row + cols * y_sn, mask=in_bounds, other=0.0).to(tl.float32)
        dy = tl.load(dy_row + cols * dy_sn, mask=in_bounds, other=0.0).to(tl.float32)
        dx = scale * y * (dy - dot)
        if CAUSAL:
            dx = tl.where(cols <= row % causal_rows, dx, 0.0)
        if HAS_MASK:
            dx = tl.where(tl.load(m_row + cols * m_sn, mask=in_bounds, other=0) != 0, dx, 0.0)
        tl.store(dx_row + cols * dx_sn, cast_rounded(dx, dx_ptr.dtype.element_ty), mask=in_bounds)


@dataclass(frozen=True)
class Plan:
    """How a launch tiles the rows: whole rows BLOCK_M at a time, or one row in sweeps."""

    one_pass: bool
    block_m: int
    block_n: int
    num_warps: int

    def grid(self, n_rows: int) -> tuple[int]:
        return (triton.cdiv(n_rows, self.block_m),)


def plan(n_rows: int, n_cols: int) -> Plan:
    """Tiling for rows of n_cols, VALUES_PER_THREAD fp32 values a thread."""
    if n_cols > MAX_ONE_PASS_COLS:
        return Plan(one_pass=False, block_m=1, block_n=ONLINE_BLOCK_N, num_warps=ONLINE_BLOCK_N // (32 * VALUES_PER_THREAD))
    block_n = triton.next_power_of_2(n_cols)
    block_m = min(triton.next_power_of_2(n_rows), max(1, MIN_TILE_ELEMENTS // block_n))
    num_warps = min(32, max(4, block_m * block_n // (32 * VALUES_PER_THREAD)))
    return Plan(one_pass=True, block_m=block_m, block_n=block_n, num_warps=num_warps)


def _moved_operands(
    tensors: list[torch.Tensor], mask: Optional[torch.Tensor], causal: bool, dim: int, target: int
) -> tuple[list[torch.Tensor], Optional[torch.Tensor], bool, int, RowLayout]:
    """The tensors (and the mask) with the softmax dim moved last, as a row kernel takes
    them, plus how causal reaches the kernel and the rows' layout.

    tensors: same shape, any strides; tensors[target] is the output. mask: bool,
    broadcastable to that shape. A causal mask along a dim other than the last becomes
    part of the mask (the kernels take the causal flag along the last dim only).
    Returns (tensors, mask as uint8 or None, causal, causal_rows, layout).
    """
    shape = tensors[0].shape
    if causal and dim != len(shape) - 1:
        keep = causal_keep(shape[-2], shape[-1], tensors[0].device)
        mask, causal = (keep if mask is None else mask & keep), False
    causal_rows = shape[-2] if causal else 1
    if mask is not None:
        mask = mask.view(torch.uint8).expand(shape)
    if len(shape) == 0:
        tensors = [t.reshape(1) for t in tensors]
        mask = None if mask is None else mask.reshape(1)
    operands = [t.movedim(dim, -1) for t in tensors]
    if mask is not None:
        operands.append(mask.movedim(dim, -1))
    operands, layout = row_layout_copying(operands, target)
    n = len(tensors)
    return operands[:n], (operands[n] if mask is not None else None), causal, causal_rows, layout


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
    (x_rows, y_rows), mask_rows, causal, causal_rows, layout = _moved_operands([x, y], mask, causal, dim, target=1)
    p = tiling or plan(layout.n_rows, layout.n_cols)
    no_mask_strides = (0, 0, 0, 0)
    args = (
        x_rows, y_rows, x_rows if mask_rows is None else mask_rows,
        layout.n_rows, layout.n_cols, layout.rows_b, layout.rows_c, causal_rows,
        *layout.strides[0], *layout.strides[1], *(layout.strides[2] if mask_rows is not None else no_mask_strides),
        float(scale),
    )
    flags = dict(HAS_MASK=mask_rows is not None, CAUSAL=causal, BLOCK_N=p.block_n, num_warps=p.num_warps)
    if p.one_pass:
        softmax_forward_kernel[p.grid(layout.n_rows)](*args, BLOCK_M=p.block_m, **flags)
    else:
        softmax_forward_online_kernel[p.grid(layout.n_rows)](*args, **flags)
    return y


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
    (dy_rows, y_rows, dx_rows), mask_rows, causal, causal_rows, layout = _moved_operands(
        [grad_y, y, dx], mask, causal, dim, target=2
    )
    p = tiling or plan(layout.n_rows, layout.n_cols)
    no_mask_strides = (0, 0, 0, 0)
    args = (
        dy_rows, y_rows, y_rows if mask_rows is None else mask_rows, dx_rows,
        layout.n_rows, layout.n_cols, layout.rows_b, layout.rows_c, causal_rows,
        *layout.strides[0], *layout.strides[1], *(layout.strides[3] if mask_rows is not None else no_mask_strides),
        *layout.strides[2],
        float(scale),
    )
    flags = dict(HAS_MASK=mask_rows is not None, CAUSAL=causal, BLOCK_N=p.block_n, num_warps=p.num_warps)
    if p.one_pass:
        softmax_backward_kernel[p.grid(layout.n_rows)](*args, BLOCK_M=p.block_m, **flags)
    else:
        softmax_backward_online_kernel[p.grid(layout.n_rows)](*args, **flags)
    return dx
