"""The steps of a packed (or padded) sequence as a recurrent layer processes them, in
either direction, and the index arithmetic, weight-gradient sums and per-mode bindings
that every layer implementation over them shares: the Triton step and sequence launchers
here, and the CUDA C++ cell and sequence kernels' (seqops/backends/cuda_recurrent.py,
cuda_sequence.py). Pure torch: imports no triton, as layout.py."""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

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


# Fp32 values per hidden unit the GRU and RNN kernels save for their backward, and gate
# gradients they write: the GRU's r, z, n, hn and (dr, dz, dn, dn * r); the RNNs' one.
SAVED_PER_UNIT = {"gru": 4, "rnn_tanh": 1, "rnn_relu": 1}


def cell_gate_products(d_input_side: torch.Tensor, d_hidden_side: torch.Tensor, input: torch.Tensor,
                       h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A cell's d_input = d_input_side @ W_ih, d_w_ih = d_input_side^T input and d_w_hh =
    d_hidden_side^T h0 from its fp32 gate gradients. The weight gradients are taken in
    fp32 (upcasting the rows of input and h0, not the weights) and rounded once: rounding
    the gate gradients to fp16 or bf16 first and the product again errs by up to two
    roundings (at seed 996583703 a one-unit fp16 LSTM cell's d weight_ih came out 2.5x
    torch's error so). d_input stays a product in the weights' dtype, as torch's is: an
    fp32 one would copy W_ih to fp32 on every call. fp32 cells compute as before."""
    d_input = d_input_side.to(w_ih.dtype) @ w_ih
    return (d_input, (d_input_side.t() @ input.float()).to(w_ih.dtype),
            (d_hidden_side.t() @ h0.float()).to(w_hh.dtype))


def split_gate_gradients(dgates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The GRU's dgates [rows, 4H] (dr, dz, dn, dn * r) -> the input side's [rows, 3H] (dr,
    dz, dn) and the recurrent side's [rows, 3H] (dr, dz, dn * r)."""
    H = dgates.shape[1] // 4
    return dgates[:, :3 * H], torch.cat([dgates[:, :2 * H], dgates[:, 3 * H:]], dim=1)


def recurrent_weight_gradients(
    mode: str, dgates: torch.Tensor, out: torch.Tensor, h0: torch.Tensor, steps: list[Step], w_hh: torch.Tensor,
    has_b_hh: bool,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """What follows a GRU or RNN layer's gate gradients dgates [N, S*H] (fp32, every step's,
    from any of the step or sequence kernels): d_xw [N, G*H] (out's dtype, contiguous),
    d_w_hh as one product over blocks of steps (summed_over_rows) with each row's previous
    h (out of the step continued from, or h0, by `steps`), and d_b_hh (None unless
    has_b_hh). The GRU's input and recurrent sides differ (split_gate_gradients)."""
    N = out.shape[0]
    if mode == "gru":
        d_xw, d_hidden = split_gate_gradients(dgates)
    else:
        d_xw = d_hidden = dgates
    h_prev = torch.cat([out, h0.to(out.dtype)])[previous_rows(steps, N).to(out.device)] if N else out
    d_w_hh = summed_over_rows(d_hidden.to(w_hh.dtype), h_prev.to(w_hh.dtype)) if N else torch.zeros_like(w_hh)
    d_b_hh = d_hidden.sum(0).to(w_hh.dtype) if has_b_hh else None
    # The GRU's input side is a view into dgates: a fresh, contiguous d_xw, as the op's fake kernel promises.
    return d_xw.to(out.dtype).contiguous(), d_w_hh, d_b_hh


def layer_backward_around(
    mode: str, d_h_n: Optional[torch.Tensor], out: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
    batch_sizes: list[int], reverse: bool, has_b_hh: bool, gate_gradients: Callable,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """A GRU or RNN layer's backward around the launch that writes every step's gate
    gradients: allocates dgates [N, S*H] and d_h0 [B, H] (fp32, d_h0 zeroed), calls
    gate_gradients(dgates, d_h0, schedule, steps) (schedule: schedule_tensors' four int32
    tensors) unless there is nothing to compute (no rows or no units: then d_h0 is d_h_n),
    and returns d_xw, d_h0 (h0's dtype), d_w_hh and d_b_hh (recurrent_weight_gradients)."""
    N, H = out.shape[0], w_hh.shape[1]
    fp32 = dict(dtype=torch.float32, device=out.device)
    dgates = torch.empty(N, SAVED_PER_UNIT[mode] * H, **fp32)
    d_h0 = torch.zeros(h0.shape[0], H, **fp32)
    if N and H:
        tensors, steps = schedule_tensors(batch_sizes, reverse, out.device)
        gate_gradients(dgates, d_h0, tensors, steps)
    else:
        steps = schedule(batch_sizes, reverse)
        if d_h_n is not None:
            d_h0 += d_h_n
    d_xw, d_w_hh, d_b_hh = recurrent_weight_gradients(mode, dgates, out, h0, steps, w_hh, has_b_hh)
    return d_xw, d_h0.to(h0.dtype), d_w_hh, d_b_hh


def bound_to_mode(mode: str, forward: Callable, backward: Callable, kind: str) -> tuple[Callable, Callable]:
    """forward and backward of one GRU/RNN mode's layer (`kind`: "layer", a launch a step, or
    "sequence", a launch a layer), `mode` bound: the signatures the layer op calls
    (seqops/ops/recurrent/hidden_layer_op.py), named <mode>_<kind>_forward/backward."""

    def bound_forward(xw, batch_sizes, h0, w_hh, b_hh, reverse):
        return forward(mode, xw, batch_sizes, h0, w_hh, b_hh, reverse)

    def bound_backward(d_out, d_h_n, out, saved, h0, w_hh, batch_sizes, reverse, has_b_hh):
        return backward(mode, d_out, d_h_n, out, saved, h0, w_hh, batch_sizes, reverse, has_b_hh)

    for bound, original, direction in ((bound_forward, forward, "forward"), (bound_backward, backward, "backward")):
        bound.__name__ = bound.__qualname__ = f"{mode}_{kind}_{direction}"
        bound.__doc__ = f"{original.__name__} for {mode}."
    return bound_forward, bound_backward
