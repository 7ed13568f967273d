"""How the softmax kernels see their tensors: rows (the softmax dim moved last, leading dims
collapsed, strides kept), how a launch tiles them, and the per-element helpers both
directions share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import cast_rounded, ceil_div, exp_accurate, next_power_of_2

# Longest row held on chip whole: 16 fp32 values a thread at 32 warps. Longer rows
# spill registers (benchmarks/static_report) and go online, on few enough programs that
# their second read of a row comes from L2 (online_programs).
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
    rows = tl.cast(rows, tl.int64)  # a tensor, or a loop counter (a Python int when interpreted)
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


# The share of the L2 cache the rows an online launch has in flight may fill: the rest is
# left to the lines of other data and to an eviction order that is not exactly LRU.
L2_SHARE = 0.5
# The least share of the multiprocessors a bounded online grid may keep busy. A guess, not
# a measurement: whether a quarter of the SMs, each sweeping its row 4096 elements a step,
# draw DRAM's full rate is for the GPU benchmark (rows of 16k-64k columns) to tell.
MIN_SM_SHARE = 0.25
# (L2 bytes, multiprocessors) assumed where no GPU can be asked: an H100's or H200's.
DEFAULT_GPU_SIZE = (50 * 2**20, 132)


@dataclass(frozen=True)
class Plan:
    """How a launch tiles the rows: whole rows BLOCK_M at a time, or one row at a time in
    sweeps. max_programs (online only; None: no bound): at most this many programs, each
    taking every max_programs-th row, so that the rows in flight fit the L2 share
    (online_programs)."""

    one_pass: bool
    block_m: int
    block_n: int
    num_warps: int
    max_programs: Optional[int] = None

    def grid(self, n_rows: int) -> tuple[int]:
        programs = ceil_div(n_rows, self.block_m)
        return (programs if self.max_programs is None else min(programs, self.max_programs),)


def plan(n_rows: int, n_cols: int, row_bytes: int = 0, device: Optional[torch.device] = None) -> Plan:
    """Tiling for rows of n_cols, VALUES_PER_THREAD fp32 values a thread; for the online
    kernels, the grid online_programs gives rows of row_bytes (what a row's operands, read
    and written, take in all) on `device` (None: the defaults of a machine without one)."""
    if n_cols > MAX_ONE_PASS_COLS:
        return Plan(one_pass=False, block_m=1, block_n=ONLINE_BLOCK_N, num_warps=ONLINE_BLOCK_N // (32 * VALUES_PER_THREAD),
                    max_programs=online_programs(row_bytes, *gpu_size(device)))
    block_n = next_power_of_2(n_cols)
    block_m = min(next_power_of_2(n_rows), max(1, MIN_TILE_ELEMENTS // block_n))
    num_warps = min(32, max(4, block_m * block_n // (32 * VALUES_PER_THREAD)))
    return Plan(one_pass=True, block_m=block_m, block_n=block_n, num_warps=num_warps)


def online_programs(row_bytes: int, l2_bytes: int, multiprocessors: int) -> Optional[int]:
    """The bound on an online launch's grid: as many programs as keep every row in flight
    (its operands read and written) within L2_SHARE of the L2 cache, so that a row's second
    sweep re-reads what its first read from L2, not from device memory, whatever the other
    programs read meanwhile (one DRAM read of each element). None (a program a row, two
    DRAM reads) where that would leave fewer than MIN_SM_SHARE of the multiprocessors
    working: past that width a bound would starve the memory system more than the second
    read costs (at most 1.5x the bytes)."""
    programs = int(L2_SHARE * l2_bytes) // max(1, row_bytes)
    return programs if programs >= max(1, int(MIN_SM_SHARE * multiprocessors)) else None


def gpu_size(device: Optional[torch.device]) -> tuple[int, int]:
    """(L2 bytes, multiprocessors) of a GPU; DEFAULT_GPU_SIZE elsewhere (the interpreter,
    recorded launches), so that a launch is planned the same there."""
    if device is not None and device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return properties.L2_cache_size, properties.multi_processor_count
    return DEFAULT_GPU_SIZE


def row_operand_bytes(tensors: list, mask: Optional[torch.Tensor]) -> int:
    """Bytes a column of a row takes over the tensors a launch reads or writes and its
    mask (bool: one byte)."""
    return sum(t.element_size() for t in tensors) + (0 if mask is None else mask.element_size())


def rows_need_int64(n_rows: int, block_m: int) -> bool:
    """Whether the row indices of a one-pass launch (up to its last program's last lane,
    past n_rows) can pass 2**31 - 1, so that the kernel must count rows in int64
    (INT64_ROWS). Otherwise it counts them in int32: cheaper, above all the modulo that
    finds a causal row's query. Row offsets are int64 either way (row_offsets)."""
    return ceil_div(n_rows, block_m) * block_m - 1 > 2**31 - 1
