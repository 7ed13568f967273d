"""How the softmax kernels see their tensors: rows (the softmax dim moved last, leading dims
collapsed, strides kept), how a launch tiles them, and the per-element helpers both
directions share."""
from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

from ..runtime import cast_rounded, ceil_div, exp_accurate, next_power_of_2

# Longest row held on chip whole: 16 fp32 values a thread at 32 warps. Longer rows
# spill registers (benchmarks/static_report) and go online; their second read of
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
def row_offsets(rows, rows_b, rows_c, strides):
    """64-bit offsets of the first element of each row of a tensor whose strides are the
    tuple (a, b, c, column); see layout.RowLayout."""
    rows = rows.to(tl.int64)
    c = rows % rows_c
    rest = rows // rows_c
    return (rest // rows_b) * strides[0] + (rest % rows_b) * strides[1] + c * strides[2]


@triton.jit
def exp_for(d, out_dtype: tl.constexpr):
    """e**d for d <= 0, as accurately as an output of out_dtype needs: exp2(d * log2 e)
    (one instruction) loses |d| * 2**-24 in the product, hidden by fp16/bf16 rounding
    but not by fp32's, which gets the accurate exp."""
    if out_dtype == tl.float32:
        return exp_accurate(d)
    return tl.exp2(d * LOG2E)


@triton.jit
def load_input(pointers, keep, out_dtype: tl.constexpr):
    """Input entries as fp32, 0 where not kept. An input of another dtype than the output
    is rounded to the output dtype first: torch.softmax(x, dtype=d) casts x, then computes."""
    x = tl.load(pointers, mask=keep, other=0.0)
    if x.dtype != out_dtype:
        x = cast_rounded(x.to(tl.float32), out_dtype)
    return x.to(tl.float32)


@dataclass(frozen=True)
class Plan:
    """How a launch tiles the rows: whole rows BLOCK_M at a time, or one row in sweeps."""

    one_pass: bool
    block_m: int
    block_n: int
    num_warps: int

    def grid(self, n_rows: int) -> tuple[int]:
        return (ceil_div(n_rows, self.block_m),)


def plan(n_rows: int, n_cols: int) -> Plan:
    """Tiling for rows of n_cols, VALUES_PER_THREAD fp32 values a thread."""
    if n_cols > MAX_ONE_PASS_COLS:
        return Plan(one_pass=False, block_m=1, block_n=ONLINE_BLOCK_N, num_warps=ONLINE_BLOCK_N // (32 * VALUES_PER_THREAD))
    block_n = next_power_of_2(n_cols)
    block_m = min(next_power_of_2(n_rows), max(1, MIN_TILE_ELEMENTS // block_n))
    num_warps = min(32, max(4, block_m * block_n // (32 * VALUES_PER_THREAD)))
    return Plan(one_pass=True, block_m=block_m, block_n=block_n, num_warps=num_warps)


def rows_need_int64(n_rows: int, block_m: int) -> bool:
    """Whether the row indices of a one-pass launch (up to its last program's last lane,
    past n_rows) can pass 2**31 - 1, so that the kernel must count rows in int64
    (INT64_ROWS). Otherwise it counts them in int32: cheaper, above all the modulo that
    finds a causal row's query. Row offsets are int64 either way (row_offsets)."""
    return ceil_div(n_rows, block_m) * block_m - 1 > 2**31 - 1
