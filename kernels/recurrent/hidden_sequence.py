"""One direction of one GRU or RNN (tanh, relu) layer over a whole (padded or packed)
sequence in one forward and one backward launch: the `sequence` variant of
hidden_layer.py's step loop, on the LSTM's grid (sequence_grid.py).

The input projection of every step arrives precomputed as xw [N, G*H] (b_ih included);
what stays is the recurrence, with b_hh, per step
    GRU (G = 3, gates r, z, n as torch):
        r = sigmoid(xw_r + h W_hr^T + b_hr);  z = sigmoid(xw_z + h W_hz^T + b_hz)
        n = tanh(xw_n + r * (h W_hn^T + b_hn));  h' = n + z * (h - n)
    RNN (G = 1):  h' = act((h W_hh^T + b_hh) + xw),  act tanh or relu (torch's order).
Each program owns slices of SLICE_UNITS hidden units: their rows of W_hh (forward) or
columns (backward). The new h of a step (forward) and its gate gradients (backward) are
exchanged through global memory behind a grid barrier, as in the LSTM's kernels.

What the forward saves for the backward is the step kernels' (gru_cell.py, rnn_cell.py):
r, z, n and hn = h W_hn^T + b_hn for the GRU (fp32 [N, 4H]), act's output for the RNNs
(fp32 [N, H]). The backward's gate gradients are theirs too: the GRU's (dr, dz, dn, dn *
r) [N, 4H], the RNNs' pre-activation gradient [N, H]; the weight gradients follow as
products over every step (packed_steps.recurrent_weight_gradients).

The gradient reaching a step's h_prev is dgates @ W_hh (over all units: exchanged) and,
for the GRU, z * dh' (each unit's own: kept by the program that owns the unit, in a
ping-pong carry, as the LSTM's c carry).

Under TRITON_INTERPRET=1 the grid is one program looping over every slice; the
multi-program path has never run on a GPU (sequence_grid.py).

Arithmetic as in the step kernels: saved values and gate gradients fp32; h and W_hh in
their dtype (fp32, fp16, bf16), h rounded to it before the product, products
accumulated in fp32 (TF32 where torch's fp32 matmul precision allows it).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..packed_steps import SAVED_PER_UNIT, bound_to_mode, final_rows, layer_backward_around, schedule_tensors
from ..runtime import cast_rounded, ceil_div, dot_tf32_allowed, fp32_products_in_tf32, sigmoid_accurate, tanh_accurate
from .sequence_grid import (NUM_STAGES, backward_phase, check_barriers, check_phases, grid_barrier, load_exchanged,
                            max_spins, plan)
from .step import _load_tile

# The on-chip limits of each mode's kernels (sequence_grid.ON_CHIP_LIMITS).
CELL = {"gru": "gru", "rnn_tanh": "rnn", "rnn_relu": "rnn"}
# Features per chunk where W_hh is re-read every step (not on chip), by cell and by the
# weights' dtype ("tf32": fp32 with TF32 products): of the gate columns in the backward's
# dgates @ W_hh, of h in the forward's h @ W_hh^T. At sequence_grid.REREAD_CHUNK (16)
# everywhere, ptxas spilled 8-16 bytes in the GRU's fp32 backward (sm_80 and sm_90, H =
# 768) and forward (sm_90, H = 200), its 16-bit backward (sm_90, H = 200) and the RNNs'
# TF32 backward (sm_90); at 32 or 64 everywhere, 8-52 bytes in other launches (the RNNs'
# backward on sm_90, the GRU's 16-bit backward on sm_80); at 128, 8 in the RNNs' fp32
# backward (sm_80). These compile clean in every dtype on both at H = 200 and 768 (the
# static report).
REREAD_CHUNK_BACKWARD = {
    "gru": {torch.float32: 64, "tf32": 64, torch.float16: 32, torch.bfloat16: 32},
    "rnn": {torch.float32: 16, "tf32": 128, torch.float16: 16, torch.bfloat16: 16},
}
REREAD_CHUNK_FORWARD = {
    "gru": {torch.float32: 64, "tf32": 64, torch.float16: 16, torch.bfloat16: 16},
    "rnn": {torch.float32: 64, "tf32": 64, torch.float16: 16, torch.bfloat16: 16},
}


def _chunk(p, table: dict, mode: str, dtype: torch.dtype) -> int:
    """The plan's reduction chunk where W_hh stays on chip (all of H), else the re-read
    chunk of `table` for this mode's cell and the products of `dtype`."""
    if p.on_chip:
        return p.block_k
    return table[CELL[mode]]["tf32" if fp32_products_in_tf32(dtype) else dtype]


