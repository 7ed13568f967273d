"""One direction of one LSTM layer over a whole (padded or packed) sequence in one
forward and one backward launch: the `sequence` variant of layer.py's step loop.

Gate order i, f, g, o, as torch. The input projection of every step (biases included)
arrives precomputed as xw [N, 4H]; what stays is the recurrence, per step
    gates = xw[step] + h_prev @ W_hh^T;  c' = f * c + i * g;  h' = o * tanh(c').
Each program owns slices of BLOCK_H hidden units: their rows of W_hh (forward) or columns
(backward: dh_prev = dgates @ W_hh needs W_hh[:, units]). The state one step hands the
next is exchanged through global memory: h (forward) and the gate gradients (backward)
of a step are written by every program for its units, then all programs meet at a
grid-wide barrier before the next step reads them whole. The cell state and its gradient
never cross programs (a unit's c depends only on that unit), so only h and dgates do.

The grid, the barrier and where W_hh's slices are kept: sequence_grid.py. The
launches of the sequence variant (seqops.backends.triton) keep them on chip up to H =
128 in fp32, 64 in fp16 and bf16, and re-read them from L2 every step above.

With a projection (proj_size P < H: h = (o * tanh(c)) @ W_hr^T), a step's new h needs
every unit's o * tanh(c'), so each step takes two phases: the cell over slices of the H
units, writing h_raw, then, after a barrier, the projection over slices of the P
features. The backward likewise: the gradient reaching the projected output over P
slices, then, after a barrier, the gate gradients over H slices. W_hr, and in the
backward W_hh, are read per step (on chip they spilled registers; see PROJECTION_CHUNK).

Under TRITON_INTERPRET=1 the grid is one program looping over every slice (what CI
tests, with a one-step forward, which has no barrier, also split over several programs,
and a forced grid of two whose barrier times out and raises). The multi-program path
has never run on a GPU (sequence_grid.py).

Arithmetic as in step.py: cell state, saved gate activations and gate gradients fp32; h
and W_hh in their dtype (fp32, fp16, bf16), h rounded to it before the product, products
accumulated in fp32 (true fp32 for fp32, or TF32 where torch's fp32 matmul precision
allows it: runtime.fp32_products_in_tf32).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..packed_steps import final_rows, previous_rows, schedule_tensors, summed_over_rows
from ..runtime import cast_rounded, ceil_div, dot_tf32_allowed, fp32_products_in_tf32, sigmoid_accurate, tanh_accurate
from .sequence_grid import (NUM_STAGES, REREAD_CHUNK, backward_phase, check_barriers, check_phases, grid_barrier,
                            load_exchanged, max_spins, plan)
from .step import _load_tile

# Features read per chunk of the projection's products (proj_size): h_raw @ W_hr^T in the
# forward, d_total @ W_hr in the backward. W_hr is re-read every step (from L2), not kept
# on chip. With a projection the backward re-reads W_hh too (REREAD_CHUNK gate columns at
# a time): with its tiles on chip, or in chunks of 32 with W_hr's of 32, ptxas spilled
# 8-52 bytes (sm_80 or sm_90, fp32 or 16-bit, H 24 to 128), and a forward chunk of 64
# spilled 8 (bf16, sm_80); these compile without (the static report).
PROJECTION_CHUNK = {"forward": 32, "backward": 64}


@triton.jit
def _exchanged_product(a_base, a_sr, a_sc, rows, row_ok, K, w_ptr, w_sk, w_sc, cols, n_cols,
                       BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, TF32: tl.constexpr):
    """sum over k < K of a[rows, k] * w[k, cols], fp32 [BLOCK_B, BLOCK_C]: `a` written by
    every program before the last barrier (read from L2), w read BLOCK_R rows at a time,
    a rounded to w's dtype first (a no-op for h_raw, which has it)."""
    acc = tl.zeros([BLOCK_B, BLOCK_C], tl.float32)
    for k0 in range(0, K, BLOCK_R):
        ks = k0 + tl.arange(0, BLOCK_R)
        a = load_exchanged(a_base, rows, ks, a_sr, a_sc, row_ok[:, None] & (ks < K)[None, :])
        w = _load_tile(w_ptr, ks, cols, w_sk, w_sc, K, n_cols)
        acc += dot_tf32_allowed(cast_rounded(a.to(tl.float32), w.dtype), w, TF32)
    return acc


