"""Device-memory traffic of the Triton softmax forward and backward (kernels/softmax), by
row width: the bytes per element their plans read from DRAM and from L2, and how many
programs they run. The backward is planned as the forward, on its three operands.

One-pass launches (rows up to MAX_ONE_PASS_COLS) read each element once and write it
once. Online launches read each element twice, but run at most rows.online_programs
programs, each taking every n-th row, so that the rows in flight fill at most half of L2:
a row's second sweep re-reads what its first read moments before, with less than half of
L2 read or written by anyone in between, so it comes from L2 (modelled: exactly; an L2
that evicts far from LRU order would break it), up to the width where the bound would
leave fewer than a quarter of the SMs working. Wider rows are split into parts, a
program a part and one part per SM at once (rows.split_rows), each part's columns
swept twice with only the parts in flight (within half of L2) between: one read again,
up to rows that would need more parts than there are SMs (over 3.2M fp32 columns
forward, 2.2M backward), which run a program each and read twice. Not modelled: the
time. Where the bound leaves fewer programs than SMs, fewer SMs pull from DRAM, which
only a GPU can price; the table says where that starts."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Traffic:
    one_pass: bool
    programs: int  # at once (online: the bound; one pass: every block of rows)
    splits: int  # parts a row is split into (1: whole)
    dram_reads: float  # per element of the input
    l2_reads: float  # re-reads served by L2, per element
    writes: float


def forward_traffic(n_rows: int, n_cols: int, in_bytes: int, out_bytes: int) -> Traffic:
    """What the forward's plan for [n_rows, n_cols] (no mask) moves on the GPU the
    launchers assume without one (rows.DEFAULT_GPU_SIZE): x read, y written."""
    return _traffic(n_rows, n_cols, in_bytes + out_bytes)


def backward_traffic(n_rows: int, n_cols: int, in_bytes: int, out_bytes: int) -> Traffic:
    """The same for the backward: dy and y (out_bytes each) read, dx (in_bytes) written;
    reads per element of each tensor read."""
    return _traffic(n_rows, n_cols, 2 * out_bytes + in_bytes)


def _traffic(n_rows: int, n_cols: int, col_bytes: int) -> Traffic:
    """A launch's traffic from its plan, whose operands take col_bytes a column."""
    from seqops.kernels.softmax import rows

    plan = rows.plan(n_rows, n_cols, n_cols * col_bytes)
    (programs,) = plan.grid(n_rows)
    if plan.one_pass:
        return Traffic(True, programs, 1, 1.0, 0.0, 1.0)
    # A bounded grid, or split rows, keep what is in flight within the share by
    # construction, so every second read hits. Unbounded (a program a row), the rows in
    # flight outgrow L2 and a sweep through more than the cache evicts its own lines
    # before their re-read: modelled as no hit at all.
    swept = plan.chunk if plan.splits > 1 else n_cols  # columns a program sweeps twice
    fits = programs * swept * col_bytes <= rows.L2_SHARE * rows.DEFAULT_GPU_SIZE[0]
    return Traffic(False, programs, plan.splits, 1.0 if fits else 2.0, 1.0 if fits else 0.0, 1.0)
