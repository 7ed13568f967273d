"""The fused Elman RNN cell step in Triton (torch.rnn_tanh_cell, torch.rnn_relu_cell):
forward (both GEMMs, biases and the nonlinearity in one kernel) and backward (the
pre-activation gradient and its product with W_hh in one kernel).

One step, for x [B, I] and h [B, H]:  h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act tanh
or relu. The forward saves act's output in fp32 [B, H] (h' itself may be fp16 or bf16,
too coarse for tanh's derivative 1 - h'^2). Arithmetic is fp32; products accumulate in fp32.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import cast_rounded, ceil_div, dot, tanh_accurate
from .step import _backward_tiles, _forward_tiles, _load_tile


@triton.jit
def _accumulate(acc, a_ptr, w_ptr, rows, units, n_rows, H, K, a_sr, a_sc, w_sr, w_sc, BLOCK_K: tl.constexpr):
    """acc += a @ W[units, :]^T: a [rows, K], W [H, K]."""
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        a = _load_tile(a_ptr, rows, cols, a_sr, a_sc, n_rows, K)
        w = _load_tile(w_ptr, cols, units, w_sc, w_sr, K, H)  # W[u, k] at (k, u)
        acc += dot(a.to(w.dtype), w)
    return acc


@triton.jit
def rnn_cell_forward_kernel(
    x_ptr, h_ptr, w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr, h_out_ptr, saved_ptr,
    n_rows, H, I,
    x_sr, x_sc, h_sr, h_sc, w_ih_sr, w_ih_sc, w_hh_sr, w_hh_sc, b_ih_s, b_hh_s,
    h_out_sr, h_out_sc, saved_sr, saved_sc,
    RELU: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One RNN step for BLOCK_B rows x BLOCK_H hidden units: h_out [rows, H] and its fp32
    value saved [rows, H]."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    acc = _accumulate(acc, x_ptr, w_ih_ptr, rows, units, n_rows, H, I, x_sr, x_sc, w_ih_sr, w_ih_sc, BLOCK_K)
    acc = _accumulate(acc, h_ptr, w_hh_ptr, rows, units, n_rows, H, H, h_sr, h_sc, w_hh_sr, w_hh_sc, BLOCK_K)
    unit_ok = units < H
    if HAS_BIAS:
        # Biases may be views (strided, or expanded with stride 0): index by their own strides.
        acc += (tl.load(b_ih_ptr + units * b_ih_s, mask=unit_ok, other=0.0).to(tl.float32)
                + tl.load(b_hh_ptr + units * b_hh_s, mask=unit_ok, other=0.0).to(tl.float32))[None, :]
    if RELU:
        out = tl.maximum(acc, 0.0)
    else:
        out = tanh_accurate(acc)
    ok = (rows < n_rows)[:, None] & unit_ok[None, :]
    tl.store(h_out_ptr + rows[:, None] * h_out_sr + units[None, :] * h_out_sc,
             cast_rounded(out, h_out_ptr.dtype.element_ty), mask=ok)
    tl.store(saved_ptr + rows[:, None] * saved_sr + units[None, :] * saved_sc, out, mask=ok)


@triton.jit
def rnn_cell_backward_kernel(
    dh_ptr, saved_ptr, w_hh_ptr, dpre_ptr, dh_prev_ptr,
    n_rows, H,
    dh_sr, dh_sc, saved_sr, saved_sc, w_hh_sr, w_hh_sc, dpre_sr, dpre_sc, dh_prev_sr, dh_prev_sc,
    RELU: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_J: tl.constexpr,
):
    """Backward of one RNN step for BLOCK_B rows x BLOCK_P features of h: over all H units
    in chunks, the pre-activation gradient dpre [rows, H] (written by the programs of
    feature block 0) and dh_prev = dpre @ W_hh [rows, H]."""
    pid_p = tl.program_id(1)
    writes = pid_p == 0
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    features = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    acc = tl.zeros([BLOCK_B, BLOCK_P], tl.float32)
    for j0 in range(0, H, BLOCK_J):
        units = j0 + tl.arange(0, BLOCK_J)
        ok = (rows < n_rows)[:, None] & (units < H)[None, :]
        dh = _load_tile(dh_ptr, rows, units, dh_sr, dh_sc, n_rows, H).to(tl.float32)
        out = _load_tile(saved_ptr, rows, units, saved_sr, saved_sc, n_rows, H)
        if RELU:
            # relu's gradient where its output is positive, as torch's threshold_backward.
            d_pre = tl.where(out > 0.0, dh, 0.0)
        else:
            d_pre = dh * (1.0 - out * out)
        tl.store(dpre_ptr + rows[:, None] * dpre_sr + units[None, :] * dpre_sc,
                 cast_rounded(d_pre, dpre_ptr.dtype.element_ty), mask=ok & writes)
        w = _load_tile(w_hh_ptr, units, features, w_hh_sr, w_hh_sc, H, H)  # W_hh[u, p] at (u, p)
        acc += dot(cast_rounded(d_pre, w.dtype), w)
    ok = (rows < n_rows)[:, None] & (features < H)[None, :]
    tl.store(dh_prev_ptr + rows[:, None] * dh_prev_sr + features[None, :] * dh_prev_sc,
             cast_rounded(acc, dh_prev_ptr.dtype.element_ty), mask=ok)


def rnn_cell_forward(
    input: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor], b_hh: Optional[torch.Tensor], relu: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """input [B, I], h0 [B, H], w_ih [H, I], w_hh [H, H], biases [H] (both) or None (any
    strides). Returns h1 [B, H] in input's dtype and saved [B, H] (h1 in fp32)."""
    B, H = h0.shape
    I = input.shape[1]
    h1 = torch.empty(B, H, dtype=input.dtype, device=input.device)
    saved = torch.empty(B, H, dtype=torch.float32, device=input.device)
    if B == 0 or H == 0:
        return h1, saved
    block_b, block_h, block_k, warps = _forward_tiles(B, H)
    has_bias = b_ih is not None
    rnn_cell_forward_kernel[(ceil_div(B, block_b), ceil_div(H, block_h))](
        input, h0, w_ih, w_hh, b_ih if has_bias else h0, b_hh if has_bias else h0, h1, saved,
        B, H, I,
        *input.stride(), *h0.stride(), *w_ih.stride(), *w_hh.stride(),
        b_ih.stride(0) if has_bias else 0, b_hh.stride(0) if has_bias else 0,
        *h1.stride(), *saved.stride(),
        RELU=relu, HAS_BIAS=has_bias, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, num_warps=warps,
    )
    return h1, saved