@triton.jit
def _project_step(h_raw_ptr, w_hr_ptr, out_ptr, offset, n_rows, H, P, n_out_slices, pid, programs,
                  h_raw_sr, h_raw_sc, w_hr_sr, w_hr_sc, out_sr, out_sc,
                  BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr, TF32: tl.constexpr):
    """out[step] = h_raw[step] @ w_hr^T for this program's slices of the P features: the
    step's h_raw rows (from offset, n_rows of them), written by every program before the
    last barrier, against w_hr [P, H] as [k, p] tiles."""
    for s in range(pid, n_out_slices, programs):
        features = s * BLOCK_H + tl.arange(0, BLOCK_H)
        for r0 in range(0, n_rows, BLOCK_B):
            rows = r0 + tl.arange(0, BLOCK_B)
            row_ok = rows < n_rows
            # w_hr [P, H] as [k, p] tiles.
            acc = _exchanged_product(h_raw_ptr + offset * h_raw_sr, h_raw_sr, h_raw_sc, rows, row_ok, H,
                                     w_hr_ptr, w_hr_sc, w_hr_sr, features, P, BLOCK_B, BLOCK_H, BLOCK_R, TF32)
            now = offset + rows
            tl.store(out_ptr + now[:, None] * out_sr + features[None, :] * out_sc,
                     cast_rounded(acc, out_ptr.dtype.element_ty), mask=row_ok[:, None] & (features < P)[None, :])


