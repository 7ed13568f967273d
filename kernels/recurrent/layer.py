"""One direction of one LSTM layer over a whole (padded or packed) sequence, on the fused
step kernels: the forward through time and the backward through time, with the weight
gradients as one batched product over blocks of steps (the schedule of steps and that
product: kernels/packed_steps.py)."""
from __future__ import annotations

from typing import Optional

import torch


from ..packed_steps import final_rows, previous_rows, schedule, summed_over_rows
from .step import StepState, lstm_step_backward, lstm_step_forward


def lstm_layer_forward(
    xw: torch.Tensor, batch_sizes: list[int], h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
    w_hr: Optional[torch.Tensor], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """One direction of one LSTM layer over a packed sequence.

    xw [N, 4H]: the input projection of every row, biases included; batch_sizes [T]
    (non-increasing, summing to N); h0 [B, P], c0 [B, H]; w_hh [4H, P]; w_hr [P, H] or
    None (P = H). Returns out [N, P], h_n [B, P], c_n [B, H] and, for the backward, the
    gate activations [N, 4H] and cell states [N, H] (fp32), and h before the projection
    [N, H] (None without one).
    """
    N, H = xw.shape[0], xw.shape[1] // 4
    B, P = h0.shape
    out = torch.empty(N, P, dtype=xw.dtype, device=xw.device)
    cells = torch.empty(N, H, dtype=torch.float32, device=xw.device)
    gates = torch.empty(N, 4 * H, dtype=torch.float32, device=xw.device)
    h_raw = torch.empty(N, H, dtype=xw.dtype, device=xw.device) if w_hr is not None else None
    steps = schedule(batch_sizes, reverse)
    for step in steps:
        now = slice(step.offset, step.offset + step.rows)
        before = slice(step.prev, step.prev + step.n_carried)
        h_state = StepState(out[before] if step.prev >= 0 else None, h0, step.n_carried)
        c_state = StepState(cells[before] if step.prev >= 0 else None, c0, step.n_carried)
        lstm_step_forward(h_state, c_state, w_hh, step.rows, h_raw[now] if w_hr is not None else out[now],
                          cells[now], gates[now], xw=xw[now])
        if w_hr is not None:
            torch.mm(h_raw[now], w_hr.t(), out=out[now])
    if N == 0:
        return out, h0.clone(), c0.clone(), gates, cells, h_raw
    final = final_rows(steps, B).to(xw.device)
    return out, out[final], cells[final].to(c0.dtype), gates, cells, h_raw


def lstm_layer_backward(
    d_out: Optional[torch.Tensor], d_h_n: Optional[torch.Tensor], d_c_n: Optional[torch.Tensor],
    out: torch.Tensor, gates: torch.Tensor, cells: torch.Tensor, h_raw: Optional[torch.Tensor],
    h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor, w_hr: Optional[torch.Tensor],
    batch_sizes: list[int], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Backward through time of lstm_layer_forward: one fused step backward per step (in
    reverse processing order), then the weight gradients as one batched product over
    blocks of steps (summed_over_rows). Returns d_xw [N, 4H], d_h0, d_c0, d_w_hh and
    d_w_hr (None without a projection)."""
    N, H = gates.shape[0], gates.shape[1] // 4
    B, P = h0.shape
    device = gates.device
    fp32 = dict(dtype=torch.float32, device=device)
    dgates = torch.empty(N, 4 * H, **fp32)
    d_h0, d_c0 = torch.zeros(B, P, **fp32), torch.zeros(B, H, **fp32)
    final_h = (d_h_n if d_h_n is not None else torch.zeros(B, P, **fp32)).float()
    final_c = (d_c_n if d_c_n is not None else torch.zeros(B, H, **fp32)).float()
    # Ping-pong buffers for the gradients one step hands to the step it continues from.
    carry_h = [torch.zeros(B, P, **fp32), torch.zeros(B, P, **fp32)]
    carry_c = [torch.zeros(B, H, **fp32), torch.zeros(B, H, **fp32)]
    d_total = torch.empty(N, P, **fp32) if w_hr is not None else None
    steps = schedule(batch_sizes, reverse)
    for k, step in enumerate(reversed(steps)):
        now = slice(step.offset, step.offset + step.rows)
        incoming, outgoing = k % 2, 1 - k % 2
        h_carry = StepState(carry_h[incoming] if step.n_next else None, final_h, step.n_next)
        c_carry = StepState(carry_c[incoming] if step.n_next else None, final_c, step.n_next)
        before = slice(step.prev, step.prev + step.n_carried)
        c_state = StepState(cells[before] if step.prev >= 0 else None, c0, step.n_carried)
        dh = d_out[now] if d_out is not None else None
        if w_hr is not None:
            reaching = torch.cat([carry_h[incoming][:step.n_next], final_h[step.n_next:step.rows]])
            d_total[now] = reaching if dh is None else reaching + dh
            dh, h_carry = d_total[now].to(w_hr.dtype) @ w_hr, None
        lstm_step_backward(dh, h_carry, c_carry, gates[now], cells[now], c_state, w_hh, step.rows, dgates[now],
                           StepState(carry_c[outgoing], d_c0, step.n_carried),
                           StepState(carry_h[outgoing], d_h0, step.n_carried))
    h_prev = torch.cat([out, h0])[previous_rows(steps, N).to(device)] if N else out
    d_w_hh = summed_over_rows(dgates.to(w_hh.dtype), h_prev.to(w_hh.dtype)) if N else torch.zeros_like(w_hh)
    d_w_hr = None
    if w_hr is not None:
        d_w_hr = summed_over_rows(d_total.to(w_hr.dtype), h_raw) if N else torch.zeros_like(w_hr)
    return dgates.to(out.dtype), d_h0.to(h0.dtype), d_c0.to(c0.dtype), d_w_hh, d_w_hr
