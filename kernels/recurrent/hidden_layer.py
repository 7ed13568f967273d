"""One direction of one GRU or RNN layer (cells with one state) over a whole (padded or
packed) sequence on the fused step kernels: the forward through time, one launch a step,
and the backward through time, one launch a step, with the recurrent weight gradient as
one batched product over blocks of steps (packed_steps.summed_over_rows). The schedule of steps
is the LSTM layer's (packed_steps.schedule)."""
from __future__ import annotations

from typing import Optional

import torch

from ..packed_steps import SAVED_PER_UNIT, bound_to_mode, final_rows, recurrent_weight_gradients, schedule
from .gru_cell import gru_step_backward, gru_step_forward
from .rnn_cell import rnn_step_backward, rnn_step_forward
from .step import StepState



def hidden_layer_forward(
    mode: str, xw: torch.Tensor, batch_sizes: list[int], h0: torch.Tensor, w_hh: torch.Tensor,
    b_hh: Optional[torch.Tensor], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One direction of one layer, mode "gru", "rnn_tanh" or "rnn_relu", over a packed
    sequence: xw [N, G*H] the input projection of every row (b_ih included),
    batch_sizes [T] (non-increasing, summing to N), h0 [B, H], w_hh [G*H, H], b_hh [G*H]
    or None, added to the recurrent product (the GRU's n part is gated by r, so it
    cannot join xw; the RNNs' could, but b_ih + b_hh rounded once would be one error
    shared by every step).
    Returns out [N, H], h_n [B, H] and saved [N, S*H] (fp32) for the backward."""
    N, H = xw.shape[0], w_hh.shape[1]
    B = h0.shape[0]
    out = torch.empty(N, H, dtype=xw.dtype, device=xw.device)
    saved = torch.empty(N, SAVED_PER_UNIT[mode] * H, dtype=torch.float32, device=xw.device)
    steps = schedule(batch_sizes, reverse)
    for step in steps:
        now = slice(step.offset, step.offset + step.rows)
        h_state = StepState(out[step.prev:step.prev + step.n_carried] if step.prev >= 0 else None, h0, step.n_carried)
        if mode == "gru":
            gru_step_forward(h_state, w_hh, step.rows, out[now], saved[now], xw=xw[now], b_hh=b_hh)
        else:
            rnn_step_forward(h_state, w_hh, step.rows, out[now], saved[now], mode == "rnn_relu", xw=xw[now],
                             b_hh=b_hh)
    if N == 0:
        return out, h0.clone(), saved
    return out, out[final_rows(steps, B).to(xw.device)], saved


def hidden_layer_backward(
    mode: str, d_out: Optional[torch.Tensor], d_h_n: Optional[torch.Tensor], out: torch.Tensor, saved: torch.Tensor,
    h0: torch.Tensor, w_hh: torch.Tensor, batch_sizes: list[int], reverse: bool, has_b_hh: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Backward through time of hidden_layer_forward: one fused step backward per step
    (in reverse processing order), then the recurrent weight gradient over all steps.
    Returns d_xw [N, G*H], d_h0 [B, H], d_w_hh [G*H, H] and d_b_hh (None unless
    has_b_hh)."""
    N, H = out.shape[0], w_hh.shape[1]
    B = h0.shape[0]
    device = out.device
    fp32 = dict(dtype=torch.float32, device=device)
    dgates = torch.empty(N, saved.shape[1], **fp32)
    d_h0 = torch.zeros(B, H, **fp32)
    final = (d_h_n if d_h_n is not None else torch.zeros(B, H, **fp32)).float()
    # Ping-pong buffers for the gradient one step hands to the step it continues from.
    carry = [torch.zeros(B, H, **fp32), torch.zeros(B, H, **fp32)]
    steps = schedule(batch_sizes, reverse)
    for k, step in enumerate(reversed(steps)):
        now = slice(step.offset, step.offset + step.rows)
        incoming, outgoing = k % 2, 1 - k % 2
        h_carry = StepState(carry[incoming] if step.n_next else None, final, step.n_next)
        dh_state = StepState(carry[outgoing], d_h0, step.n_carried)
        dh = d_out[now] if d_out is not None else None
        if mode == "gru":
            h_state = StepState(out[step.prev:step.prev + step.n_carried] if step.prev >= 0 else None, h0,
                                step.n_carried)
            gru_step_backward(dh, h_carry, h_state, saved[now], w_hh, step.rows, dgates[now], dh_state)
        else:
            rnn_step_backward(dh, h_carry, saved[now], w_hh, step.rows, dgates[now], dh_state, mode == "rnn_relu")
    d_xw, d_w_hh, d_b_hh = recurrent_weight_gradients(mode, dgates, out, h0, steps, w_hh, has_b_hh)
    return d_xw, d_h0.to(h0.dtype), d_w_hh, d_b_hh


gru_layer_forward, gru_layer_backward = bound_to_mode("gru", hidden_layer_forward, hidden_layer_backward, "layer")
rnn_tanh_layer_forward, rnn_tanh_layer_backward = bound_to_mode("rnn_tanh", hidden_layer_forward,
                                                                hidden_layer_backward, "layer")
rnn_relu_layer_forward, rnn_relu_layer_backward = bound_to_mode("rnn_relu", hidden_layer_forward,
                                                                hidden_layer_backward, "layer")