@triton.jit
def lstm_sequence_forward_kernel(
    xw_ptr, h0_ptr, c0_ptr, w_hh_ptr, w_hr_ptr,
    out_ptr, h_raw_ptr, cells_ptr, gates_ptr,
    offsets_ptr, rows_ptr, prev_ptr, carried_ptr, counter_ptr,
    T, H, P, n_slices, n_out_slices, max_spins,
    xw_sr, xw_sc, h0_sr, h0_sc, c0_sr, c0_sc, w_sr, w_sc, w_hr_sr, w_hr_sc,
    out_sr, out_sc, h_raw_sr, h_raw_sc, cells_sr, cells_sc, gates_sr, gates_sc,
    PROJECTED: tl.constexpr, WEIGHTS_ON_CHIP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, TF32: tl.constexpr,
):
    """All T steps, in processing order, for the slices of hidden units this program
    owns (slice s = program, program + programs, ...).

    xw [N, 4H] (any dtype of the three, strided); h0 [B, P], c0 [B, H]; w_hh [4H, P];
    out [N, P] (xw's dtype), cells [N, H] and gates [N, 4H] (fp32, the activations i, f,
    g, o); schedule [T] each (int32): a step's first packed row, its rows, the first row
    of the step it continues from (-1: none) and how many of its rows continue (the rest
    start from h0, c0); counter [1] int32, zero. WEIGHTS_ON_CHIP: this program owns
    exactly one slice and BLOCK_K >= P: its four [P, BLOCK_H] tiles of W_hh are loaded
    once.

    PROJECTED (proj_size P < H): a step's h' (h_raw [N, H], xw's dtype) is projected,
    out = h_raw @ w_hr^T with w_hr [P, H], in a second phase over slices of the P
    features (n_out_slices), after a grid barrier, since each needs every unit's h';
    w_hr is read per step, BLOCK_R features at a time. Without it P = H, h_raw is out and
    w_hr unused."""
    if not PROJECTED:
        P = H
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_K)
    if WEIGHTS_ON_CHIP:
        # W_hh[q*H + u, k] as [k, u] tiles, one per gate, for the whole sequence.
        own = pid * BLOCK_H + tl.arange(0, BLOCK_H)
        w_i = _load_tile(w_hh_ptr, cols, own, w_sc, w_sr, P, H)
        w_f = _load_tile(w_hh_ptr + H * w_sr, cols, own, w_sc, w_sr, P, H)
        w_g = _load_tile(w_hh_ptr + 2 * H * w_sr, cols, own, w_sc, w_sr, P, H)
        w_o = _load_tile(w_hh_ptr + 3 * H * w_sr, cols, own, w_sc, w_sr, P, H)
    for t in range(0, T):
        offset = tl.load(offsets_ptr + t).to(tl.int64)
        n_rows = tl.load(rows_ptr + t)
        prev = tl.load(prev_ptr + t).to(tl.int64)
        n_carried = tl.load(carried_ptr + t)
        for s in range(pid, n_slices, programs):
            units = s * BLOCK_H + tl.arange(0, BLOCK_H)
            unit_ok = units < H
            for r0 in range(0, n_rows, BLOCK_B):
                rows = r0 + tl.arange(0, BLOCK_B)
                row_ok = rows < n_rows
                carried = (rows < n_carried)[:, None]
                acc_i = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                acc_f = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                acc_g = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                acc_o = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                for k0 in range(0, P, BLOCK_K):
                    ks = k0 + cols
                    in_bounds = row_ok[:, None] & (ks < P)[None, :]
                    # h_prev: the previous step's output (written by every program) for
                    # the rows that continue, h0 for the rows that start here.
                    h = tl.where(carried,
                                 load_exchanged(out_ptr + prev * out_sr, rows, ks, out_sr, out_sc,
                                                 in_bounds & carried).to(tl.float32),
                                 tl.load(h0_ptr + rows[:, None] * h0_sr + ks[None, :] * h0_sc,
                                         mask=in_bounds & ~carried, other=0.0).to(tl.float32))
                    if not WEIGHTS_ON_CHIP:
                        w_i = _load_tile(w_hh_ptr, ks, units, w_sc, w_sr, P, H)
                        w_f = _load_tile(w_hh_ptr + H * w_sr, ks, units, w_sc, w_sr, P, H)
                        w_g = _load_tile(w_hh_ptr + 2 * H * w_sr, ks, units, w_sc, w_sr, P, H)
                        w_o = _load_tile(w_hh_ptr + 3 * H * w_sr, ks, units, w_sc, w_sr, P, H)
                    h = cast_rounded(h, w_i.dtype)
                    acc_i += dot_tf32_allowed(h, w_i, TF32)
                    acc_f += dot_tf32_allowed(h, w_f, TF32)
                    acc_g += dot_tf32_allowed(h, w_g, TF32)
                    acc_o += dot_tf32_allowed(h, w_o, TF32)
                now = offset + rows
                ok = row_ok[:, None] & unit_ok[None, :]
                xw_ptrs = xw_ptr + now[:, None] * xw_sr + units[None, :] * xw_sc
                i = sigmoid_accurate(acc_i + tl.load(xw_ptrs, mask=ok, other=0.0).to(tl.float32))
                f = sigmoid_accurate(acc_f + tl.load(xw_ptrs + H * xw_sc, mask=ok, other=0.0).to(tl.float32))
                g = tanh_accurate(acc_g + tl.load(xw_ptrs + 2 * H * xw_sc, mask=ok, other=0.0).to(tl.float32))
                o = sigmoid_accurate(acc_o + tl.load(xw_ptrs + 3 * H * xw_sc, mask=ok, other=0.0).to(tl.float32))
                # c_prev: this program's own units, so no exchange (its own earlier stores).
                c = tl.where(carried,
                             tl.load(cells_ptr + (prev + rows)[:, None] * cells_sr + units[None, :] * cells_sc,
                                     mask=ok & carried, other=0.0),
                             tl.load(c0_ptr + rows[:, None] * c0_sr + units[None, :] * c0_sc,
                                     mask=ok & ~carried, other=0.0).to(tl.float32))
                c_new = f * c + i * g
                h_new = o * tanh_accurate(c_new)
                tl.store(cells_ptr + now[:, None] * cells_sr + units[None, :] * cells_sc, c_new, mask=ok)
                tl.store(h_raw_ptr + now[:, None] * h_raw_sr + units[None, :] * h_raw_sc,
                         cast_rounded(h_new, h_raw_ptr.dtype.element_ty), mask=ok)
                gate_ptrs = gates_ptr + now[:, None] * gates_sr + units[None, :] * gates_sc
                tl.store(gate_ptrs, i, mask=ok)
                tl.store(gate_ptrs + H * gates_sc, f, mask=ok)
                tl.store(gate_ptrs + 2 * H * gates_sc, g, mask=ok)
                tl.store(gate_ptrs + 3 * H * gates_sc, o, mask=ok)
        if PROJECTED:
            grid_barrier(counter_ptr, (2 * t + 1) * programs, max_spins)
            _project_step(h_raw_ptr, w_hr_ptr, out_ptr, offset, n_rows, H, P, n_out_slices, pid, programs,
                          h_raw_sr, h_raw_sc, w_hr_sr, w_hr_sc, out_sr, out_sc, BLOCK_B, BLOCK_H, BLOCK_R,
                          TF32)
            if t + 1 < T:
                grid_barrier(counter_ptr, (2 * t + 2) * programs, max_spins)
        elif t + 1 < T:
            grid_barrier(counter_ptr, (t + 1) * programs, max_spins)