@triton.jit
def _previous_h(out_ptr, h0_ptr, prev, rows, cols, carried, in_bounds, out_sr, out_sc, h0_sr, h0_sc):
    """h_prev [rows, cols] (fp32): the output of the step continued from (written before the
    last barrier, by any program) for the rows that continue, h0 for the rows that start."""
    return tl.where(carried,
                    load_exchanged(out_ptr + prev * out_sr, rows, cols, out_sr, out_sc,
                                   in_bounds & carried).to(tl.float32),
                    tl.load(h0_ptr + rows[:, None] * h0_sr + cols[None, :] * h0_sc,
                            mask=in_bounds & ~carried, other=0.0).to(tl.float32))


@triton.jit
def hidden_sequence_forward_kernel(
    xw_ptr, h0_ptr, w_hh_ptr, b_hh_ptr, out_ptr, saved_ptr,
    offsets_ptr, rows_ptr, prev_ptr, carried_ptr, counter_ptr,
    T, H, n_slices, max_spins,
    xw_sr, xw_sc, h0_sr, h0_sc, w_sr, w_sc, b_hh_s, out_sr, out_sc, saved_sr, saved_sc,
    GRU: tl.constexpr, RELU: tl.constexpr, HAS_B_HH: tl.constexpr, WEIGHTS_ON_CHIP: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, TF32: tl.constexpr,
):
    """All T steps, in processing order, for the slices of hidden units this program owns.

    xw [N, G*H] (strided); h0 [B, H]; w_hh [G*H, H]; b_hh [G*H] (HAS_B_HH; any stride);
    out [N, H] (xw's dtype); saved [N, S*H] fp32 (GRU: r, z, n, hn; RNN: act's output);
    schedule [T] each (int32, as sequence.py's); counter [1] int32, zero.
    WEIGHTS_ON_CHIP: this program owns exactly one slice and BLOCK_K >= H: its G [H,
    BLOCK_H] tiles of W_hh are loaded once."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_K)
    if WEIGHTS_ON_CHIP:
        # W_hh[q*H + u, k] as [k, u] tiles, one per gate, for the whole sequence.
        own = pid * BLOCK_H + tl.arange(0, BLOCK_H)
        w_r = _load_tile(w_hh_ptr, cols, own, w_sc, w_sr, H, H)
        if GRU:
            w_z = _load_tile(w_hh_ptr + H * w_sr, cols, own, w_sc, w_sr, H, H)
            w_n = _load_tile(w_hh_ptr + 2 * H * w_sr, cols, own, w_sc, w_sr, H, H)
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
                # GRU: r, z and the recurrent part of n; RNN: the one pre-activation (acc_r).
                acc_r = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                if GRU:
                    acc_z = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                    acc_n = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                for k0 in range(0, H, BLOCK_K):
                    ks = k0 + cols
                    h = _previous_h(out_ptr, h0_ptr, prev, rows, ks, carried, row_ok[:, None] & (ks < H)[None, :],
                                    out_sr, out_sc, h0_sr, h0_sc)
                    if not WEIGHTS_ON_CHIP:
                        w_r = _load_tile(w_hh_ptr, ks, units, w_sc, w_sr, H, H)
                        if GRU:
                            w_z = _load_tile(w_hh_ptr + H * w_sr, ks, units, w_sc, w_sr, H, H)
                            w_n = _load_tile(w_hh_ptr + 2 * H * w_sr, ks, units, w_sc, w_sr, H, H)
                    h = cast_rounded(h, w_r.dtype)  # exact: h holds values of that dtype
                    acc_r += dot_tf32_allowed(h, w_r, TF32)
                    if GRU:
                        acc_z += dot_tf32_allowed(h, w_z, TF32)
                        acc_n += dot_tf32_allowed(h, w_n, TF32)
                now = offset + rows
                ok = row_ok[:, None] & unit_ok[None, :]
                xw_ptrs = xw_ptr + now[:, None] * xw_sr + units[None, :] * xw_sc
                saved_ptrs = saved_ptr + now[:, None] * saved_sr + units[None, :] * saved_sc
                if GRU:
                    if HAS_B_HH:
                        acc_r += tl.load(b_hh_ptr + units * b_hh_s, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
                        acc_z += tl.load(b_hh_ptr + (H + units) * b_hh_s, mask=unit_ok,
                                         other=0.0).to(tl.float32)[None, :]
                        acc_n += tl.load(b_hh_ptr + (2 * H + units) * b_hh_s, mask=unit_ok,
                                         other=0.0).to(tl.float32)[None, :]
                    r = sigmoid_accurate(acc_r + tl.load(xw_ptrs, mask=ok, other=0.0).to(tl.float32))
                    z = sigmoid_accurate(acc_z + tl.load(xw_ptrs + H * xw_sc, mask=ok, other=0.0).to(tl.float32))
                    n = tanh_accurate(tl.load(xw_ptrs + 2 * H * xw_sc, mask=ok, other=0.0).to(tl.float32)
                                      + r * acc_n)
                    # This program's own units of h_prev: z carries them through.
                    h_prev = _previous_h(out_ptr, h0_ptr, prev, rows, units, carried, ok, out_sr, out_sc, h0_sr,
                                         h0_sc)
                    h_new = n + z * (h_prev - n)
                    tl.store(saved_ptrs, r, mask=ok)
                    tl.store(saved_ptrs + H * saved_sc, z, mask=ok)
                    tl.store(saved_ptrs + 2 * H * saved_sc, n, mask=ok)
                    tl.store(saved_ptrs + 3 * H * saved_sc, acc_n, mask=ok)
                else:
                    if HAS_B_HH:  # (h W_hh^T + b_hh) + xw, torch's order
                        acc_r += tl.load(b_hh_ptr + units * b_hh_s, mask=unit_ok, other=0.0).to(tl.float32)[None, :]
                    pre = acc_r + tl.load(xw_ptrs, mask=ok, other=0.0).to(tl.float32)
                    if RELU:
                        h_new = tl.maximum(pre, 0.0)
                    else:
                        h_new = tanh_accurate(pre)
                    tl.store(saved_ptrs, h_new, mask=ok)
                tl.store(out_ptr + now[:, None] * out_sr + units[None, :] * out_sc,
                         cast_rounded(h_new, out_ptr.dtype.element_ty), mask=ok)
        if t + 1 < T:
            grid_barrier(counter_ptr, (t + 1) * programs, max_spins)


@triton.jit
def hidden_sequence_backward_kernel(
    d_out_ptr, d_h_n_ptr, out_ptr, h0_ptr, saved_ptr, w_hh_ptr,
    dgates_ptr, carry_ptr, d_h0_ptr,
    offsets_ptr, rows_ptr, prev_ptr, carried_ptr, counter_ptr,
    T, H, B, n_slices, max_spins,
    d_out_sr, d_out_sc, d_h_n_sr, d_h_n_sc, out_sr, out_sc, h0_sr, h0_sc, saved_sr, saved_sc, w_sr, w_sc,
    GRU: tl.constexpr, RELU: tl.constexpr, S: tl.constexpr, HAS_D_OUT: tl.constexpr, HAS_D_H_N: tl.constexpr,
    WEIGHTS_ON_CHIP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_J: tl.constexpr,
    TF32: tl.constexpr,
):
    """Backward through all T steps, for the slices of hidden units this program owns.

    T + 1 phases, separated by grid barriers, as the LSTM's: phase j processes step T-1-j
    (`cur`, while j < T) and finishes step T-j (`done`, while j > 0). The gradient
    reaching done's h_prev, dgates[done] @ W_hh[:, units] (plus, for the GRU, the carry
    z * dh' of done's own units), is the carry into cur's h' for done's carried rows and
    d_h0 for the rest. For cur: dh' (d_out, plus that carry or d_h_n), then dgates[cur]
    and, for the GRU, z * dh' into the carry.

    d_out [N, H], d_h_n [B, H] (any dtype, strided; each only if HAS_*); out [N, H] and
    saved (the forward's); h0 [B, H]; w_hh [G*H, H]; dgates [N, S*H] fp32 contiguous
    (GRU: dr, dz, dn, dn * r; RNN: the pre-activation's); carry [2, B, H] fp32 contiguous
    (ping-pong between phases; GRU only); d_h0 [B, H] fp32 contiguous; S: dgates' and
    saved's values per unit (4 for the GRU, 1 for the RNNs); schedule as the forward's; counter [1] int32, zero. WEIGHTS_ON_CHIP: one slice per program and
    BLOCK_J >= H: its G [H, BLOCK_H] tiles of W_hh (W_hh[q*H + j, p] at (j, p)) are
    loaded once."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    js = tl.arange(0, BLOCK_J)
    if WEIGHTS_ON_CHIP:
        own = pid * BLOCK_H + tl.arange(0, BLOCK_H)
        w_r = _load_tile(w_hh_ptr, js, own, w_sr, w_sc, H, H)
        if GRU:
            w_z = _load_tile(w_hh_ptr + H * w_sr, js, own, w_sr, w_sc, H, H)
            w_n = _load_tile(w_hh_ptr + 2 * H * w_sr, js, own, w_sr, w_sc, H, H)
    for phase in range(0, T + 1):
        # done_carried: cur's rows that done continues.
        (has_cur, cur_offset, cur_rows, cur_prev, cur_carried, done_offset, done_rows,
         done_carried) = backward_phase(offsets_ptr, rows_ptr, prev_ptr, carried_ptr, T, phase)
        carry_in = carry_ptr + (phase % 2) * B * H
        carry_out = carry_ptr + ((phase + 1) % 2) * B * H
        n_rows = tl.maximum(cur_rows, done_rows)
        for s in range(pid, n_slices, programs):
            units = s * BLOCK_H + tl.arange(0, BLOCK_H)
            unit_ok = units < H
            for r0 in range(0, n_rows, BLOCK_B):
                rows = r0 + tl.arange(0, BLOCK_B)
                # dgates[done] @ W_hh[:, units], over the gate columns in chunks.
                reaching = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                done_ok = rows < done_rows
                for j0 in range(0, H, BLOCK_J):
                    j = j0 + js
                    mask = done_ok[:, None] & (j < H)[None, :]
                    if not WEIGHTS_ON_CHIP:
                        w_r = _load_tile(w_hh_ptr, j, units, w_sr, w_sc, H, H)
                        if GRU:
                            w_z = _load_tile(w_hh_ptr + H * w_sr, j, units, w_sr, w_sc, H, H)
                            w_n = _load_tile(w_hh_ptr + 2 * H * w_sr, j, units, w_sr, w_sc, H, H)
                    done_gates = dgates_ptr + done_offset * S * H
                    d_r = load_exchanged(done_gates, rows, j, S * H, 1, mask)
                    reaching += dot_tf32_allowed(cast_rounded(d_r, w_r.dtype), w_r, TF32)
                    if GRU:
                        d_z = load_exchanged(done_gates + H, rows, j, S * H, 1, mask)
                        d_hn = load_exchanged(done_gates + 3 * H, rows, j, S * H, 1, mask)
                        reaching += dot_tf32_allowed(cast_rounded(d_z, w_r.dtype), w_z, TF32)
                        reaching += dot_tf32_allowed(cast_rounded(d_hn, w_r.dtype), w_n, TF32)
                done_units = done_ok[:, None] & unit_ok[None, :]
                if GRU:
                    # z * dh' of done, this program's own units (written in the last phase).
                    reaching += tl.load(carry_in + rows[:, None] * H + units[None, :], mask=done_units, other=0.0)
                started = done_units & (rows >= done_carried)[:, None]
                tl.store(d_h0_ptr + rows[:, None] * H + units[None, :], reaching, mask=started)

                row_ok = rows < cur_rows
                ok = row_ok[:, None] & unit_ok[None, :]
                continued = (rows < done_carried)[:, None]
                now = cur_offset + rows
                dh = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
                if HAS_D_OUT:
                    dh += tl.load(d_out_ptr + now[:, None] * d_out_sr + units[None, :] * d_out_sc, mask=ok,
                                  other=0.0).to(tl.float32)
                if HAS_D_H_N:
                    dh += tl.load(d_h_n_ptr + rows[:, None] * d_h_n_sr + units[None, :] * d_h_n_sc,
                                  mask=ok & ~continued, other=0.0).to(tl.float32)
                dh += tl.where(continued, reaching, 0.0)
                saved_ptrs = saved_ptr + now[:, None] * saved_sr + units[None, :] * saved_sc
                dgate_ptrs = dgates_ptr + now[:, None] * S * H + units[None, :]
                if GRU:
                    r = tl.load(saved_ptrs, mask=ok, other=0.0)
                    z = tl.load(saved_ptrs + H * saved_sc, mask=ok, other=0.0)
                    n = tl.load(saved_ptrs + 2 * H * saved_sc, mask=ok, other=0.0)
                    hn = tl.load(saved_ptrs + 3 * H * saved_sc, mask=ok, other=0.0)
                    h_prev = _previous_h(out_ptr, h0_ptr, cur_prev, rows, units, (rows < cur_carried)[:, None], ok,
                                         out_sr, out_sc, h0_sr, h0_sc)
                    d_n = dh * (1.0 - z) * (1.0 - n * n)
                    tl.store(dgate_ptrs, d_n * hn * r * (1.0 - r), mask=ok)
                    tl.store(dgate_ptrs + H, dh * (h_prev - n) * z * (1.0 - z), mask=ok)
                    tl.store(dgate_ptrs + 2 * H, d_n, mask=ok)
                    tl.store(dgate_ptrs + 3 * H, d_n * r, mask=ok)
                    tl.store(carry_out + rows[:, None] * H + units[None, :], dh * z, mask=ok)
                else:
                    a = tl.load(saved_ptrs, mask=ok, other=0.0)
                    if RELU:
                        d_pre = tl.where(a > 0.0, dh, 0.0)
                    else:
                        d_pre = dh * (1.0 - a * a)
                    tl.store(dgate_ptrs, d_pre, mask=ok)
        if has_cur:
            grid_barrier(counter_ptr, (phase + 1) * programs, max_spins)


def hidden_sequence_forward(
    mode: str, xw: torch.Tensor, batch_sizes: list[int], h0: torch.Tensor, w_hh: torch.Tensor,
    b_hh: Optional[torch.Tensor], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden_layer_forward (hidden_layer.py) in one launch: mode "gru", "rnn_tanh" or
    "rnn_relu"; xw [N, G*H] (b_ih included), batch_sizes [T] (non-increasing, summing to
    N), h0 [B, H], w_hh [G*H, H], b_hh [G*H] or None. Returns out [N, H], h_n [B, H]
    and saved [N, S*H] (fp32) for the backward."""
    N, H = xw.shape[0], w_hh.shape[1]
    B = h0.shape[0]
    device = xw.device
    out = torch.empty(N, H, dtype=xw.dtype, device=device)
    saved = torch.empty(N, SAVED_PER_UNIT[mode] * H, dtype=torch.float32, device=device)
    if N == 0 or H == 0:
        return out, h0.clone(), saved
    (offsets, rows, prev, carried), steps = schedule_tensors(batch_sizes, reverse, device)
    p = plan(H, w_hh.dtype, device, cell=CELL[mode])
    check_phases(len(steps), p.programs)
    counter = torch.zeros(1, dtype=torch.int32, device=device)
    hidden_sequence_forward_kernel[(p.programs,)](
        xw, h0, w_hh, b_hh if b_hh is not None else w_hh, out, saved,
        offsets, rows, prev, carried, counter,
        len(steps), H, ceil_div(H, p.block_h), max_spins(),
        *xw.stride(), *h0.stride(), *w_hh.stride(), b_hh.stride(0) if b_hh is not None else 0,
        *out.stride(), *saved.stride(),
        GRU=mode == "gru", RELU=mode == "rnn_relu", HAS_B_HH=b_hh is not None, WEIGHTS_ON_CHIP=p.on_chip,
        BLOCK_B=p.block_b, BLOCK_H=p.block_h,
        BLOCK_K=_chunk(p, REREAD_CHUNK_FORWARD, mode, w_hh.dtype), TF32=fp32_products_in_tf32(w_hh.dtype),
        num_warps=p.warps, num_stages=NUM_STAGES,
    )
    check_barriers(counter, f"{mode}_sequence_forward", p.programs)
    return out, out[final_rows(steps, B).to(device)], saved


def hidden_sequence_backward(
    mode: str, d_out: Optional[torch.Tensor], d_h_n: Optional[torch.Tensor], out: torch.Tensor, saved: torch.Tensor,
    h0: torch.Tensor, w_hh: torch.Tensor, batch_sizes: list[int], reverse: bool, has_b_hh: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """hidden_layer_backward (hidden_layer.py) with one launch for every step's gate
    gradients, then the recurrent weight gradient over all steps. Returns d_xw [N, G*H],
    d_h0 [B, H], d_w_hh [G*H, H] and d_b_hh (None unless has_b_hh)."""
    H, B = w_hh.shape[1], h0.shape[0]

    def gate_gradients(dgates, d_h0, schedule, steps):
        offsets, rows, prev, carried = schedule
        p = plan(H, w_hh.dtype, out.device, cell=CELL[mode])
        check_phases(len(steps), p.programs)
        carry = torch.zeros(2, B, H, dtype=torch.float32, device=out.device) if mode == "gru" else dgates
        counter = torch.zeros(1, dtype=torch.int32, device=out.device)
        dummy = saved
        hidden_sequence_backward_kernel[(p.programs,)](
            d_out if d_out is not None else dummy, d_h_n if d_h_n is not None else dummy, out, h0, saved, w_hh,
            dgates, carry, d_h0,
            offsets, rows, prev, carried, counter,
            len(steps), H, B, ceil_div(H, p.block_h), max_spins(),
            *(d_out.stride() if d_out is not None else (0, 0)), *(d_h_n.stride() if d_h_n is not None else (0, 0)),
            *out.stride(), *h0.stride(), *saved.stride(), *w_hh.stride(),
            GRU=mode == "gru", RELU=mode == "rnn_relu", S=SAVED_PER_UNIT[mode], HAS_D_OUT=d_out is not None,
            HAS_D_H_N=d_h_n is not None, WEIGHTS_ON_CHIP=p.on_chip, BLOCK_B=p.block_b, BLOCK_H=p.block_h,
            BLOCK_J=_chunk(p, REREAD_CHUNK_BACKWARD, mode, w_hh.dtype),
            TF32=fp32_products_in_tf32(w_hh.dtype), num_warps=p.warps, num_stages=NUM_STAGES,
        )
        check_barriers(counter, f"{mode}_sequence_backward", p.programs)

    return layer_backward_around(mode, d_h_n, out, h0, w_hh, batch_sizes, reverse, has_b_hh, gate_gradients)


gru_sequence_forward, gru_sequence_backward = bound_to_mode("gru", hidden_sequence_forward,
                                                             hidden_sequence_backward, "sequence")
rnn_tanh_sequence_forward, rnn_tanh_sequence_backward = bound_to_mode("rnn_tanh", hidden_sequence_forward,
                                                                       hidden_sequence_backward, "sequence")
rnn_relu_sequence_forward, rnn_relu_sequence_backward = bound_to_mode("rnn_relu", hidden_sequence_forward,
                                                                       hidden_sequence_backward, "sequence")
