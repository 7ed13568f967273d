"""A single LSTM cell step (torch.lstm_cell) on the fused step kernels, forward and
backward, taking and returning plain tensors."""
from __future__ import annotations

from typing import Optional

import torch

from ..packed_steps import cell_gate_products
from .step import StepState, bias_grad_blocks, lstm_step_backward, lstm_step_forward


def lstm_cell_forward(
    input: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor], b_hh: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input [B, I], h0, c0 [B, H], w_ih [4H, I], w_hh [4H, H], biases [4H] or None (any
    strides). Returns h1, c1 [B, H] in input's dtype and the gate activations [B, 4H]
    (fp32), which the backward needs."""
    B, H = c0.shape
    h1 = torch.empty(B, H, dtype=input.dtype, device=input.device)
    c1 = torch.empty(B, H, dtype=input.dtype, device=input.device)
    gates = torch.empty(B, 4 * H, dtype=torch.float32, device=input.device)
    lstm_step_forward(StepState(None, h0, 0), StepState(None, c0, 0), w_hh, B, h1, c1, gates,
                      x=input, w_ih=w_ih, b_ih=b_ih, b_hh=b_hh)
    return h1, c1, gates


def lstm_cell_backward(
    d_h1: Optional[torch.Tensor], d_c1: Optional[torch.Tensor], input: torch.Tensor, h0: torch.Tensor,
    c0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, c1: torch.Tensor, gates: torch.Tensor, has_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Gradients of lstm_cell_forward: d_input, d_h0, d_c0, d_w_ih, d_w_hh and d_bias (the
    same for b_ih and b_hh; None without biases). The gate gradients and dgates @ W_hh come
    from one kernel, which also sums dgates per block of rows."""
    B, H = c0.shape
    fp32 = dict(dtype=torch.float32, device=input.device)
    dgates = torch.empty(B, 4 * H, **fp32)
    d_h0, d_c0 = torch.zeros(B, H, **fp32), torch.zeros(B, H, **fp32)
    dbias = torch.zeros(bias_grad_blocks(B, H, H), 4 * H, **fp32) if has_bias else None
    dc_carry = StepState(None, d_c1, 0) if d_c1 is not None else None
    lstm_step_backward(d_h1, None, dc_carry, gates, c1, StepState(None, c0, 0), w_hh, B, dgates,
                       StepState(None, d_c0, 0), StepState(None, d_h0, 0), dbias)
    d_bias = dbias.sum(0).to(w_ih.dtype) if has_bias else None
    d_input, d_w_ih, d_w_hh = cell_gate_products(dgates, dgates, input, h0, w_ih, w_hh)
    return d_input, d_h0.to(h0.dtype), d_c0.to(c0.dtype), d_w_ih, d_w_hh, d_bias