@triton.jit
def _gate_gradients(dh, rows, units, row_ok, continued, now, cur_prev, cur_carried, H,
                    d_c_n_ptr, d_c_n_sr, d_c_n_sc, gates_ptr, gates_sr, gates_sc, cells_ptr, cells_sr, cells_sc,
                    c0_ptr, c0_sr, c0_sc, dgates_ptr, carry_in, carry_out, d_c0_ptr, HAS_D_C_N: tl.constexpr):
    """One block of rows of the step being processed, for this program's units: from dh
    (the gradient reaching h' [rows, units], fp32) and the c carry (or d_c_n for rows
    that end here: not `continued`), the step's dgates (pre-activation, fp32), and dc * f
    to the next c carry (rows carried from an earlier step) or d_c0 (rows that start here)."""
    ok = row_ok[:, None] & (units < H)[None, :]
    # The c carry: this program's own units, written in the last phase.
    dc_carry = tl.load(carry_in + rows[:, None] * H + units[None, :], mask=ok & continued, other=0.0)
    if HAS_D_C_N:
        dc_carry += tl.load(d_c_n_ptr + rows[:, None] * d_c_n_sr + units[None, :] * d_c_n_sc,
                            mask=ok & ~continued, other=0.0).to(tl.float32)
    gate_ptrs = gates_ptr + now[:, None] * gates_sr + units[None, :] * gates_sc
    i = tl.load(gate_ptrs, mask=ok, other=0.0)
    f = tl.load(gate_ptrs + H * gates_sc, mask=ok, other=0.0)
    g = tl.load(gate_ptrs + 2 * H * gates_sc, mask=ok, other=0.0)
    o = tl.load(gate_ptrs + 3 * H * gates_sc, mask=ok, other=0.0)
    c = tl.load(cells_ptr + now[:, None] * cells_sr + units[None, :] * cells_sc, mask=ok, other=0.0)
    carried = (rows < cur_carried)[:, None]
    c_prev = tl.where(carried,
                      tl.load(cells_ptr + (cur_prev + rows)[:, None] * cells_sr + units[None, :] * cells_sc,
                              mask=ok & carried, other=0.0),
                      tl.load(c0_ptr + rows[:, None] * c0_sr + units[None, :] * c0_sc,
                              mask=ok & ~carried, other=0.0).to(tl.float32))
    tanh_c = tanh_accurate(c)
    dc = dh * o * (1.0 - tanh_c * tanh_c) + dc_carry
    dgate_ptrs = dgates_ptr + now[:, None] * 4 * H + units[None, :]
    tl.store(dgate_ptrs, dc * g * i * (1.0 - i), mask=ok)
    tl.store(dgate_ptrs + H, dc * c_prev * f * (1.0 - f), mask=ok)
    tl.store(dgate_ptrs + 2 * H, dc * i * (1.0 - g * g), mask=ok)
    tl.store(dgate_ptrs + 3 * H, dh * tanh_c * o * (1.0 - o), mask=ok)
    tl.store(carry_out + rows[:, None] * H + units[None, :], dc * f, mask=ok & carried)
    tl.store(d_c0_ptr + rows[:, None] * H + units[None, :], dc * f, mask=ok & ~carried)