def rnn_cell_backward(
    d_h1: torch.Tensor, input: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
    saved: torch.Tensor, has_bias: bool, relu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of rnn_cell_forward for d_h1 [B, H]: d_input [B, I], d_h0 [B, H],
    d_w_ih [H, I], d_w_hh [H, H], d_b_ih, d_b_hh [H] (the same; None without biases)."""
    B, H = h0.shape
    d_pre = torch.zeros(B, H, dtype=torch.float32, device=input.device)
    d_h0 = torch.zeros(B, H, dtype=h0.dtype, device=input.device)
    if B > 0 and H > 0:
        block_b, block_p, block_j, warps = _backward_tiles()
        rnn_cell_backward_kernel[(ceil_div(B, block_b), ceil_div(H, block_p))](
            d_h1, saved, w_hh, d_pre, d_h0,
            B, H,
            *d_h1.stride(), *saved.stride(), *w_hh.stride(), *d_pre.stride(), *d_h0.stride(),
            RELU=relu, BLOCK_B=block_b, BLOCK_P=block_p, BLOCK_J=block_j, num_warps=warps,
        )
    d_bias = d_pre.sum(0).to(w_ih.dtype) if has_bias else None
    d = d_pre.to(w_ih.dtype)
    return d @ w_ih, d_h0, d.t() @ input, d.t() @ h0, d_bias, d_bias


def rnn_tanh_cell_forward(input, h0, w_ih, w_hh, b_ih, b_hh):
    """rnn_cell_forward with tanh."""
    return rnn_cell_forward(input, h0, w_ih, w_hh, b_ih, b_hh, relu=False)


def rnn_tanh_cell_backward(d_h1, input, h0, w_ih, w_hh, saved, has_bias):
    """rnn_cell_backward with tanh."""
    return rnn_cell_backward(d_h1, input, h0, w_ih, w_hh, saved, has_bias, relu=False)


def rnn_relu_cell_forward(input, h0, w_ih, w_hh, b_ih, b_hh):
    """rnn_cell_forward with relu."""
    return rnn_cell_forward(input, h0, w_ih, w_hh, b_ih, b_hh, relu=True)


def rnn_relu_cell_backward(d_h1, input, h0, w_ih, w_hh, saved, has_bias):
    """rnn_cell_backward with relu."""
    return rnn_cell_backward(d_h1, input, h0, w_ih, w_hh, saved, has_bias, relu=True)
