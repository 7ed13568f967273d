"""What the whole-sequence recurrent kernels share (the LSTM's, sequence.py, and the GRU's
and RNNs', hidden_sequence.py): how a layer's hidden units are split over programs, the
grid-wide barrier at which those programs meet after each step, and the loads of what
other programs wrote before it.

Each program owns slices of SLICE_UNITS hidden units. The state one step hands the next
(h forward, the gate gradients backward) is written by every program for its units; all
programs then meet at a grid-wide barrier before the next step reads it whole.

The grid barrier is an atomic counter, zeroed per launch, that every program adds 1 to
after each phase and spins on until it reaches (phases so far) x (programs): programs
must all be resident at once, so the grid is capped at the GPU's multiprocessor count
(one program per SM) and each program loops over ceil(slices / programs) slices. When a
program owns one slice and its W_hh tiles fit (Plan.on_chip), they are loaded once,
before the time loop, and stay on chip; otherwise they are read (from L2) per step.

Under TRITON_INTERPRET=1 programs run one after another, so a barrier could never be
passed by the first: there the grid is one program, which loops over every slice and
passes each barrier alone. THE MULTI-PROGRAM BARRIER PATH (grid > 1, the one a GPU takes
whenever H > SLICE_UNITS) HAS NEVER RUN ON A GPU: it is written to the PTX memory model (a
CTA barrier, then a release add by one thread; acquire reads while spinning; exchanged
values loaded ".cg", from L2, so that no stale L1 line serves them; no software
pipelining, whose cp.async copies go through L1; all seen in the sm_90 PTX) but untested.
Programs that are not all resident (a GPU whose multiprocessors are held by another
kernel, say) cannot meet at a barrier: a program gives up after max_spins() polls and
flags the counter, and the launcher raises (check_barriers) instead of hanging or
returning garbage.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..runtime import (INTERPRETED, RECORDED_MULTIPROCESSORS, arrive_and_wait, ceil_div, fp32_products_in_tf32,
                       multiprocessor_count, next_power_of_2)

@triton.jit
def load_exchanged(ptr, rows, cols, stride_row, stride_col, mask):
    """A tile another program wrote before the last barrier: cached in L2 only (".cg"), so
    that no stale line of this SM's L1, which is not coherent across SMs, serves it.
    (volatile=True compiles to a plain ld.global in triton 3.6: checked in the PTX.)"""
    return tl.load(ptr + rows[:, None] * stride_row + cols[None, :] * stride_col, mask=mask, other=0.0,
                   cache_modifier=".cg")


@triton.jit
def grid_barrier(counter_ptr, target, max_spins):
    """Wait until every program has finished the phase that brings the counter to
    `target` (phases so far x programs). The CTA barrier makes this program's stores
    precede its release add; the acquire reads make the others' stores visible here.

    A program that polls max_spins times in vain (the others are not all resident, so
    they never arrive) adds BARRIER_TIMED_OUT to the counter and goes on: every later
    wait then passes at once, the launch ends with garbage, and the launcher, seeing the
    flag, raises instead of returning it. A hang becomes an error."""
    if arrive_and_wait(counter_ptr, target, max_spins) < target:
        tl.atomic_add(counter_ptr, _TIMED_OUT_FLAG, sem="release")


@triton.jit
def schedule_entry(ptr, index, valid):
    """ptr[index] as int64 (0 when not `valid`): one field of one step of the schedule."""
    return tl.where(valid, tl.load(ptr + tl.where(valid, index, 0)), 0).to(tl.int64)


@triton.jit
def backward_phase(offsets_ptr, rows_ptr, prev_ptr, carried_ptr, T, phase):
    """What phase `phase` of a backward over T steps works on: it processes step T-1-phase
    (`cur`, while phase < T) and finishes step T-phase (`done`, the step the phase before
    processed, while phase > 0). Returns has_cur, cur's first row, rows, first row of the
    step it continues from and rows continued, done's first row and rows, and done's rows
    continued from cur (all 0 for a step that is not there)."""
    has_cur = phase < T
    has_done = phase > 0
    cur = T - 1 - phase
    done = T - phase
    return (has_cur, schedule_entry(offsets_ptr, cur, has_cur), schedule_entry(rows_ptr, cur, has_cur),
            schedule_entry(prev_ptr, cur, has_cur), schedule_entry(carried_ptr, cur, has_cur),
            schedule_entry(offsets_ptr, done, has_done), schedule_entry(rows_ptr, done, has_done),
            schedule_entry(carried_ptr, done, has_done))


class Plan(NamedTuple):
    """How a layer's launches split its hidden units: programs, units per slice, whether
    each program keeps its W_hh tile on chip, the reduction chunk, rows per block, warps."""

    programs: int
    block_h: int
    on_chip: bool
    block_k: int
    block_b: int
    warps: int


# Units per slice: 16, tl.dot's least N, so that as many programs as possible share H.
SLICE_UNITS = 16
# The largest H (padded to a power of two) whose four [H, SLICE_UNITS] W_hh tiles an LSTM
# program keeps on chip for the whole sequence, per dtype: through ptxas (4 warps, 16
# rows a block), these compile without spills on sm_80 and sm_90 (the static report); at
# 128 the bf16 backward spills 116 bytes on sm_90 and 176 on sm_80. With pipelining on,
# before NUM_STAGES, 256 took 192 KB of shared memory in the fp32 backward, more than an
# A100 has.
MAX_ON_CHIP_HIDDEN = {torch.float32: 128, torch.float16: 64, torch.bfloat16: 64}
# fp32 with TF32 products (runtime.fp32_products_in_tf32): W_hh's fp32 tiles in the tensor
# cores' operand layout spilled at 128 (56 bytes in the sm_80 forward, 80-232 in the
# backward); at 64 they compile clean, as 16-bit ones do.
MAX_ON_CHIP_HIDDEN_TF32 = 64
# The same limits for the GRU's three tiles and the RNNs' one (hidden_sequence.py), by
# cell: (per dtype, with TF32 products). The GRU's 16-bit backward spilled 28 bytes on
# sm_80 at 48 and 64 (76 at 128); the RNNs' kernels compile clean at 256 in every dtype
# and spill in the sm_80 TF32 backward at 512 (56 bytes).
ON_CHIP_LIMITS = {
    "lstm": (MAX_ON_CHIP_HIDDEN, MAX_ON_CHIP_HIDDEN_TF32),
    "gru": ({torch.float32: 128, torch.float16: 32, torch.bfloat16: 32}, 64),
    "rnn": ({torch.float32: 256, torch.float16: 256, torch.bfloat16: 256}, 256),
}
# No software pipelining: it turns the loads of exchanged tiles into cp.async copies,
# which drop their ".cg" (4-byte copies exist only as ".ca", through L1) and could serve a
# stale L1 line (seen in the sm_90 PTX with the default stages).
NUM_STAGES = 1
# Features of h (forward) or gate columns (backward) per chunk where W_hh is re-read per
# step: at 32, ptxas spilled 24 bytes in the fp32 forward on sm_90 (H = 768); 16 and 64
# compile without spills in every dtype on sm_80 and sm_90.
REREAD_CHUNK = 16
# What a program that timed out at a grid barrier adds to the counter: more than any
# target (2 phases a step x programs, checked by check_phases), so every later wait
# passes at once.
BARRIER_TIMED_OUT = 2**30
_TIMED_OUT_FLAG = tl.constexpr(BARRIER_TIMED_OUT)
GPU_MAX_SPINS = 1 << 24
INTERPRETED_MAX_SPINS = 64
def multiprocessors(device: torch.device) -> int:
    """How many programs can be resident at once: one per multiprocessor on a GPU (or
    RECORDED_MULTIPROCESSORS where launches are recorded without one); one under the
    interpreter, where programs run one after another."""
    if INTERPRETED:
        return 1
    return multiprocessor_count(device)


def max_on_chip_hidden(dtype: torch.dtype, cell: str = "lstm") -> int:
    """The largest hidden size whose W_hh slices stay on chip in the sequence kernels of
    `cell` ("lstm", "gru" or "rnn"), for weights of `dtype` and the fp32 products torch's
    matmul precision allows now."""
    per_dtype, tf32 = ON_CHIP_LIMITS[cell]
    return tf32 if fp32_products_in_tf32(dtype) else per_dtype[dtype]


def plan(H: int, dtype: torch.dtype, device: torch.device, projected: bool = False, cell: str = "lstm") -> Plan:
    """As many programs as slices, up to what can be resident at once; W_hh (of `dtype`)
    on chip when each program has one slice and H is within max_on_chip_hidden (else
    re-read, from L2 on a GPU, in chunks of REREAD_CHUNK features every step). A forward
    with a projection and TF32 products re-reads it too: on chip beside the projection's
    chunks it spilled 28 bytes on sm_90 (H = 64)."""
    slices = ceil_div(H, SLICE_UNITS)
    programs = min(slices, multiprocessors(device))
    padded = max(16, next_power_of_2(H))
    on_chip = (programs == slices and padded <= max_on_chip_hidden(dtype, cell)
               and not (projected and fp32_products_in_tf32(dtype)))
    return Plan(programs, SLICE_UNITS, on_chip, padded if on_chip else REREAD_CHUNK, 16, 4)


def max_spins() -> int:
    """Polls of the barrier counter before a program gives up on the others: seconds of
    polling on a GPU, where a barrier waits microseconds; few under the interpreter, where
    one program passes every barrier alone (only a test's forced grid can wait there)."""
    return INTERPRETED_MAX_SPINS if INTERPRETED else GPU_MAX_SPINS


def check_phases(steps: int, programs: int) -> None:
    """The counter's targets (at most 2 phases a step, and one more, x programs) stay
    below BARRIER_TIMED_OUT, in 32 bits."""
    if (2 * steps + 2) * programs >= BARRIER_TIMED_OUT:
        raise ValueError(f"the recurrent sequence kernels take fewer than {BARRIER_TIMED_OUT // (2 * programs) - 1} steps "
                         f"on {programs} programs, got {steps}")


def check_barriers(counter: torch.Tensor, kernel: str, programs: int) -> None:
    """Raise if a program of the launch that used `counter` timed out at a grid barrier
    (its results are garbage). Reads the counter back (a device sync), except while a
    CUDA graph is being captured, where nothing may be read."""
    if counter.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return
    if counter.item() >= BARRIER_TIMED_OUT:
        raise RuntimeError(
            f"{kernel}: a grid barrier timed out: its {programs} programs were not all resident on the GPU at once "
            f"(is another kernel holding multiprocessors?); no result was returned. "
            f"seqops.backend('triton', variant='step') runs the layer without grid barriers")