@triton.jit
def lstm_sequence_backward_kernel(
    d_out_ptr, d_h_n_ptr, d_c_n_ptr,
    gates_ptr, cells_ptr, c0_ptr, w_hh_ptr, w_hr_ptr,
    dgates_ptr, d_total_ptr, carry_c_ptr, d_h0_ptr, d_c0_ptr,
    offsets_ptr, rows_ptr, prev_ptr, carried_ptr, counter_ptr,
    T, H, P, B, n_slices, n_out_slices, max_spins,
    d_out_sr, d_out_sc, d_h_n_sr, d_h_n_sc, d_c_n_sr, d_c_n_sc,
    gates_sr, gates_sc, cells_sr, cells_sc, c0_sr, c0_sc, w_sr, w_sc, w_hr_sr, w_hr_sc,
    HAS_D_OUT: tl.constexpr, HAS_D_H_N: tl.constexpr, HAS_D_C_N: tl.constexpr, PROJECTED: tl.constexpr,
    WEIGHTS_ON_CHIP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_J: tl.constexpr,
    BLOCK_R: tl.constexpr, TF32: tl.constexpr,
):
    """Backward through all T steps, for the slices of hidden units this program owns.

    T + 1 phases, separated by grid barriers. Phase j processes step T-1-j (`cur`, while
    j < T) and finishes step T-j (`done`, the step phase j-1 processed, while j > 0):
    the gradient reaching done's h_prev, dgates[done] @ W_hh[:, features], is the h
    carry of cur for done's carried rows and d_h0 for the rest (which started there).
    For cur: the gradient reaching its output (d_out, plus that carry or d_h_n) and c'
    (the c carry of done, or d_c_n), then dgates[cur] [rows, 4H] (fp32, pre-activation),
    and dc * f to the c carry (rows that continue from an earlier step) or d_c0 (rows
    that start here).

    d_out [N, P], d_h_n [B, P], d_c_n [B, H] (any dtype, strided; each only if HAS_*);
    gates [N, 4H], cells [N, H] (fp32, from the forward); c0 [B, H]; w_hh [4H, P]; dgates
    [N, 4H] fp32; carry_c [2, B, H] fp32 (contiguous; ping-pong between phases); d_h0
    [B, P], d_c0 [B, H] fp32 contiguous; schedule as the forward's; counter [1] int32,
    zero. WEIGHTS_ON_CHIP: one slice per program and BLOCK_J >= H: its four [H, BLOCK_H]
    tiles of W_hh (W_hh[q*H + j, p] at (j, p)) are loaded once.

    PROJECTED (P < H, w_hr [P, H]): the gradient reaching cur's output is a gradient of
    the projection, d_total [N, P] (fp32, contiguous, kept for d_w_hr), written per slice
    of the P features; after a grid barrier, the gradient reaching h' is d_total[cur] @
    w_hr (read per step, BLOCK_R features at a time), per slice of the H units."""
    if not PROJECTED:
        # The same sizes, stated so that the compiler sees one mask for both: without it,
        # the fp32 backward at H = 128 spilled 16 bytes on sm_90.
        P = H
        n_out_slices = n_slices
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    js = tl.arange(0, BLOCK_J)
    if WEIGHTS_ON_CHIP:
        own = pid * BLOCK_H + tl.arange(0, BLOCK_H)
        w_i = _load_tile(w_hh_ptr, js, own, w_sr, w_sc, H, P)
        w_f = _load_tile(w_hh_ptr + H * w_sr, js, own, w_sr, w_sc, H, P)
        w_g = _load_tile(w_hh_ptr + 2 * H * w_sr, js, own, w_sr, w_sc, H, P)
        w_o = _load_tile(w_hh_ptr + 3 * H * w_sr, js, own, w_sr, w_sc, H, P)
    for phase in range(0, T + 1):
        # done_carried: cur's rows that done continues.
        (has_cur, cur_offset, cur_rows, cur_prev, cur_carried, done_offset, done_rows,
         done_carried) = backward_phase(offsets_ptr, rows_ptr, prev_ptr, carried_ptr, T, phase)
        carry_in = carry_c_ptr + (phase % 2) * B * H
        carry_out = carry_c_ptr + ((phase + 1) % 2) * B * H
        n_rows = tl.maximum(cur_rows, done_rows)
        # Slices of the features of h (H units, or the P features of the projection).
        for s in range(pid, n_out_slices, programs):
            features = s * BLOCK_H + tl.arange(0, BLOCK_H)
            feature_ok = features < P
            for r0 in range(0, n_rows, BLOCK_B):
                rows = r0 + tl.arange(0, BLOCK_B)
                # dgates[done] @ W_hh[:, features], over the 4H gate columns in chunks.
                reaching = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                done_ok = rows < done_rows
                for j0 in range(0, H, BLOCK_J):
                    j = j0 + js
                    mask = done_ok[:, None] & (j < H)[None, :]
                    if not WEIGHTS_ON_CHIP:
                        w_i = _load_tile(w_hh_ptr, j, features, w_sr, w_sc, H, P)
                        w_f = _load_tile(w_hh_ptr + H * w_sr, j, features, w_sr, w_sc, H, P)
                        w_g = _load_tile(w_hh_ptr + 2 * H * w_sr, j, features, w_sr, w_sc, H, P)
                        w_o = _load_tile(w_hh_ptr + 3 * H * w_sr, j, features, w_sr, w_sc, H, P)
                    done_gates = dgates_ptr + done_offset * 4 * H
                    d_i = load_exchanged(done_gates, rows, j, 4 * H, 1, mask)
                    d_f = load_exchanged(done_gates + H, rows, j, 4 * H, 1, mask)
                    d_g = load_exchanged(done_gates + 2 * H, rows, j, 4 * H, 1, mask)
                    d_o = load_exchanged(done_gates + 3 * H, rows, j, 4 * H, 1, mask)
                    reaching += dot_tf32_allowed(cast_rounded(d_i, w_i.dtype), w_i, TF32)
                    reaching += dot_tf32_allowed(cast_rounded(d_f, w_i.dtype), w_f, TF32)
                    reaching += dot_tf32_allowed(cast_rounded(d_g, w_i.dtype), w_g, TF32)
                    reaching += dot_tf32_allowed(cast_rounded(d_o, w_i.dtype), w_o, TF32)
                started = (done_ok & (rows >= done_carried))[:, None] & feature_ok[None, :]
                tl.store(d_h0_ptr + rows[:, None] * P + features[None, :], reaching, mask=started)

                row_ok = rows < cur_rows
                ok = row_ok[:, None] & feature_ok[None, :]
                continued = (rows < done_carried)[:, None]
                now = cur_offset + rows
                dh = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                if HAS_D_OUT:
                    dh += tl.load(d_out_ptr + now[:, None] * d_out_sr + features[None, :] * d_out_sc, mask=ok,
                                  other=0.0).to(tl.float32)
                if HAS_D_H_N:
                    dh += tl.load(d_h_n_ptr + rows[:, None] * d_h_n_sr + features[None, :] * d_h_n_sc,
                                  mask=ok & ~continued, other=0.0).to(tl.float32)
                dh += tl.where(continued, reaching, 0.0)
                if PROJECTED:
                    tl.store(d_total_ptr + now[:, None] * P + features[None, :], dh, mask=ok)
                else:
                    _gate_gradients(dh, rows, features, row_ok, continued, now, cur_prev, cur_carried, H,
                                    d_c_n_ptr, d_c_n_sr, d_c_n_sc, gates_ptr, gates_sr, gates_sc, cells_ptr,
                                    cells_sr, cells_sc, c0_ptr, c0_sr, c0_sc, dgates_ptr, carry_in, carry_out,
                                    d_c0_ptr, HAS_D_C_N)
        if PROJECTED:
            if has_cur:
                grid_barrier(counter_ptr, (2 * phase + 1) * programs, max_spins)
                for s in range(pid, n_slices, programs):
                    units = s * BLOCK_H + tl.arange(0, BLOCK_H)
                    for r0 in range(0, cur_rows, BLOCK_B):
                        rows = r0 + tl.arange(0, BLOCK_B)
                        row_ok = rows < cur_rows
                        now = cur_offset + rows
                        # d_total[cur] @ w_hr[:, units], over the P features in chunks.
                        dh = _exchanged_product(d_total_ptr + cur_offset * P, P, 1, rows, row_ok, P,
                                                w_hr_ptr, w_hr_sr, w_hr_sc, units, H, BLOCK_B, BLOCK_H, BLOCK_R,
                                                TF32)
                        continued = (rows < done_carried)[:, None]
                        _gate_gradients(dh, rows, units, row_ok, continued, now, cur_prev, cur_carried, H,
                                        d_c_n_ptr, d_c_n_sr, d_c_n_sc, gates_ptr, gates_sr, gates_sc, cells_ptr,
                                        cells_sr, cells_sc, c0_ptr, c0_sr, c0_sc, dgates_ptr, carry_in, carry_out,
                                        d_c0_ptr, HAS_D_C_N)
                grid_barrier(counter_ptr, (2 * phase + 2) * programs, max_spins)
        elif has_cur:
            grid_barrier(counter_ptr, (phase + 1) * programs, max_spins)


