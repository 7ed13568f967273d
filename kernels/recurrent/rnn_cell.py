"""The fused Elman RNN cell step in Triton (torch.rnn_tanh_cell, torch.rnn_relu_cell):
forward (both GEMMs, biases and the nonlinearity in one kernel) and backward (the
pre-activation gradient and its product with W_hh in one kernel).

One step, for x [B, I] and h [B, H]:  h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act tanh
or relu. The forward saves act's output in fp32 [B, H] (h' itself may be fp16 or bf16,
too coarse for tanh's derivative 1 - h'^2). Arithmetic is fp32; products accumulate in fp32 (fp32 ones in TF32 where
torch's fp32 matmul precision allows it, as step.py's).
The step kernels serve a single cell and the steps of a layer (hidden_layer.py), as the
GRU's do.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..packed_steps import cell_gate_products
from ..runtime import cast_rounded, ceil_div, dot_tf32_allowed, fp32_products_in_tf32, tanh_accurate
from .step import StepState, _backward_tiles, _forward_tiles, _load_state, _load_tile, _store_state


@triton.jit
def _accumulate(acc, prev_ptr, init_ptr, w_ptr, rows, units, n_carried, n_rows, H, K, prev_sr, prev_sc, init_sr,
                init_sc, w_sr, w_sc, BLOCK_K: tl.constexpr, TF32: tl.constexpr):
    """acc += a @ W[units, :]^T: a [rows, K] (rows < n_carried from `prev`, the rest from
    `init`), W [H, K]."""
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        a = _load_state(prev_ptr, init_ptr, rows, cols, prev_sr, prev_sc, init_sr, init_sc, n_carried, n_rows, K)
        w = _load_tile(w_ptr, cols, units, w_sc, w_sr, K, H)  # W[u, k] at (k, u)
        acc += dot_tf32_allowed(cast_rounded(a, w.dtype), w, TF32)  # exact cast: a holds values of w's dtype
    return acc


@triton.jit
def rnn_step_forward_kernel(
    x_ptr, w_ih_ptr, xw_ptr, h_prev_ptr, h_init_ptr, n_carried, w_hh_ptr, b_ih_ptr, b_hh_ptr, h_out_ptr, saved_ptr,
    n_rows, H, I,
    x_sr, x_sc, w_ih_sr, w_ih_sc, xw_sr, xw_sc, h_prev_sr, h_prev_sc, h_init_sr, h_init_sc, w_hh_sr, w_hh_sc,
    b_ih_s, b_hh_s, h_out_sr, h_out_sc, saved_sr, saved_sc,
    RELU: tl.constexpr, HAS_INPUT: tl.constexpr, HAS_XW: tl.constexpr, HAS_B_IH: tl.constexpr,
    HAS_B_HH: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, TF32: tl.constexpr,
):
    """One RNN step for BLOCK_B rows x BLOCK_H hidden units: h_out [rows, H] and its fp32
    value saved [rows, H]. The input comes as x [rows, I] with W_ih (HAS_INPUT; with
    b_ih where HAS_B_IH) or projected, xw [rows, H] (HAS_XW, b_ih included); b_hh where
    HAS_B_HH; h from h_prev for rows < n_carried, from h_init for the rest."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    if HAS_INPUT:
        acc = _accumulate(acc, x_ptr, x_ptr, w_ih_ptr, rows, units, 0, n_rows, H, I, x_sr, x_sc, x_sr, x_sc, w_ih_sr,
                          w_ih_sc, BLOCK_K, TF32)
    if HAS_XW:
        acc += _load_tile(xw_ptr, rows, units, xw_sr, xw_sc, n_rows, H).to(tl.float32)
    acc = _accumulate(acc, h_prev_ptr, h_init_ptr, w_hh_ptr, rows, units, n_carried, n_rows, H, H, h_prev_sr,
                      h_prev_sc, h_init_sr, h_init_sc, w_hh_sr, w_hh_sc, BLOCK_K, TF32)
    unit_ok = units < H
    if HAS_B_HH:
        # Biases may be views (strided, or expanded with stride 0): index by their own strides.
        bias = tl.load(b_hh_ptr + units * b_hh_s, mask=unit_ok, other=0.0).to(tl.float32)
        if HAS_B_IH:  # the cell: both biases, summed first
            bias += tl.load(b_ih_ptr + units * b_ih_s, mask=unit_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
    if RELU:
        out = tl.maximum(acc, 0.0)
    else:
        out = tanh_accurate(acc)
    ok = (rows < n_rows)[:, None] & unit_ok[None, :]
    tl.store(h_out_ptr + rows[:, None] * h_out_sr + units[None, :] * h_out_sc,
             cast_rounded(out, h_out_ptr.dtype.element_ty), mask=ok)
    tl.store(saved_ptr + rows[:, None] * saved_sr + units[None, :] * saved_sc, out, mask=ok)


@triton.jit
def rnn_step_backward_kernel(
    dh_ptr, dh_next_ptr, dh_final_ptr, n_next, n_carried, saved_ptr, w_hh_ptr, dpre_ptr, dh_prev_out_ptr,
    dh_init_out_ptr,
    n_rows, H,
    dh_sr, dh_sc, dh_next_sr, dh_next_sc, dh_final_sr, dh_final_sc, saved_sr, saved_sc, w_hh_sr, w_hh_sc,
    dpre_sr, dpre_sc, dh_prev_out_sr, dh_prev_out_sc, dh_init_out_sr, dh_init_out_sc,
    RELU: tl.constexpr, HAS_DH: tl.constexpr, HAS_DH_CARRY: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_J: tl.constexpr, TF32: tl.constexpr,
):
    """Backward of one RNN step for BLOCK_B rows x BLOCK_P features of h: the gradient
    reaching h' is dh (the step's output) plus the carry (from the next processed step for
    rows < n_next, the final state's for the rest). Over all H units in chunks, the
    pre-activation gradient dpre [rows, H] (written by the programs of feature block 0)
    and dh_prev = dpre @ W_hh [rows, H], stored to dh_prev_out for rows < n_carried, to
    dh_init_out for the rest."""
    pid_p = tl.program_id(1)
    writes = pid_p == 0
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    features = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    acc = tl.zeros([BLOCK_B, BLOCK_P], tl.float32)
    for j0 in range(0, H, BLOCK_J):
        units = j0 + tl.arange(0, BLOCK_J)
        ok = (rows < n_rows)[:, None] & (units < H)[None, :]
        dh = tl.zeros([BLOCK_B, BLOCK_J], tl.float32)
        if HAS_DH:
            dh += _load_tile(dh_ptr, rows, units, dh_sr, dh_sc, n_rows, H).to(tl.float32)
        if HAS_DH_CARRY:
            dh += _load_state(dh_next_ptr, dh_final_ptr, rows, units, dh_next_sr, dh_next_sc, dh_final_sr,
                              dh_final_sc, n_next, n_rows, H)
        out = _load_tile(saved_ptr, rows, units, saved_sr, saved_sc, n_rows, H)
        if RELU:
            # relu's gradient where its output is positive, as torch's threshold_backward.
            d_pre = tl.where(out > 0.0, dh, 0.0)
        else:
            d_pre = dh * (1.0 - out * out)
        tl.store(dpre_ptr + rows[:, None] * dpre_sr + units[None, :] * dpre_sc,
                 cast_rounded(d_pre, dpre_ptr.dtype.element_ty), mask=ok & writes)
        w = _load_tile(w_hh_ptr, units, features, w_hh_sr, w_hh_sc, H, H)  # W_hh[u, p] at (u, p)
        acc += dot_tf32_allowed(cast_rounded(d_pre, w.dtype), w, TF32)
    _store_state(dh_prev_out_ptr, dh_init_out_ptr, rows, features, dh_prev_out_sr, dh_prev_out_sc, dh_init_out_sr,
                 dh_init_out_sc, n_carried, n_rows, H, acc, True)


def rnn_step_forward(
    h: StepState, w_hh: torch.Tensor, n_rows: int, h_out: torch.Tensor, saved: torch.Tensor, relu: bool,
    x: Optional[torch.Tensor] = None, w_ih: Optional[torch.Tensor] = None, xw: Optional[torch.Tensor] = None,
    b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None,
) -> None:
    """One RNN step for `n_rows` rows into h_out [rows, H] and saved [rows, H] (fp32). h:
    where the previous h rows come from; w_hh [H, H]; the input as x [rows, I] with w_ih
    [H, I] and b_ih [H] or None, or projected, xw [rows, H] (b_ih included); b_hh [H] or
    None (for x, given with b_ih or not at all)."""
    H = w_hh.shape[1]
    if n_rows == 0 or H == 0:
        return
    I = x.shape[1] if x is not None else 0
    block_b, block_h, block_k, warps = _forward_tiles(n_rows, H)
    dummy = h.init
    rnn_step_forward_kernel[(ceil_div(n_rows, block_b), ceil_div(H, block_h))](
        x if x is not None else dummy, w_ih if w_ih is not None else dummy, xw if xw is not None else dummy,
        h.prev, h.init, h.n_carried, w_hh, b_ih if b_ih is not None else dummy, b_hh if b_hh is not None else dummy,
        h_out, saved,
        n_rows, H, I,
        *(x.stride() if x is not None else (0, 0)), *(w_ih.stride() if w_ih is not None else (0, 0)),
        *(xw.stride() if xw is not None else (0, 0)), *h.strides(), *w_hh.stride(),
        b_ih.stride(0) if b_ih is not None else 0, b_hh.stride(0) if b_hh is not None else 0,
        *h_out.stride(), *saved.stride(),
        RELU=relu, HAS_INPUT=x is not None, HAS_XW=xw is not None, HAS_B_IH=b_ih is not None,
        HAS_B_HH=b_hh is not None,
        BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, TF32=fp32_products_in_tf32(w_hh.dtype), num_warps=warps,
    )


def rnn_step_backward(
    dh: Optional[torch.Tensor], dh_carry: Optional[StepState], saved: torch.Tensor, w_hh: torch.Tensor, n_rows: int,
    d_pre: torch.Tensor, dh_state: StepState, relu: bool,
) -> None:
    """Backward of one RNN step for `n_rows` rows: dh [rows, H] the gradient reaching h'
    from the step's output (or None), dh_carry from later (or None), saved: h' in fp32.
    Writes d_pre [rows, H] and the gradient of the previous h to dh_state's tensors, split
    at its n_carried."""
    H = w_hh.shape[1]
    if n_rows == 0 or H == 0:
        return
    block_b, block_p, block_j, warps = _backward_tiles()
    carry = dh_carry or StepState(None, saved, 0)
    rnn_step_backward_kernel[(ceil_div(n_rows, block_b), ceil_div(H, block_p))](
        dh if dh is not None else saved, carry.prev, carry.init, carry.n_carried, dh_state.n_carried, saved, w_hh,
        d_pre, dh_state.prev, dh_state.init,
        n_rows, H,
        *(dh.stride() if dh is not None else (0, 0)), *carry.strides(), *saved.stride(), *w_hh.stride(),
        *d_pre.stride(), *dh_state.strides(),
        RELU=relu, HAS_DH=dh is not None, HAS_DH_CARRY=dh_carry is not None, BLOCK_B=block_b, BLOCK_P=block_p,
        BLOCK_J=block_j, TF32=fp32_products_in_tf32(w_hh.dtype), num_warps=warps,
    )


def rnn_cell_forward(
    input: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor], b_hh: Optional[torch.Tensor], relu: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """input [B, I], h0 [B, H], w_ih [H, I], w_hh [H, H], biases [H] (both) or None (any
    strides). Returns h1 [B, H] in input's dtype and saved [B, H] (h1 in fp32)."""
    B, H = h0.shape
    h1 = torch.empty(B, H, dtype=input.dtype, device=input.device)
    saved = torch.empty(B, H, dtype=torch.float32, device=input.device)
    rnn_step_forward(StepState(None, h0, 0), w_hh, B, h1, saved, relu, x=input, w_ih=w_ih, b_ih=b_ih, b_hh=b_hh)
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
    rnn_step_backward(d_h1, None, saved, w_hh, B, d_pre, StepState(None, d_h0, 0), relu)
    d_bias = d_pre.sum(0).to(w_ih.dtype) if has_bias else None
    d_input, d_w_ih, d_w_hh = cell_gate_products(d_pre, d_pre, input, h0, w_ih, w_hh)
    return d_input, d_h0, d_w_ih, d_w_hh, d_bias, d_bias


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
