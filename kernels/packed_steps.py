"""The steps of a packed (or padded) sequence as a recurrent layer processes them, in
either direction, and the index arithmetic and weight-gradient sums that every layer
implementation over them shares: the Triton step and sequence launchers here, and the
CUDA C++ sequence kernels' (seqops/backends/cuda_sequence.py). Pure torch: imports no
triton, as layout.py."""
from __future__ import annotations

from typing import NamedTuple

import torch


class Step(NamedTuple):
    """One time step of a packed sequence, in the order a layer processes them."""

    offset: int      # its first row in the packed [N, ...] tensors
    rows: int        # its batch size
    prev: int        # first row of the step its state comes from (-1: none, all from the initial state)
    n_carried: int   # its rows whose state comes from that step (the rest start here)
    n_next: int      # its rows whose output the next processed step continues from


def schedule(batch_sizes: list[int], reverse: bool) -> list[Step]:
    """The steps of a sequence packed with `batch_sizes` (non-increasing), forwards or
    reversed. Forwards, a step continues every row from the step before; reversed, rows
    that end later start later, from the initial state."""
    offsets = [0]
    for size in batch_sizes[:-1]:
        offsets.append(offsets[-1] + size)
    order = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
    steps, previous = [], None
    for t in order:
        carried = 0 if previous is None else min(batch_sizes[previous], batch_sizes[t])
        steps.append(Step(offsets[t], batch_sizes[t], -1 if previous is None else offsets[previous], carried, 0))
        previous = t
    return [step._replace(n_next=following.n_carried) for step, following in zip(steps, steps[1:])] + steps[-1:]


def previous_rows(steps: list[Step], n_total: int) -> torch.Tensor:
    """For each packed row, the row of cat([out, h0]) holding its previous h."""
    index = torch.empty(n_total, dtype=torch.int64)
    for step in steps:
        rows = torch.arange(step.rows)
        index[step.offset:step.offset + step.rows] = torch.where(rows < step.n_carried, step.prev + rows, n_total + rows)
    return index


def final_rows(steps: list[Step], batch: int) -> torch.Tensor:
    """For each batch row, the packed row of its last processed step."""
    index = torch.empty(batch, dtype=torch.int64)
    for step in steps:
        index[:step.rows] = step.offset + torch.arange(step.rows)
    return index


# Rows per partial product of a weight gradient (summed_over_rows): few, so that a block's
# sum errs no more than the sums over one step's batch that torch's LSTM adds step by step.
WEIGHT_GRADIENT_BLOCK_ROWS = 16


def summed_over_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a^T @ b [M, K] for a [N, M], b [N, K] of one dtype: a weight gradient, a sum over
    the rows of every step.

    One GEMM over all N rows can add up all N products in one fp32 accumulator per entry,
    an error that grows with the length of the sequence (on the CPU, over 500 steps of 3
    rows, the input weights' gradient came out typically 1.8x, at worst 3x as far from
    float64 as torch's own LSTM's). Summed per block of rows, and the blocks' partial
    products then by torch.sum (pairwise), the error stays about that of one block. fp32
    only: fp16 and bf16 results are rounded far more coarsely than any fp32 sum errs. A
    block has at least K rows, so that the partial products take no more memory than
    `a`."""
    N, K = b.shape
    rows = max(WEIGHT_GRADIENT_BLOCK_ROWS, K)
    if a.dtype != torch.float32 or N <= rows:
        return a.t() @ b
    blocks = N // rows
    head = blocks * rows
    partials = torch.bmm(a[:head].reshape(blocks, rows, -1).transpose(1, 2), b[:head].reshape(blocks, rows, K))
    if head < N:
        partials = torch.cat([partials, (a[head:].t() @ b[head:]).unsqueeze(0)])
    return partials.sum(0)


def schedule_tensors(batch_sizes: list[int], reverse: bool, device: torch.device) -> tuple:
    """The steps in processing order as four int32 tensors [T] on `device`, for kernels
    that run every step of a layer in one launch: first row, rows, first row of the step
    continued from (-1: none), rows continued; and the steps. int32, not int64: with int64
    entries the Triton sequence kernels' 16-bit builds spill on sm_80 and sm_90 (the
    kernels widen them to int64 before any offset into a tensor)."""
    if sum(batch_sizes) >= 2**31:
        raise ValueError(f"the LSTM sequence kernels take packed sequences of fewer than 2**31 rows, got "
                         f"{sum(batch_sizes)}")
    steps = schedule(batch_sizes, reverse)
    table = torch.tensor([[s.offset, s.rows, s.prev, s.n_carried] for s in steps], dtype=torch.int32)
    return tuple(table.t().contiguous().to(device)), steps
