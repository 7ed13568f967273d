"""The fused GRU cell step in Triton (torch.gru_cell): forward (both GEMMs, biases, gates
and the new state in one kernel) and backward (gate gradients and dgates @ W_hh in one
kernel).

Gate order r, z, n, as torch. One step, for x [B, I] and h [B, H]:
    r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
    z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
    n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
    h' = (1 - z) * n + z * h
The forward saves r, z, n and hn = h W_hn^T + b_hn (fp32, [B, 4H]): n's recurrent part
is gated by r, so its gradient differs on the input side (dn) and on the recurrent side
(dn * r), and the backward needs hn for r's. Arithmetic is fp32; h and the weights keep
their dtype (fp32, fp16, bf16) and products accumulate in fp32 (fp32 ones in TF32 where torch's
fp32 matmul precision allows it, as step.py's).

The step kernels serve a single cell (gru_cell_forward/backward: input GEMM, both biases)
and the steps of a layer (hidden_layer.py: projected input, previous h from the step
before or from the initial state, gradient carries), as the LSTM's step.py does.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..packed_steps import cell_gate_products, split_gate_gradients
from ..runtime import cast_rounded, ceil_div, dot_tf32_allowed, fp32_products_in_tf32, sigmoid_accurate, tanh_accurate
from .step import StepState, _backward_tiles, _forward_tiles, _load_state, _load_tile, _store_state


@triton.jit
def _accumulate_three(acc_r, acc_z, acc_n, prev_ptr, init_ptr, w_ptr, rows, units, n_carried, n_rows, H, K,
                      prev_sr, prev_sc, init_sr, init_sc, w_sr, w_sc, BLOCK_K: tl.constexpr,
                      TF32: tl.constexpr):
    """acc_q += a @ W[q*H + units, :]^T for the three gates q: a [rows, K] (rows < n_carried
    from `prev`, the rest from `init`), W [3H, K]."""
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        a = _load_state(prev_ptr, init_ptr, rows, cols, prev_sr, prev_sc, init_sr, init_sc, n_carried, n_rows, K)
        # W rows of one gate as a [K, units] tile: W[q*H + u, k] at (k, u).
        w_r = _load_tile(w_ptr, cols, units, w_sc, w_sr, K, H)
        w_z = _load_tile(w_ptr + H * w_sr, cols, units, w_sc, w_sr, K, H)
        w_n = _load_tile(w_ptr + 2 * H * w_sr, cols, units, w_sc, w_sr, K, H)
        a = cast_rounded(a, w_r.dtype)  # exact: a holds values of that dtype
        acc_r += dot_tf32_allowed(a, w_r, TF32)
        acc_z += dot_tf32_allowed(a, w_z, TF32)
        acc_n += dot_tf32_allowed(a, w_n, TF32)
    return acc_r, acc_z, acc_n


@triton.jit
def gru_step_forward_kernel(
    x_ptr, w_ih_ptr, xw_ptr, h_prev_ptr, h_init_ptr, n_carried, w_hh_ptr, b_ih_ptr, b_hh_ptr, h_out_ptr, saved_ptr,
    n_rows, H, I,
    x_sr, x_sc, w_ih_sr, w_ih_sc, xw_sr, xw_sc, h_prev_sr, h_prev_sc, h_init_sr, h_init_sc, w_hh_sr, w_hh_sc,
    b_ih_s, b_hh_s, h_out_sr, h_out_sc, saved_sr, saved_sc,
    HAS_INPUT: tl.constexpr, HAS_XW: tl.constexpr, HAS_B_IH: tl.constexpr, HAS_B_HH: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, TF32: tl.constexpr,
):
    """One GRU step for BLOCK_B rows x BLOCK_H hidden units: h_out [rows, H] and saved
    [rows, 4H] = (r, z, n, hn) in fp32. The input comes as x [rows, I] with W_ih
    (HAS_INPUT) or projected, xw [rows, 3H] (HAS_XW, b_ih included); h from h_prev for
    rows < n_carried, from h_init for the rest."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    # r and z add their two products; n keeps them apart (r gates the recurrent one).
    acc_r = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    acc_z = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    acc_in = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    acc_hn = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    if HAS_INPUT:
        acc_r, acc_z, acc_in = _accumulate_three(acc_r, acc_z, acc_in, x_ptr, x_ptr, w_ih_ptr, rows, units, 0, n_rows,
                                                 H, I, x_sr, x_sc, x_sr, x_sc, w_ih_sr, w_ih_sc, BLOCK_K, TF32)
    if HAS_XW:
        acc_r += _load_tile(xw_ptr, rows, units, xw_sr, xw_sc, n_rows, H).to(tl.float32)
        acc_z += _load_tile(xw_ptr + H * xw_sc, rows, units, xw_sr, xw_sc, n_rows, H).to(tl.float32)
        acc_in += _load_tile(xw_ptr + 2 * H * xw_sc, rows, units, xw_sr, xw_sc, n_rows, H).to(tl.float32)
    acc_r, acc_z, acc_hn = _accumulate_three(acc_r, acc_z, acc_hn, h_prev_ptr, h_init_ptr, w_hh_ptr, rows, units,
                                             n_carried, n_rows, H, H, h_prev_sr, h_prev_sc, h_init_sr, h_init_sc,
                                             w_hh_sr, w_hh_sc, BLOCK_K, TF32)
    unit_ok = units < H
    # Biases may be views (strided, or expanded with stride 0): index by their own strides.
    if HAS_B_IH:
        acc_r += tl.load(b_ih_ptr + units * b_ih_s, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
        acc_z += tl.load(b_ih_ptr + (H + units) * b_ih_s, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
        acc_in += tl.load(b_ih_ptr + (2 * H + units) * b_ih_s, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_B_HH:
        acc_r += tl.load(b_hh_ptr + units * b_hh_s, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
        acc_z += tl.load(b_hh_ptr + (H + units) * b_hh_s, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
        acc_hn += tl.load(b_hh_ptr + (2 * H + units) * b_hh_s, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
    r = sigmoid_accurate(acc_r)
    z = sigmoid_accurate(acc_z)
    n = tanh_accurate(acc_in + r * acc_hn)
    h = _load_state(h_prev_ptr, h_init_ptr, rows, units, h_prev_sr, h_prev_sc, h_init_sr, h_init_sc, n_carried,
                    n_rows, H)
    h_new = n + z * (h - n)
    ok = (rows < n_rows)[:, None] & unit_ok[None, :]
    tl.store(h_out_ptr + rows[:, None] * h_out_sr + units[None, :] * h_out_sc,
             cast_rounded(h_new, h_out_ptr.dtype.element_ty), mask=ok)
    saved_ptrs = saved_ptr + rows[:, None] * saved_sr + units[None, :] * saved_sc
    tl.store(saved_ptrs, r, mask=ok)
    tl.store(saved_ptrs + H * saved_sc, z, mask=ok)
    tl.store(saved_ptrs + 2 * H * saved_sc, n, mask=ok)
    tl.store(saved_ptrs + 3 * H * saved_sc, acc_hn, mask=ok)


@triton.jit
def _reaching(dh_ptr, dh_next_ptr, dh_final_ptr, rows, cols, dh_sr, dh_sc, dh_next_sr, dh_next_sc, dh_final_sr,
              dh_final_sc, n_next, n_rows, H, HAS_DH: tl.constexpr, HAS_DH_CARRY: tl.constexpr):
    """The gradient reaching h' [rows, cols] (fp32): the step's output gradient dh, plus the
    carry: from the next processed step for rows < n_next, the final state's for the rest."""
    total = tl.zeros([rows.shape[0], cols.shape[0]], tl.float32)
    if HAS_DH:
        total += _load_tile(dh_ptr, rows, cols, dh_sr, dh_sc, n_rows, H).to(tl.float32)
    if HAS_DH_CARRY:
        total += _load_state(dh_next_ptr, dh_final_ptr, rows, cols, dh_next_sr, dh_next_sc, dh_final_sr, dh_final_sc,
                             n_next, n_rows, H)
    return total


@triton.jit
def gru_step_backward_kernel(
    dh_ptr, dh_next_ptr, dh_final_ptr, n_next, h_prev_ptr, h_init_ptr, n_carried, saved_ptr, w_hh_ptr,
    dgates_ptr, dh_prev_out_ptr, dh_init_out_ptr,
    n_rows, H,
    dh_sr, dh_sc, dh_next_sr, dh_next_sc, dh_final_sr, dh_final_sc, h_prev_sr, h_prev_sc, h_init_sr, h_init_sc,
    saved_sr, saved_sc, w_hh_sr, w_hh_sc, dgates_sr, dgates_sc, dh_prev_out_sr, dh_prev_out_sc,
    dh_init_out_sr, dh_init_out_sc,
    HAS_DH: tl.constexpr, HAS_DH_CARRY: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_J: tl.constexpr, TF32: tl.constexpr,
):
    """Backward of one GRU step for BLOCK_B rows x BLOCK_P features of h.

    The gradient reaching h' is dh (the step's output) plus the carry (_reaching). Over
    all H units in chunks: the pre-activation gradients dgates [rows, 4H] = (dr, dz, dn on
    the input side, dn * r on the recurrent side), written by the programs of feature
    block 0, and from them the gradient of the previous h, z * dh' + (dr, dz, dn * r) @
    W_hh [rows, H], stored to dh_prev_out for rows < n_carried, to dh_init_out for the rest."""
    pid_p = tl.program_id(1)
    writes_gates = pid_p == 0
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    features = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    # The direct path h -> h' (through z * h) at this block's features.
    acc = _reaching(dh_ptr, dh_next_ptr, dh_final_ptr, rows, features, dh_sr, dh_sc, dh_next_sr, dh_next_sc,
                    dh_final_sr, dh_final_sc, n_next, n_rows, H, HAS_DH, HAS_DH_CARRY)
    acc *= _load_tile(saved_ptr + H * saved_sc, rows, features, saved_sr, saved_sc, n_rows, H)
    for j0 in range(0, H, BLOCK_J):
        units = j0 + tl.arange(0, BLOCK_J)
        ok = (rows < n_rows)[:, None] & (units < H)[None, :]
        dh = _reaching(dh_ptr, dh_next_ptr, dh_final_ptr, rows, units, dh_sr, dh_sc, dh_next_sr, dh_next_sc,
                       dh_final_sr, dh_final_sc, n_next, n_rows, H, HAS_DH, HAS_DH_CARRY)
        h = _load_state(h_prev_ptr, h_init_ptr, rows, units, h_prev_sr, h_prev_sc, h_init_sr, h_init_sc, n_carried,
                        n_rows, H)
        saved_ptrs = saved_ptr + rows[:, None] * saved_sr + units[None, :] * saved_sc
        r = tl.load(saved_ptrs, mask=ok, other=0.0)
        z = tl.load(saved_ptrs + H * saved_sc, mask=ok, other=0.0)
        n = tl.load(saved_ptrs + 2 * H * saved_sc, mask=ok, other=0.0)
        hn = tl.load(saved_ptrs + 3 * H * saved_sc, mask=ok, other=0.0)
        d_n = dh * (1.0 - z) * (1.0 - n * n)
        d_z = dh * (h - n) * z * (1.0 - z)
        d_r = d_n * hn * r * (1.0 - r)
        d_hn = d_n * r
        dgate_ptrs = dgates_ptr + rows[:, None] * dgates_sr + units[None, :] * dgates_sc
        first = ok & writes_gates
        tl.store(dgate_ptrs, cast_rounded(d_r, dgates_ptr.dtype.element_ty), mask=first)
        tl.store(dgate_ptrs + H * dgates_sc, cast_rounded(d_z, dgates_ptr.dtype.element_ty), mask=first)
        tl.store(dgate_ptrs + 2 * H * dgates_sc, cast_rounded(d_n, dgates_ptr.dtype.element_ty), mask=first)
        tl.store(dgate_ptrs + 3 * H * dgates_sc, cast_rounded(d_hn, dgates_ptr.dtype.element_ty), mask=first)
        # dh_prev += (dr, dz, dhn) @ W_hh: W_hh[q*H + u, p] as [units, features] tiles.
        w_r = _load_tile(w_hh_ptr, units, features, w_hh_sr, w_hh_sc, H, H)
        w_z = _load_tile(w_hh_ptr + H * w_hh_sr, units, features, w_hh_sr, w_hh_sc, H, H)
        w_n = _load_tile(w_hh_ptr + 2 * H * w_hh_sr, units, features, w_hh_sr, w_hh_sc, H, H)
        acc += dot_tf32_allowed(cast_rounded(d_r, w_r.dtype), w_r, TF32)
        acc += dot_tf32_allowed(cast_rounded(d_z, w_r.dtype), w_z, TF32)
        acc += dot_tf32_allowed(cast_rounded(d_hn, w_r.dtype), w_n, TF32)
    _store_state(dh_prev_out_ptr, dh_init_out_ptr, rows, features, dh_prev_out_sr, dh_prev_out_sc, dh_init_out_sr,
                 dh_init_out_sc, n_carried, n_rows, H, acc, True)


def gru_step_forward(
    h: StepState, w_hh: torch.Tensor, n_rows: int, h_out: torch.Tensor, saved: torch.Tensor,
    x: Optional[torch.Tensor] = None, w_ih: Optional[torch.Tensor] = None, xw: Optional[torch.Tensor] = None,
    b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None,
) -> None:
    """One GRU step for `n_rows` rows into h_out [rows, H] and saved [rows, 4H] (fp32). h:
    where the previous h rows come from; w_hh [3H, H]; the input as x [rows, I] with w_ih
    [3H, I], or projected, xw [rows, 3H] (b_ih included); biases [3H] or None."""
    H = w_hh.shape[1]
    if n_rows == 0 or H == 0:
        return
    I = x.shape[1] if x is not None else 0
    block_b, block_h, block_k, warps = _forward_tiles(n_rows, H)
    dummy = h.init
    gru_step_forward_kernel[(ceil_div(n_rows, block_b), ceil_div(H, block_h))](
        x if x is not None else dummy, w_ih if w_ih is not None else dummy, xw if xw is not None else dummy,
        h.prev, h.init, h.n_carried, w_hh, b_ih if b_ih is not None else dummy, b_hh if b_hh is not None else dummy,
        h_out, saved,
        n_rows, H, I,
        *(x.stride() if x is not None else (0, 0)), *(w_ih.stride() if w_ih is not None else (0, 0)),
        *(xw.stride() if xw is not None else (0, 0)), *h.strides(), *w_hh.stride(),
        b_ih.stride(0) if b_ih is not None else 0, b_hh.stride(0) if b_hh is not None else 0,
        *h_out.stride(), *saved.stride(),
        HAS_INPUT=x is not None, HAS_XW=xw is not None, HAS_B_IH=b_ih is not None, HAS_B_HH=b_hh is not None,
        BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, TF32=fp32_products_in_tf32(w_hh.dtype), num_warps=warps,
    )


def gru_step_backward(
    dh: Optional[torch.Tensor], dh_carry: Optional[StepState], h: StepState, saved: torch.Tensor,
    w_hh: torch.Tensor, n_rows: int, dgates: torch.Tensor, dh_state: StepState,
) -> None:
    """Backward of one GRU step for `n_rows` rows: dh [rows, H] the gradient reaching h'
    from the step's output (or None), dh_carry from later (its `prev` rows from the next
    step, the rest from the final state; or None); h: where the step's previous h came
    from; saved: what the forward saved. Writes dgates [rows, 4H] and the gradient of the
    previous h to dh_state's tensors, split at its n_carried."""
    H = w_hh.shape[1]
    if n_rows == 0 or H == 0:
        return
    block_b, block_p, block_j, warps = _backward_tiles()
    carry = dh_carry or StepState(None, saved, 0)
    gru_step_backward_kernel[(ceil_div(n_rows, block_b), ceil_div(H, block_p))](
        dh if dh is not None else saved, carry.prev, carry.init, carry.n_carried, h.prev, h.init, h.n_carried, saved,
        w_hh, dgates, dh_state.prev, dh_state.init,
        n_rows, H,
        *(dh.stride() if dh is not None else (0, 0)), *carry.strides(), *h.strides(), *saved.stride(),
        *w_hh.stride(), *dgates.stride(), *dh_state.strides(),
        HAS_DH=dh is not None, HAS_DH_CARRY=dh_carry is not None, BLOCK_B=block_b, BLOCK_P=block_p,
        BLOCK_J=block_j, TF32=fp32_products_in_tf32(w_hh.dtype), num_warps=warps,
    )


def gru_cell_forward(
    input: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor], b_hh: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """input [B, I], h0 [B, H], w_ih [3H, I], w_hh [3H, H], biases [3H] (both) or None (any
    strides). Returns h1 [B, H] in input's dtype and saved [B, 4H] (fp32: r, z, n, hn)."""
    B, H = h0.shape
    h1 = torch.empty(B, H, dtype=input.dtype, device=input.device)
    saved = torch.empty(B, 4 * H, dtype=torch.float32, device=input.device)
    gru_step_forward(StepState(None, h0, 0), w_hh, B, h1, saved, x=input, w_ih=w_ih, b_ih=b_ih, b_hh=b_hh)
    return h1, saved


def gru_cell_backward(
    d_h1: torch.Tensor, input: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
    saved: torch.Tensor, has_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of gru_cell_forward for d_h1 [B, H]: d_input [B, I], d_h0 [B, H],
    d_w_ih [3H, I], d_w_hh [3H, H], d_b_ih, d_b_hh [3H] (None without biases). One kernel
    gives the gate gradients and d_h0; the weight and input gradients are GEMMs over them."""
    B, H = h0.shape
    dgates = torch.zeros(B, 4 * H, dtype=torch.float32, device=input.device)
    d_h0 = torch.zeros(B, H, dtype=h0.dtype, device=input.device)
    gru_step_backward(d_h1, None, StepState(None, h0, 0), saved, w_hh, B, dgates, StepState(None, d_h0, 0))
    d_input_side, d_hidden_side = split_gate_gradients(dgates)
    d_b_ih = d_input_side.sum(0).to(w_ih.dtype) if has_bias else None
    d_b_hh = d_hidden_side.sum(0).to(w_hh.dtype) if has_bias else None
    d_input, d_w_ih, d_w_hh = cell_gate_products(d_input_side, d_hidden_side, input, h0, w_ih, w_hh)
    return d_input, d_h0, d_w_ih, d_w_hh, d_b_ih, d_b_hh
