"""The fused LSTM step in Triton: forward (gate GEMMs, biases, nonlinearities, new state in
one kernel) and backward (gate gradients and dgates @ W_hh in one kernel).

Gate order i, f, g, o, as torch. One step:
    gates = x @ W_ih^T + b_ih + h @ W_hh^T + b_hh      [rows, 4H]
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
The input projection may come precomputed (`xw`: a sequence projects all its steps in
one GEMM). The previous state of a step comes from two places: rows that continue from
the step before (`*_prev`, the first `n_carried` rows) and rows that start at this step
(`*_init`). That lets one kernel serve a single cell, the steps of a padded sequence and
of a packed, variable-length one, forwards or reversed. The backward writes the
gradients of that state to the same two places. The cell state, the saved gate
activations and all arithmetic are fp32; h and the weights keep their dtype (fp32, fp16,
bf16), products accumulate in fp32: true fp32 for fp32, unless torch's fp32 matmul
precision allows TF32 (runtime.fp32_products_in_tf32), as it does for torch's own GEMMs.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import (INTERPRETED, cast_rounded, ceil_div, dot_tf32_allowed, fp32_products_in_tf32, next_power_of_2,
                       sigmoid_accurate, tanh_accurate)


@triton.jit
def _load_tile(ptr, rows, cols, stride_row, stride_col, n_rows, n_cols):
    return tl.load(ptr + rows[:, None] * stride_row + cols[None, :] * stride_col,
                   mask=(rows < n_rows)[:, None] & (cols < n_cols)[None, :], other=0.0)


@triton.jit
def _load_state(prev_ptr, init_ptr, rows, cols, prev_sr, prev_sc, init_sr, init_sc, n_carried, n_rows, n_cols):
    """State rows: from `prev` for rows < n_carried, from `init` for the rest."""
    in_bounds = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    carried = (rows < n_carried)[:, None]
    from_prev = tl.load(prev_ptr + rows[:, None] * prev_sr + cols[None, :] * prev_sc, mask=in_bounds & carried, other=0.0)
    from_init = tl.load(init_ptr + rows[:, None] * init_sr + cols[None, :] * init_sc, mask=in_bounds & ~carried, other=0.0)
    return tl.where(carried, from_prev.to(tl.float32), from_init.to(tl.float32))


@triton.jit
def _store_state(prev_ptr, init_ptr, rows, cols, prev_sr, prev_sc, init_sr, init_sc, n_carried, n_rows, n_cols,
                 value, store_mask):
    """Store rows < n_carried to `prev`, the rest to `init` (the gradient of a state)."""
    in_bounds = (rows < n_rows)[:, None] & (cols < n_cols)[None, :] & store_mask
    carried = (rows < n_carried)[:, None]
    tl.store(prev_ptr + rows[:, None] * prev_sr + cols[None, :] * prev_sc,
             cast_rounded(value, prev_ptr.dtype.element_ty), mask=in_bounds & carried)
    tl.store(init_ptr + rows[:, None] * init_sr + cols[None, :] * init_sc,
             cast_rounded(value, init_ptr.dtype.element_ty), mask=in_bounds & ~carried)


@triton.jit
def _accumulate_gates(acc_i, acc_f, acc_g, acc_o, a_ptr, w_ptr, rows, units, n_rows, H, K,
                      a_sr, a_sc, w_sr, w_sc, BLOCK_K: tl.constexpr, TF32: tl.constexpr):
    """acc_q += a @ W[q*H + units, :]^T for the four gates q: a [rows, K], W [4H, K]."""
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        a = _load_tile(a_ptr, rows, cols, a_sr, a_sc, n_rows, K)
        # W rows of one gate as a [K, units] tile: W[q*H + u, k] at (k, u).
        w_i = _load_tile(w_ptr, cols, units, w_sc, w_sr, K, H)
        w_f = _load_tile(w_ptr + H * w_sr, cols, units, w_sc, w_sr, K, H)
        w_g = _load_tile(w_ptr + 2 * H * w_sr, cols, units, w_sc, w_sr, K, H)
        w_o = _load_tile(w_ptr + 3 * H * w_sr, cols, units, w_sc, w_sr, K, H)
        a = a.to(w_i.dtype)
        acc_i += dot_tf32_allowed(a, w_i, TF32)
        acc_f += dot_tf32_allowed(a, w_f, TF32)
        acc_g += dot_tf32_allowed(a, w_g, TF32)
        acc_o += dot_tf32_allowed(a, w_o, TF32)
    return acc_i, acc_f, acc_g, acc_o


@triton.jit
def _load_bias_pair(b_ih_ptr, b_hh_ptr, index, b_ih_s, b_hh_s, mask):
    """b_ih[index] + b_hh[index] in fp32."""
    return (tl.load(b_ih_ptr + index * b_ih_s, mask=mask, other=0.0).to(tl.float32)
            + tl.load(b_hh_ptr + index * b_hh_s, mask=mask, other=0.0).to(tl.float32))


@triton.jit
def lstm_step_forward_kernel(
    x_ptr, w_ih_ptr, xw_ptr,
    h_prev_ptr, h_init_ptr, c_prev_ptr, c_init_ptr, n_carried,
    w_hh_ptr, b_ih_ptr, b_hh_ptr,
    h_out_ptr, c_out_ptr, gates_ptr,
    n_rows, H, P, I,
    x_sr, x_sc, w_ih_sr, w_ih_sc, xw_sr, xw_sc,
    h_prev_sr, h_prev_sc, h_init_sr, h_init_sc, c_prev_sr, c_prev_sc, c_init_sr, c_init_sc,
    w_hh_sr, w_hh_sc,
    b_ih_s, b_hh_s,
    h_out_sr, h_out_sc, c_out_sr, c_out_sc, gates_sr, gates_sc,
    HAS_INPUT: tl.constexpr, HAS_XW: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, TF32: tl.constexpr,
):
    """One step for BLOCK_B rows x BLOCK_H hidden units: the four gate pre-activations
    (input GEMM when HAS_INPUT, projected input when HAS_XW, recurrent GEMM over the P
    features of h, biases), then c' and h' = o * tanh(c') [rows, H], and the gate
    activations [rows, 4H] (fp32) that the backward needs."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc_i = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    acc_f = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    acc_g = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    acc_o = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    if HAS_INPUT:
        acc_i, acc_f, acc_g, acc_o = _accumulate_gates(acc_i, acc_f, acc_g, acc_o, x_ptr, w_ih_ptr, rows, units,
                                                       n_rows, H, I, x_sr, x_sc, w_ih_sr, w_ih_sc, BLOCK_K, TF32)
    # The recurrent product, over h rows from their two sources.
    for k0 in range(0, P, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        h = _load_state(h_prev_ptr, h_init_ptr, rows, cols, h_prev_sr, h_prev_sc, h_init_sr, h_init_sc,
                        n_carried, n_rows, P)
        w_i = _load_tile(w_hh_ptr, cols, units, w_hh_sc, w_hh_sr, P, H)
        w_f = _load_tile(w_hh_ptr + H * w_hh_sr, cols, units, w_hh_sc, w_hh_sr, P, H)
        w_g = _load_tile(w_hh_ptr + 2 * H * w_hh_sr, cols, units, w_hh_sc, w_hh_sr, P, H)
        w_o = _load_tile(w_hh_ptr + 3 * H * w_hh_sr, cols, units, w_hh_sc, w_hh_sr, P, H)
        h = cast_rounded(h, w_i.dtype)
        acc_i += dot_tf32_allowed(h, w_i, TF32)
        acc_f += dot_tf32_allowed(h, w_f, TF32)
        acc_g += dot_tf32_allowed(h, w_g, TF32)
        acc_o += dot_tf32_allowed(h, w_o, TF32)
    if HAS_XW:
        acc_i += _load_tile(xw_ptr, rows, units, xw_sr, xw_sc, n_rows, H).to(tl.float32)
        acc_f += _load_tile(xw_ptr + H * xw_sc, rows, units, xw_sr, xw_sc, n_rows, H).to(tl.float32)
        acc_g += _load_tile(xw_ptr + 2 * H * xw_sc, rows, units, xw_sr, xw_sc, n_rows, H).to(tl.float32)
        acc_o += _load_tile(xw_ptr + 3 * H * xw_sc, rows, units, xw_sr, xw_sc, n_rows, H).to(tl.float32)
    if HAS_BIAS:
        # Biases may be views (strided, or expanded with stride 0): index by their stride.
        unit_ok = units < H
        acc_i += _load_bias_pair(b_ih_ptr, b_hh_ptr, units, b_ih_s, b_hh_s, unit_ok)[None, :]
        acc_f += _load_bias_pair(b_ih_ptr, b_hh_ptr, H + units, b_ih_s, b_hh_s, unit_ok)[None, :]
        acc_g += _load_bias_pair(b_ih_ptr, b_hh_ptr, 2 * H + units, b_ih_s, b_hh_s, unit_ok)[None, :]
        acc_o += _load_bias_pair(b_ih_ptr, b_hh_ptr, 3 * H + units, b_ih_s, b_hh_s, unit_ok)[None, :]
    i = sigmoid_accurate(acc_i)
    f = sigmoid_accurate(acc_f)
    g = tanh_accurate(acc_g)
    o = sigmoid_accurate(acc_o)
    c = _load_state(c_prev_ptr, c_init_ptr, rows, units, c_prev_sr, c_prev_sc, c_init_sr, c_init_sc,
                    n_carried, n_rows, H)
    c_new = f * c + i * g
    h_new = o * tanh_accurate(c_new)
    ok = (rows < n_rows)[:, None] & (units < H)[None, :]
    tl.store(c_out_ptr + rows[:, None] * c_out_sr + units[None, :] * c_out_sc,
             cast_rounded(c_new, c_out_ptr.dtype.element_ty), mask=ok)
    tl.store(h_out_ptr + rows[:, None] * h_out_sr + units[None, :] * h_out_sc,
             cast_rounded(h_new, h_out_ptr.dtype.element_ty), mask=ok)
    gate_ptrs = gates_ptr + rows[:, None] * gates_sr + units[None, :] * gates_sc
    tl.store(gate_ptrs, i, mask=ok)
    tl.store(gate_ptrs + H * gates_sc, f, mask=ok)
    tl.store(gate_ptrs + 2 * H * gates_sc, g, mask=ok)
    tl.store(gate_ptrs + 3 * H * gates_sc, o, mask=ok)


@triton.jit
def lstm_step_backward_kernel(
    dh_ptr, dh_next_ptr, dh_final_ptr, dc_next_ptr, dc_final_ptr, n_next,
    gates_ptr, c_ptr, c_prev_ptr, c_init_ptr, n_carried,
    w_hh_ptr,
    dgates_ptr, dc_prev_ptr, dc_init_ptr, dh_prev_ptr, dh_init_ptr, dbias_ptr,
    n_rows, H, P,
    dh_sr, dh_sc, dh_next_sr, dh_next_sc, dh_final_sr, dh_final_sc,
    dc_next_sr, dc_next_sc, dc_final_sr, dc_final_sc,
    gates_sr, gates_sc, c_sr, c_sc, c_prev_sr, c_prev_sc, c_init_sr, c_init_sc,
    w_hh_sr, w_hh_sc,
    dgates_sr, dgates_sc, dc_prev_sr, dc_prev_sc, dc_init_sr, dc_init_sc,
    dh_prev_sr, dh_prev_sc, dh_init_sr, dh_init_sc, dbias_sr, dbias_sc,
    HAS_DH: tl.constexpr, HAS_DH_CARRY: tl.constexpr, HAS_DC_CARRY: tl.constexpr, BIAS_GRAD: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_J: tl.constexpr, TF32: tl.constexpr,
):
    """Backward of one step for BLOCK_B rows x BLOCK_P features of h_prev.

    The gradient reaching h' is dh (the step's output) plus the carry (from the next
    step for rows < n_next, else the final state's); reaching c', the c carry, split the
    same way. Over all H units in chunks: the gate gradients dgates [rows, 4H]
    (pre-activation) and dc_prev = dc * f, written by the programs of feature block 0,
    and dh_prev = dgates @ W_hh [rows, P] accumulated from them. BIAS_GRAD: those
    programs also write the column sums of their rows of dgates to dbias[row block, 4H]
    (no atomics)."""
    pid_p = tl.program_id(1)
    writes_gates = pid_p == 0
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
        gate_ptrs = gates_ptr + rows[:, None] * gates_sr + units[None, :] * gates_sc
        i = tl.load(gate_ptrs, mask=ok, other=0.0)
        f = tl.load(gate_ptrs + H * gates_sc, mask=ok, other=0.0)
        g = tl.load(gate_ptrs + 2 * H * gates_sc, mask=ok, other=0.0)
        o = tl.load(gate_ptrs + 3 * H * gates_sc, mask=ok, other=0.0)
        c = _load_tile(c_ptr, rows, units, c_sr, c_sc, n_rows, H).to(tl.float32)
        c_prev = _load_state(c_prev_ptr, c_init_ptr, rows, units, c_prev_sr, c_prev_sc, c_init_sr, c_init_sc,
                             n_carried, n_rows, H)
        tanh_c = tanh_accurate(c)
        dc = dh * o * (1.0 - tanh_c * tanh_c)
        if HAS_DC_CARRY:
            dc += _load_state(dc_next_ptr, dc_final_ptr, rows, units, dc_next_sr, dc_next_sc, dc_final_sr,
                              dc_final_sc, n_next, n_rows, H)
        d_i = dc * g * i * (1.0 - i)
        d_f = dc * c_prev * f * (1.0 - f)
        d_g = dc * i * (1.0 - g * g)
        d_o = dh * tanh_c * o * (1.0 - o)
        dgate_ptrs = dgates_ptr + rows[:, None] * dgates_sr + units[None, :] * dgates_sc
        first = ok & writes_gates
        tl.store(dgate_ptrs, cast_rounded(d_i, dgates_ptr.dtype.element_ty), mask=first)
        tl.store(dgate_ptrs + H * dgates_sc, cast_rounded(d_f, dgates_ptr.dtype.element_ty), mask=first)
        tl.store(dgate_ptrs + 2 * H * dgates_sc, cast_rounded(d_g, dgates_ptr.dtype.element_ty), mask=first)
        tl.store(dgate_ptrs + 3 * H * dgates_sc, cast_rounded(d_o, dgates_ptr.dtype.element_ty), mask=first)
        _store_state(dc_prev_ptr, dc_init_ptr, rows, units, dc_prev_sr, dc_prev_sc, dc_init_sr, dc_init_sc,
                     n_carried, n_rows, H, dc * f, writes_gates)
        if BIAS_GRAD:
            bias_ptrs = dbias_ptr + tl.program_id(0) * dbias_sr + units * dbias_sc
            unit_ok = (units < H) & writes_gates
            tl.store(bias_ptrs, tl.sum(d_i, axis=0), mask=unit_ok)
            tl.store(bias_ptrs + H * dbias_sc, tl.sum(d_f, axis=0), mask=unit_ok)
            tl.store(bias_ptrs + 2 * H * dbias_sc, tl.sum(d_g, axis=0), mask=unit_ok)
            tl.store(bias_ptrs + 3 * H * dbias_sc, tl.sum(d_o, axis=0), mask=unit_ok)
        # dh_prev += dgates @ W_hh: W_hh[q*H + u, p] as [units, features] tiles.
        w_i = _load_tile(w_hh_ptr, units, features, w_hh_sr, w_hh_sc, H, P)
        w_f = _load_tile(w_hh_ptr + H * w_hh_sr, units, features, w_hh_sr, w_hh_sc, H, P)
        w_g = _load_tile(w_hh_ptr + 2 * H * w_hh_sr, units, features, w_hh_sr, w_hh_sc, H, P)
        w_o = _load_tile(w_hh_ptr + 3 * H * w_hh_sr, units, features, w_hh_sr, w_hh_sc, H, P)
        acc += dot_tf32_allowed(cast_rounded(d_i, w_i.dtype), w_i, TF32)
        acc += dot_tf32_allowed(cast_rounded(d_f, w_i.dtype), w_f, TF32)
        acc += dot_tf32_allowed(cast_rounded(d_g, w_i.dtype), w_g, TF32)
        acc += dot_tf32_allowed(cast_rounded(d_o, w_i.dtype), w_o, TF32)
    _store_state(dh_prev_ptr, dh_init_ptr, rows, features, dh_prev_sr, dh_prev_sc, dh_init_sr, dh_init_sc,
                 n_carried, n_rows, P, acc, True)


def _forward_tiles(n_rows: int, H: int) -> tuple[int, int, int, int]:
    """(BLOCK_B, BLOCK_H, BLOCK_K, num_warps) of a forward step: rows padded to tl.dot's
    16. Sized so that the kernel spills no registers on sm_80 or sm_90
    (benchmarks/static_report)."""
    if INTERPRETED:
        return 16, 32, 32, 4
    return min(32, max(16, next_power_of_2(n_rows))), 32 if H <= 256 else 64, 32, 8


def _backward_tiles(tf32: bool = False) -> tuple[int, int, int, int]:
    """(BLOCK_B, BLOCK_P, BLOCK_J, num_warps) of a backward step, which holds a dozen
    [rows, units] tiles at once: 16 rows, 32 features, 32-unit chunks, 8 warps is the
    largest measured that spills nothing on sm_80 and sm_90; with TF32 products (fp32
    tiles in the tensor cores' operand layout) 32-unit chunks spilled 36 bytes on sm_90,
    16-unit ones do not."""
    if INTERPRETED:
        return 16, 32, 32, 4
    return 16, 32, 16 if tf32 else 32, 8


class StepState:
    """Where a step reads its previous state and writes its gradients: the first
    `n_carried` rows from/to the `prev` tensors, the rest from/to the `init` ones."""

    def __init__(self, prev: Optional[torch.Tensor], init: torch.Tensor, n_carried: int):
        self.prev = init if prev is None else prev
        self.init = init
        self.n_carried = n_carried if prev is not None else 0

    def strides(self) -> tuple:
        return (*self.prev.stride(), *self.init.stride())


def lstm_step_forward(
    h: StepState, c: StepState, w_hh: torch.Tensor, n_rows: int,
    h_out: torch.Tensor, c_out: torch.Tensor, gates: torch.Tensor,
    x: Optional[torch.Tensor] = None, w_ih: Optional[torch.Tensor] = None, xw: Optional[torch.Tensor] = None,
    b_ih: Optional[torch.Tensor] = None, b_hh: Optional[torch.Tensor] = None,
) -> None:
    """One LSTM step for `n_rows` rows, into h_out [rows, H], c_out [rows, H] and the
    gate activations gates [rows, 4H] (fp32). h: state of P features (h rows from
    h.prev/h.init), c: of H; w_hh [4H, P]. The input comes as x [rows, I] with
    w_ih [4H, I], or projected, xw [rows, 4H]; biases b_ih, b_hh [4H] or None."""
    H, P = c_out.shape[1], w_hh.shape[1]
    if n_rows == 0 or H == 0:
        return
    I = x.shape[1] if x is not None else 0
    block_b, block_h, block_k, warps = _forward_tiles(n_rows, H)
    dummy = h.init
    lstm_step_forward_kernel[(ceil_div(n_rows, block_b), ceil_div(H, block_h))](
        x if x is not None else dummy, w_ih if w_ih is not None else dummy, xw if xw is not None else dummy,
        h.prev, h.init, c.prev, c.init, h.n_carried,
        w_hh, b_ih if b_ih is not None else dummy, b_hh if b_hh is not None else dummy,
        h_out, c_out, gates,
        n_rows, H, P, I,
        *(x.stride() if x is not None else (0, 0)), *(w_ih.stride() if w_ih is not None else (0, 0)),
        *(xw.stride() if xw is not None else (0, 0)),
        *h.strides(), *c.strides(), *w_hh.stride(),
        b_ih.stride(0) if b_ih is not None else 0, b_hh.stride(0) if b_hh is not None else 0,
        *h_out.stride(), *c_out.stride(), *gates.stride(),
        HAS_INPUT=x is not None, HAS_XW=xw is not None, HAS_BIAS=b_ih is not None,
        BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, TF32=fp32_products_in_tf32(w_hh.dtype), num_warps=warps,
    )


def lstm_step_backward(
    dh: Optional[torch.Tensor], dh_carry: Optional[StepState], dc_carry: Optional[StepState],
    gates: torch.Tensor, c: torch.Tensor, c_state: StepState, w_hh: torch.Tensor, n_rows: int,
    dgates: torch.Tensor, dc_state: StepState, dh_state: StepState, dbias: Optional[torch.Tensor] = None,
) -> None:
    """Backward of one step for `n_rows` rows.

    dh [rows, H]: the gradient reaching h' from the step's output (or None); dh_carry,
    dc_carry: the gradients reaching h' and c' from later (their `prev` rows from the
    next step, the rest from the final state), or None; gates, c: what the forward
    saved; c_state: where its previous c came from. Writes dgates [rows, 4H] and the
    gradients of the previous c and h (P features) to dc_state's and dh_state's tensors,
    split at their n_carried; and, given dbias [row blocks, 4H], the column sums of
    dgates per block of rows."""
    H, P = c.shape[1], w_hh.shape[1]
    if n_rows == 0 or H == 0:
        return
    tf32 = fp32_products_in_tf32(w_hh.dtype)
    block_b, block_p, block_j, warps = _backward_tiles(tf32)
    no_carry = StepState(None, gates, 0)
    dh_carry_or = dh_carry or no_carry
    dc_carry_or = dc_carry or no_carry
    n_next = (dh_carry or dc_carry or no_carry).n_carried
    lstm_step_backward_kernel[(ceil_div(n_rows, block_b), ceil_div(P, block_p))](
        dh if dh is not None else gates, dh_carry_or.prev, dh_carry_or.init, dc_carry_or.prev, dc_carry_or.init, n_next,
        gates, c, c_state.prev, c_state.init, c_state.n_carried,
        w_hh,
        dgates, dc_state.prev, dc_state.init, dh_state.prev, dh_state.init, dbias if dbias is not None else gates,
        n_rows, H, P,
        *(dh.stride() if dh is not None else (0, 0)), *dh_carry_or.strides(), *dc_carry_or.strides(),
        *gates.stride(), *c.stride(), *c_state.strides(), *w_hh.stride(),
        *dgates.stride(), *dc_state.strides(), *dh_state.strides(), *(dbias.stride() if dbias is not None else (0, 0)),
        HAS_DH=dh is not None, HAS_DH_CARRY=dh_carry is not None, HAS_DC_CARRY=dc_carry is not None,
        BIAS_GRAD=dbias is not None, BLOCK_B=block_b, BLOCK_P=block_p, BLOCK_J=block_j,
        TF32=tf32, num_warps=warps,
    )


def bias_grad_blocks(n_rows: int, H: int, P: int) -> int:
    """How many row blocks lstm_step_backward writes bias column sums for."""
    return ceil_div(n_rows, _backward_tiles()[0])