def lstm_sequence_forward(
    xw: torch.Tensor, batch_sizes: list[int], h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
    w_hr: Optional[torch.Tensor], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """lstm_layer_forward (layer.py) in one launch: xw [N, 4H] (biases included),
    batch_sizes [T] (non-increasing, summing to N), h0 [B, P], c0 [B, H], w_hh [4H, P],
    w_hr [P, H] or None (P = H). Returns out [N, P], h_n [B, P], c_n [B, H] and, for the
    backward, the gate activations [N, 4H] and cell states [N, H] (fp32), and h before
    the projection [N, H] (None without one)."""
    N, H = xw.shape[0], xw.shape[1] // 4
    B, P = h0.shape
    device = xw.device
    out = torch.empty(N, P, dtype=xw.dtype, device=device)
    h_raw = torch.empty(N, H, dtype=xw.dtype, device=device) if w_hr is not None else None
    cells = torch.empty(N, H, dtype=torch.float32, device=device)
    gates = torch.empty(N, 4 * H, dtype=torch.float32, device=device)
    if N == 0 or H == 0:
        return out, h0.clone(), c0.clone(), gates, cells, h_raw
    (offsets, rows, prev, carried), steps = schedule_tensors(batch_sizes, reverse, device)
    p = plan(H, w_hh.dtype, device, projected=w_hr is not None)
    check_phases(len(steps), p.programs)
    counter = torch.zeros(1, dtype=torch.int32, device=device)
    raw = h_raw if w_hr is not None else out
    lstm_sequence_forward_kernel[(p.programs,)](
        xw, h0, c0, w_hh, w_hr if w_hr is not None else w_hh, out, raw, cells, gates,
        offsets, rows, prev, carried, counter,
        len(steps), H, P, ceil_div(H, p.block_h), ceil_div(P, p.block_h), max_spins(),
        *xw.stride(), *h0.stride(), *c0.stride(), *w_hh.stride(), *(w_hr.stride() if w_hr is not None else (0, 0)),
        *out.stride(), *raw.stride(), *cells.stride(), *gates.stride(),
        PROJECTED=w_hr is not None, WEIGHTS_ON_CHIP=p.on_chip, BLOCK_B=p.block_b, BLOCK_H=p.block_h,
        BLOCK_K=p.block_k, BLOCK_R=PROJECTION_CHUNK["forward"], TF32=fp32_products_in_tf32(w_hh.dtype),
        num_warps=p.warps, num_stages=NUM_STAGES,
    )
    check_barriers(counter, "lstm_sequence_forward", p.programs)
    final = final_rows(steps, B).to(device)
    return out, out[final], cells[final].to(c0.dtype), gates, cells, h_raw


def lstm_sequence_backward(
    d_out: Optional[torch.Tensor], d_h_n: Optional[torch.Tensor], d_c_n: Optional[torch.Tensor],
    out: torch.Tensor, gates: torch.Tensor, cells: torch.Tensor, h_raw: Optional[torch.Tensor],
    h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor, w_hr: Optional[torch.Tensor],
    batch_sizes: list[int], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """lstm_layer_backward (layer.py) with one launch for every step's gate gradients,
    then d_W_hh (and d_W_hr) as one batched product over blocks of steps
    (packed_steps.summed_over_rows). Shapes as lstm_sequence_forward's; d_out [N, P], d_h_n
    [B, P], d_c_n [B, H] or None. Returns d_xw [N, 4H] (out's dtype), d_h0, d_c0, d_w_hh
    and d_w_hr (None without a projection)."""
    N, H = gates.shape[0], gates.shape[1] // 4
    B, P = h0.shape
    device = gates.device
    fp32 = dict(dtype=torch.float32, device=device)
    dgates = torch.empty(N, 4 * H, **fp32)
    d_h0, d_c0 = torch.zeros(B, P, **fp32), torch.zeros(B, H, **fp32)
    if N == 0 or H == 0:
        if d_h_n is not None:
            d_h0 += d_h_n
        if d_c_n is not None:
            d_c0 += d_c_n
        d_w_hr = torch.zeros_like(w_hr) if w_hr is not None else None
        return dgates.to(out.dtype), d_h0.to(h0.dtype), d_c0.to(c0.dtype), torch.zeros_like(w_hh), d_w_hr
    (offsets, rows, prev, carried), steps = schedule_tensors(batch_sizes, reverse, device)
    p = plan(H, w_hh.dtype, device)
    check_phases(len(steps), p.programs)
    carry_c = torch.zeros(2, B, H, **fp32)
    d_total = torch.empty(N, P, **fp32) if w_hr is not None else None
    counter = torch.zeros(1, dtype=torch.int32, device=device)
    dummy = gates
    lstm_sequence_backward_kernel[(p.programs,)](
        d_out if d_out is not None else dummy, d_h_n if d_h_n is not None else dummy,
        d_c_n if d_c_n is not None else dummy,
        gates, cells, c0, w_hh, w_hr if w_hr is not None else w_hh,
        dgates, d_total if d_total is not None else dummy, carry_c, d_h0, d_c0,
        offsets, rows, prev, carried, counter,
        len(steps), H, P, B, ceil_div(H, p.block_h), ceil_div(P, p.block_h), max_spins(),
        *(d_out.stride() if d_out is not None else (0, 0)), *(d_h_n.stride() if d_h_n is not None else (0, 0)),
        *(d_c_n.stride() if d_c_n is not None else (0, 0)),
        *gates.stride(), *cells.stride(), *c0.stride(), *w_hh.stride(),
        *(w_hr.stride() if w_hr is not None else (0, 0)),
        HAS_D_OUT=d_out is not None, HAS_D_H_N=d_h_n is not None, HAS_D_C_N=d_c_n is not None,
        PROJECTED=w_hr is not None, WEIGHTS_ON_CHIP=p.on_chip and w_hr is None, BLOCK_B=p.block_b,
        BLOCK_H=p.block_h, BLOCK_J=p.block_k if w_hr is None else REREAD_CHUNK,
        BLOCK_R=PROJECTION_CHUNK["backward"], TF32=fp32_products_in_tf32(w_hh.dtype), num_warps=p.warps,
        num_stages=NUM_STAGES,
    )
    check_barriers(counter, "lstm_sequence_backward", p.programs)
    h_prev = torch.cat([out, h0.to(out.dtype)])[previous_rows(steps, N).to(device)]
    d_w_hh = summed_over_rows(dgates.to(w_hh.dtype), h_prev.to(w_hh.dtype))
    d_w_hr = summed_over_rows(d_total.to(w_hr.dtype), h_raw) if w_hr is not None else None
    return dgates.to(out.dtype), d_h0.to(h0.dtype), d_c0.to(c0.dtype), d_w_hh, d_w_hr
