"""How the softmax kernels see their tensors: rows (the softmax dim moved last, leading dims
collapsed, strides kept), how a launch tiles them, and the per-element helpers both
directions share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import INTERPRETED, cast_rounded, ceil_div, exp_accurate, next_power_of_2

# Longest row held on chip whole: 16 fp32 values a thread at 32 warps. Longer rows
# spill registers (benchmarks/static_report) and go online, on few enough programs that
# their second read of a row comes from L2 (online_programs), or, wider still, split
# into parts that programs sweep side by side (split_rows).
MAX_ONE_PASS_COLS = 16384
# fp32 values a thread holds of each tensor of a one-pass tile (the forward's x; the
# backward's y and dy: twice the warps, at most 32, so that each holds 8 where it can).
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



@triton.jit
def split_part(splits, SPLIT: tl.constexpr):
    """(part, first row, row step) of this program in an online launch: SPLIT
    (split_rows), part program % splits of every (programs / splits)-th row from
    program // splits; else the whole of every programs-th row from the program's own."""
    part = 0
    first = tl.program_id(0)
    step = tl.num_programs(0)
    if SPLIT:
        part = tl.program_id(0) % splits
        first = tl.program_id(0) // splits
        step = tl.num_programs(0) // splits
    return part, first, step


@triton.jit
def part_columns(part, chunk, n_cols, SPLIT: tl.constexpr):
    """[lo, hi): the columns of a row that part `part` of `chunk` columns covers (SPLIT),
    or all of them."""
    lo = 0
    hi = n_cols
    if SPLIT:
        lo = tl.minimum(tl.cast(part, tl.int64) * chunk, n_cols)
        hi = tl.minimum(lo + chunk, n_cols)
    return lo, hi


# The share of the L2 cache the rows an online launch has in flight may fill: the rest is
# left to the lines of other data and to an eviction order that is not exactly LRU.
L2_SHARE = 0.5
# The least share of the multiprocessors a bounded online grid may keep busy. A guess, not
# a measurement: whether a quarter of the SMs, each sweeping its row 4096 elements a step,
# draw DRAM's full rate is for the GPU benchmark (rows of 16k-64k columns) to tell.
MIN_SM_SHARE = 0.25
# (L2 bytes, multiprocessors) assumed where no GPU can be asked: an H100's or H200's.
DEFAULT_GPU_SIZE = (50 * 2**20, 132)
# Polls of a row's arrival counter before a part of a split row stops waiting for the
# others and reads the whole row itself (split_rows): a wait normally lasts one part's
# first sweep, microseconds; 2**14 polls of L2 is milliseconds. Under the interpreter,
# whose programs run one after another, the first parts of a row can never see the last
# arrive: they give up at once, so that CI runs both ways to the row's statistics.
SPLIT_MAX_SPINS = 1 << 14
INTERPRETED_SPLIT_MAX_SPINS = 1
# Most parts a row is split into: the parts' (max, sum) pairs are combined as one vector of
# this many lanes (a compile-time size, so one build serves every split).
MAX_SPLITS = 256


@dataclass(frozen=True)
class Plan:
    """How a launch tiles the rows: whole rows BLOCK_M at a time, or one row at a time in
    sweeps. max_programs (online only; None: no bound): at most this many programs, each
    taking every max_programs-th row, so that the rows in flight fit the L2 share
    (online_programs). splits > 1 (online only): each row in that many parts of `chunk`
    columns (a multiple of block_n), a program a part, max_programs a multiple of splits
    (split_rows)."""

    one_pass: bool
    block_m: int
    block_n: int
    num_warps: int
    max_programs: Optional[int] = None
    splits: int = 1
    chunk: int = 0

    def grid(self, n_rows: int) -> tuple[int]:
        programs = ceil_div(n_rows, self.block_m) * self.splits
        return (programs if self.max_programs is None else min(programs, self.max_programs),)


def plan(n_rows: int, n_cols: int, row_bytes: int = 0, device: Optional[torch.device] = None,
         tensors_held: int = 1) -> Plan:
    """Tiling for rows of n_cols, VALUES_PER_THREAD fp32 values a thread of each of the
    `tensors_held` tensors a one-pass tile keeps on chip (capped at 32 warps); for the online
    kernels, the grid online_programs gives rows of row_bytes (what a row's operands, read
    and written, take in all) on `device` (None: the defaults of a machine without one),
    or, past that bound, split_rows' parts (forward and backward split alike)."""
    if n_cols > MAX_ONE_PASS_COLS:
        warps = ONLINE_BLOCK_N // (32 * VALUES_PER_THREAD)
        size = gpu_size(device)
        bound = online_programs(row_bytes, *size)
        split = split_rows(n_cols, row_bytes // n_cols, *size) if bound is None else None
        if split is not None:
            splits, chunk, programs = split
            return Plan(one_pass=False, block_m=1, block_n=ONLINE_BLOCK_N, num_warps=warps, max_programs=programs,
                        splits=splits, chunk=chunk)
        return Plan(one_pass=False, block_m=1, block_n=ONLINE_BLOCK_N, num_warps=warps, max_programs=bound)
    block_n = next_power_of_2(n_cols)
    block_m = min(next_power_of_2(n_rows), max(1, MIN_TILE_ELEMENTS // block_n))
    num_warps = min(32, max(4, tensors_held * block_m * block_n // (32 * VALUES_PER_THREAD)))
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


def split_rows(n_cols: int, col_bytes: int, l2_bytes: int, multiprocessors: int) -> Optional[tuple[int, int, int]]:
    """(splits, chunk, programs) for rows too wide for online_programs' bound: each row in
    `splits` parts of `chunk` columns, a program a part, the parts of a row swept side by
    side. A part's first sweep finds its (max, sum), stored for the others; when all
    parts have arrived (an atomic counter a row), each combines them and sweeps its part
    again, which it read moments before: chunks are sized so that one per multiprocessor
    (`programs` at once, at most one a multiprocessor, so all are resident) fits L2_SHARE
    of L2, and the second sweep comes from L2. A part that waits in vain (the others not
    resident; the interpreter) reads the whole row for the statistics instead: slower,
    never wrong. None where not even ONLINE_BLOCK_N columns a multiprocessor fit the share,
    or a row would need more parts than there are multiprocessors (or MAX_SPLITS): there
    each program reads its row twice."""
    chunk = int(L2_SHARE * l2_bytes) // max(1, multiprocessors * col_bytes) // ONLINE_BLOCK_N * ONLINE_BLOCK_N
    if chunk == 0:
        return None
    splits = ceil_div(n_cols, chunk)
    if splits > min(multiprocessors, MAX_SPLITS):
        return None
    chunk = ceil_div(ceil_div(n_cols, splits), ONLINE_BLOCK_N) * ONLINE_BLOCK_N
    return splits, chunk, multiprocessors // splits * splits


def split_max_spins() -> int:
    return INTERPRETED_SPLIT_MAX_SPINS if INTERPRETED else SPLIT_MAX_SPINS


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
