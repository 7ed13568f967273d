"""The attention backward: delta, then either one pass over blocks of keys that also adds
dQ in a fixed order ("fused", five products a tile) or dK/dV per block of keys and dQ per
block of queries ("split", seven), and the gradient of a float mask, reduced into the
mask's own shape. Both schedules are deterministic."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..masks import causal_key_range, causal_query_range
from ..runtime import INTERPRETED, cast_rounded, ceil_div, dot
from .common import (MASK_FLOAT, descriptor_loads, grad_scores, head_block, head_slice, load_block, load_rows,
                     mask_operand, needs_int64_offsets, query_block_of_program, row_source, score_units,
                     tile_pointers)
from .backward_schedule import SCHEDULES, schedule_for
from .tuning import SMALLEST_BLOCK_M, autotune, delta_rows, dmask_tile, length_bucket


@triton.jit
def attention_backward_delta_kernel(
    out_ptr, do_ptr, delta_ptr, n_heads, L, out_strides, do_strides,
    HEAD_DIM_V: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, INT64_OFFSETS: tl.constexpr,
):
    """delta = rowsum(dO * O) [B, H, L] in fp32, the softmax backward's row term. Each
    *_strides is its tensor's (batch, head, row, column) strides."""
    start_m, bh, b, h, _ = query_block_of_program(n_heads, 1, L, BLOCK_M)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    o = load_rows(head_slice(out_ptr, out_strides, b, h), offs_m, offs_dv, out_strides[2], out_strides[3],
                  L, HEAD_DIM_V, INT64_OFFSETS)
    do = load_rows(head_slice(do_ptr, do_strides, b, h), offs_m, offs_dv, do_strides[2], do_strides[3],
                   L, HEAD_DIM_V, INT64_OFFSETS)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(delta_ptr + bh.to(tl.int64) * L + offs_m, delta, mask=offs_m < L)


@triton.jit(do_not_specialize=["seed", "causal_offset"])
def attention_backward_delta_from_probs_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr,
    n_heads, group_size, L, S,
    q_strides, k_strides, v_strides, mask_strides, do_strides,
    scale, dropout_p, seed, causal_offset,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, INT64_OFFSETS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """delta = rowsum(P * dP) [B, H, L] in fp32, recomputed over every key: the same
    quantity as rowsum(dO * O) without the rounding of O to the output dtype. A float
    mask's gradient sums dS = P * (dP - delta) over queries and heads, where that
    rounding (about one bf16 ulp of delta per row) would add up to more than the
    rounding of the gradient itself; the float-mask path pays this extra pass for it.
    Each *_strides is its tensor's (batch, head, row, column) strides."""
    start_m, bh, b, h, h_kv = query_block_of_program(n_heads, group_size, L, BLOCK_M)
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = score_units(scale, EXACT)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = load_rows(head_slice(q_ptr, q_strides, b, h), offs_m, offs_d, q_strides[2], q_strides[3],
                  L, HEAD_DIM, INT64_OFFSETS)
    do = load_rows(head_slice(do_ptr, do_strides, b, h), offs_m, offs_dv, do_strides[2], do_strides[3],
                   L, HEAD_DIM_V, INT64_OFFSETS)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=float("inf"))
    no_delta = tl.zeros([BLOCK_M], tl.float32)
    mask_base = head_slice(mask_ptr, mask_strides, b, h)
    hi = causal_key_range(start_m, BLOCK_M, BLOCK_N, S, causal_offset)[1] if CAUSAL else S
    delta = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = load_rows(head_slice(k_ptr, k_strides, b, h_kv), offs_n, offs_d, k_strides[2], k_strides[3],
                      S, HEAD_DIM, INT64_OFFSETS)
        v = load_rows(head_slice(v_ptr, v_strides, b, h_kv), offs_n, offs_dv, v_strides[2], v_strides[3],
                      S, HEAD_DIM_V, INT64_OFFSETS)
        # With delta 0, grad_scores' dS is P * dP (dP scaled by dropout's keep mask).
        _, p_dp = grad_scores(q, k, v, do, lse, no_delta, offs_m, offs_n, mask_base, mask_strides[2], mask_strides[3],
                              L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
                              MASK_FLOAT, CAUSAL, True, DROPOUT, EXACT, INT64_OFFSETS)
        delta += tl.sum(p_dp, axis=1)
    tl.store(delta_ptr + bh.to(tl.int64) * L + offs_m, delta, mask=offs_m < L)


@triton.jit
def _take_dq_turn(dq_part, acc_ptrs, dq_ptrs, tile_ok, turn_ptr, rank, final, max_spins, scale):
    """Add one key block's contribution dq_part to a block of queries' dQ in its turn:
    after the `rank` key blocks before it in the block's fixed order (the counter at
    turn_ptr counts those done), so that every run sums in the same order. The first
    stores its part to the fp32 accumulator (acc_ptrs), the middle ones add to it, the
    `final` one writes dQ itself (scaled, in dQ's dtype; no accumulator is ever zeroed).

    The CTA barrier makes this program's stores precede its release add; the acquire
    reads, then a CTA barrier, make the predecessor's stores visible to every thread
    here, and the accumulator is read from L2 (".cg"), not from this SM's L1, which is
    not coherent across SMs. A turn that never comes within max_spins polls (a bug: a
    predecessor always holds an earlier ticket, so it is running or done) gives NaN,
    not a wrong number. Branches are masks, not ifs: an if around tensor work inside the
    loop over query blocks made Triton's sm_90 software pipeliner fail (triton 3.6)."""
    done = tl.atomic_add(turn_ptr, 0, sem="acquire")
    spins = 0
    while (done < rank) & (spins < max_spins):
        done = tl.atomic_add(turn_ptr, 0, sem="acquire")
        spins += 1
    tl.debug_barrier()
    dq_part += tl.load(acc_ptrs, mask=tile_ok & (rank > 0), other=0.0, cache_modifier=".cg")
    dq_part = tl.where(done < rank, float("nan"), dq_part)
    tl.store(dq_ptrs, cast_rounded(dq_part * scale, dq_ptrs.dtype.element_ty), mask=tile_ok & final)
    tl.store(acc_ptrs, dq_part, mask=tile_ok & (final == 0))
    tl.debug_barrier()
    tl.atomic_add(turn_ptr, 1, sem="release")


@triton.jit
def _dkdv_query_blocks(
    dk, dv, k, v, q_source, do_source, lse_base, delta_base, mask_base, q_strides, do_strides, mask_strides,
    offs_n, lo, hi, L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed, bh, dq_turns,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr, EXACT: tl.constexpr, INT64_OFFSETS: tl.constexpr, TENSOR_DESCRIPTORS: tl.constexpr,
    DQ_TURNS: tl.constexpr,
):
    """dK, dV contributions of query blocks [lo, hi) to one block of keys, and with
    DQ_TURNS their dQ = dS K too, added in turn (_take_dq_turn). q_source, do_source:
    row_sources of the (batch, head) slices; *_base: the slices of the others; *_strides:
    the tensors' (batch, head, row, column). dq_turns (read only with DQ_TURNS): (dQ
    accumulator slice, dQ slice, their strides, this head's turn counters, this key
    block's index, the causal offset the turn order follows (S past every key when not
    causal), polls before giving up, scale)."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = load_block(q_source, q_strides, start_m, offs_m, offs_d, L, HEAD_DIM, INT64_OFFSETS, TENSOR_DESCRIPTORS)
        do = load_block(do_source, do_strides, start_m, offs_m, offs_dv, L, HEAD_DIM_V, INT64_OFFSETS,
                        TENSOR_DESCRIPTORS)
        lse = tl.load(lse_base + offs_m, mask=offs_m < L, other=float("inf"))
        delta = tl.load(delta_base + offs_m, mask=offs_m < L, other=0.0)
        # With dQ, keys past S must give P = 0: their zero rows of k would turn an
        # overflowed P into NaN in dS K (dK and dV drop those rows anyway).
        p, ds = grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, mask_strides[2], mask_strides[3], L, S,
                            qk_scale, mask_scale, causal_offset, dropout_p, seed, bh, MASK_KIND, CAUSAL, DQ_TURNS,
                            DROPOUT, EXACT, INT64_OFFSETS)
        ds_rounded = cast_rounded(ds, q.dtype)
        dv += dot(tl.trans(cast_rounded(p, do.dtype)), do)
        dk += dot(tl.trans(ds_rounded), q)
        if DQ_TURNS:
            acc_base, dq_base, acc_strides, dq_strides, turns_base, key_block, turn_offset, max_spins, scale = dq_turns
            # This block of queries takes contributions from key blocks 0..last, last
            # first: this key block's turn is last - key_block, and block 0 writes dQ.
            last = (causal_key_range(start_m, BLOCK_M, BLOCK_N, S, turn_offset)[1] - 1) // BLOCK_N
            tile_ok = (offs_m < L)[:, None] & (offs_d < HEAD_DIM)[None, :]
            _take_dq_turn(dot(ds_rounded, k),
                          tile_pointers(acc_base, offs_m, offs_d, acc_strides[2], acc_strides[3], INT64_OFFSETS),
                          tile_pointers(dq_base, offs_m, offs_d, dq_strides[2], dq_strides[3], INT64_OFFSETS),
                          tile_ok, turns_base + start_m // BLOCK_M, last - key_block, key_block == 0, max_spins, scale)
    return dk, dv


@triton.jit
def _key_block_gradients(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dq_ptr, dq_acc_ptr, turns_ptr,
    key_block, bh_kv, n_heads, group_size, L, S, max_spins,
    q_strides, k_strides, v_strides, mask_strides, do_strides, dk_strides, dv_strides, dq_strides, dq_acc_strides,
    scale, dropout_p, seed, causal_offset,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, INT64_OFFSETS: tl.constexpr,
    TENSOR_DESCRIPTORS: tl.constexpr, DQ_TURNS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dK, dV of one block of keys of one (batch, key/value head), summed over the query
    heads of its GQA group and their query blocks; with DQ_TURNS also each block's part
    of dQ, in turn (_take_dq_turn). The arguments are the kernels'."""
    start_n = key_block * BLOCK_N
    n_kv_heads = n_heads // group_size
    # Batch and heads in int64: the base offset of a (batch, head) slice must not wrap.
    b = (bh_kv // n_kv_heads).to(tl.int64)
    h_kv = (bh_kv % n_kv_heads).to(tl.int64)
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = score_units(scale, EXACT)

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    k_source = row_source(k_ptr, k_strides, b, h_kv, S, HEAD_DIM, BLOCK_N, BLOCK_D, TENSOR_DESCRIPTORS)
    v_source = row_source(v_ptr, v_strides, b, h_kv, S, HEAD_DIM_V, BLOCK_N, BLOCK_DV, TENSOR_DESCRIPTORS)
    k = load_block(k_source, k_strides, start_n, offs_n, offs_d, S, HEAD_DIM, INT64_OFFSETS, TENSOR_DESCRIPTORS)
    v = load_block(v_source, v_strides, start_n, offs_n, offs_dv, S, HEAD_DIM_V, INT64_OFFSETS, TENSOR_DESCRIPTORS)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    if CAUSAL:
        # Query blocks before lo see none of these keys; those up to unmasked_start run
        # masked; later ones see them all.
        lo, unmasked_start = causal_query_range(start_n, BLOCK_N, BLOCK_M, L, causal_offset)
        turn_offset = causal_offset
    else:
        lo = 0
        unmasked_start = 0
        turn_offset = S
    for g in range(group_size):
        h = h_kv * group_size + g
        bh = b * n_heads + h
        q_source = row_source(q_ptr, q_strides, b, h, L, HEAD_DIM, BLOCK_M, BLOCK_D, TENSOR_DESCRIPTORS)
        do_source = row_source(do_ptr, do_strides, b, h, L, HEAD_DIM_V, BLOCK_M, BLOCK_DV, TENSOR_DESCRIPTORS)
        mask_base = head_slice(mask_ptr, mask_strides, b, h)
        dq_base = head_slice(dq_ptr, dq_strides, b, h)
        dq_turns = (head_slice(dq_acc_ptr, dq_acc_strides, b, h), dq_base, dq_acc_strides, dq_strides,
                    turns_ptr + 1 + bh * tl.cdiv(L, BLOCK_M), key_block, turn_offset, max_spins, scale)
        if DQ_TURNS:
            # Query blocks that see no key at all (before key block 0's first, causal
            # only) get no turn: block 0 writes their zero dQ.
            zero_end = tl.where(key_block == 0, lo, 0)
            for start_m in range(0, zero_end, BLOCK_M):
                offs_m = start_m + tl.arange(0, BLOCK_M)
                tl.store(tile_pointers(dq_base, offs_m, offs_d, dq_strides[2], dq_strides[3], INT64_OFFSETS),
                         tl.zeros([BLOCK_M, BLOCK_D], dq_ptr.dtype.element_ty),
                         mask=(offs_m < L)[:, None] & (offs_d < HEAD_DIM)[None, :])
        dk, dv = _dkdv_query_blocks(
            dk, dv, k, v, q_source, do_source, lse_ptr + bh * L, delta_ptr + bh * L, mask_base,
            q_strides, do_strides, mask_strides, offs_n, lo, unmasked_start, L, S,
            qk_scale, mask_scale, causal_offset, dropout_p, seed, bh.to(tl.int32), dq_turns,
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, BLOCK_N, MASK_KIND, CAUSAL, DROPOUT, EXACT,
            INT64_OFFSETS, TENSOR_DESCRIPTORS, DQ_TURNS)
        dk, dv = _dkdv_query_blocks(
            dk, dv, k, v, q_source, do_source, lse_ptr + bh * L, delta_ptr + bh * L, mask_base,
            q_strides, do_strides, mask_strides, offs_n, unmasked_start, L, L, S,
            qk_scale, mask_scale, causal_offset, dropout_p, seed, bh.to(tl.int32), dq_turns,
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, BLOCK_N, MASK_KIND, False, DROPOUT, EXACT,
            INT64_OFFSETS, TENSOR_DESCRIPTORS, DQ_TURNS)
    key_ok = (offs_n < S)[:, None]
    dk_ptrs = tile_pointers(head_slice(dk_ptr, dk_strides, b, h_kv), offs_n, offs_d, dk_strides[2], dk_strides[3],
                            INT64_OFFSETS)
    tl.store(dk_ptrs, cast_rounded(dk * scale, dk_ptr.dtype.element_ty), mask=key_ok & (offs_d < HEAD_DIM)[None, :])
    dv_ptrs = tile_pointers(head_slice(dv_ptr, dv_strides, b, h_kv), offs_n, offs_dv, dv_strides[2], dv_strides[3],
                            INT64_OFFSETS)
    tl.store(dv_ptrs, cast_rounded(dv, dv_ptr.dtype.element_ty), mask=key_ok & (offs_dv < HEAD_DIM_V)[None, :])


@autotune("backward_dkdv")
@triton.jit(do_not_specialize=["seed", "causal_offset", "length_bucket"])
def attention_backward_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    n_heads, group_size, L, S, length_bucket,
    q_strides, k_strides, v_strides, mask_strides, do_strides, dk_strides, dv_strides,
    scale, dropout_p, seed, causal_offset,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, INT64_OFFSETS: tl.constexpr,
    TENSOR_DESCRIPTORS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dK, dV for one block of BLOCK_N keys of one (batch, key/value head), summed over
    the query heads of its GQA group and over their query blocks (no atomics); dQ is the
    dQ kernel's. Each *_strides is its tensor's (batch, head, row, column) strides.
    length_bucket: the autotuner's key (tuning.length_bucket), not read here.
    TENSOR_DESCRIPTORS: q, k, v and dO are read through tensor descriptors (TMA on
    sm_90), not pointers."""
    n_blocks = tl.cdiv(S, BLOCK_N)
    _key_block_gradients(
        q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dk_ptr, dk_ptr, lse_ptr,
        tl.program_id(0) % n_blocks, tl.program_id(0) // n_blocks, n_heads, group_size, L, S, 0,
        q_strides, k_strides, v_strides, mask_strides, do_strides, dk_strides, dv_strides, dk_strides, dk_strides,
        scale, dropout_p, seed, causal_offset,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, MASK_KIND, CAUSAL, DROPOUT, INT64_OFFSETS, TENSOR_DESCRIPTORS,
        False, BLOCK_M, BLOCK_N)


@autotune("backward_fused", reset_to_zero=["turns_ptr"])
@triton.jit(do_not_specialize=["seed", "causal_offset", "length_bucket"])
def attention_backward_fused_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dq_ptr, dq_acc_ptr, turns_ptr,
    n_heads, group_size, L, S, length_bucket, max_spins,
    q_strides, k_strides, v_strides, mask_strides, do_strides, dk_strides, dv_strides, dq_strides, dq_acc_strides,
    scale, dropout_p, seed, causal_offset,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, INT64_OFFSETS: tl.constexpr,
    TENSOR_DESCRIPTORS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The whole backward after delta in one pass, five products a tile (S, dP, dV, dK,
    dQ): a program per block of keys computes its dK and dV as the dK/dV kernel does and
    adds dS K to dQ, one key block after another in a fixed order (deterministic; no
    atomics on data, no zeroed outputs). turns_ptr: int32 zeros, [0] the ticket counter,
    then one turn counter per (batch * head, block of BLOCK_M queries). dq_acc_ptr: fp32
    scratch of dQ's shape. max_spins: polls of a turn counter before giving up.

    Programs take their key block from a ticket, in launch order: the key blocks of one
    (batch, key/value head) from the last to the first, so that a block's predecessor in
    every dQ turn (the next key block) holds an earlier ticket and so is running or done;
    a program never waits on one that has not started (under the interpreter, where
    programs run one after another, no wait happens). Under a causal mask with BLOCK_M
    <= BLOCK_N the programs move in step (key block j + 1 is a tile ahead of j at each
    query block); the cost of the turns: benchmarks/static_report/turns_model.py."""
    n_blocks = tl.cdiv(S, BLOCK_N)
    ticket = tl.atomic_add(turns_ptr, 1, sem="relaxed")
    _key_block_gradients(
        q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dq_ptr, dq_acc_ptr, turns_ptr,
        n_blocks - 1 - ticket % n_blocks, ticket // n_blocks, n_heads, group_size, L, S, max_spins,
        q_strides, k_strides, v_strides, mask_strides, do_strides, dk_strides, dv_strides, dq_strides, dq_acc_strides,
        scale, dropout_p, seed, causal_offset,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, MASK_KIND, CAUSAL, DROPOUT, INT64_OFFSETS, TENSOR_DESCRIPTORS,
        True, BLOCK_M, BLOCK_N)


@triton.jit
def _dq_key_blocks(
    dq, q, do, lse, delta, k_source, v_source, mask_base, k_strides, v_strides, mask_strides,
    offs_m, lo, hi, L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
    DROPOUT: tl.constexpr, EXACT: tl.constexpr, INT64_OFFSETS: tl.constexpr, TENSOR_DESCRIPTORS: tl.constexpr,
):
    """dQ contributions of key blocks [lo, hi) to one block of queries. k_source, v_source:
    row_sources of the (batch, head) slices; mask_base: the mask's slice; *_strides: the
    tensors' (batch, head, row, column)."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = load_block(k_source, k_strides, start_n, offs_n, offs_d, S, HEAD_DIM, INT64_OFFSETS, TENSOR_DESCRIPTORS)
        v = load_block(v_source, v_strides, start_n, offs_n, offs_dv, S, HEAD_DIM_V, INT64_OFFSETS, TENSOR_DESCRIPTORS)
        p, ds = grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, mask_strides[2], mask_strides[3], L, S,
                            qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
                            MASK_KIND, CAUSAL and MASKED, MASKED, DROPOUT, EXACT, INT64_OFFSETS)
        dq += dot(cast_rounded(ds, k.dtype), k)
    return dq


@autotune("backward_dq")
@triton.jit(do_not_specialize=["seed", "causal_offset", "length_bucket"])
def attention_backward_dq_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    n_heads, group_size, L, S, length_bucket,
    q_strides, k_strides, v_strides, mask_strides, do_strides, dq_strides,
    scale, dropout_p, seed, causal_offset,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, INT64_OFFSETS: tl.constexpr,
    TENSOR_DESCRIPTORS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dQ for one block of BLOCK_M queries of one (batch, head), over its key blocks. Each
    *_strides is its tensor's (batch, head, row, column) strides. length_bucket: the
    autotuner's key (tuning.length_bucket), not read here. TENSOR_DESCRIPTORS: q, k, v and
    dO are read through tensor descriptors (TMA on sm_90), not pointers."""
    start_m, bh, b, h, h_kv = query_block_of_program(n_heads, group_size, L, BLOCK_M)
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = score_units(scale, EXACT)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_source = row_source(q_ptr, q_strides, b, h, L, HEAD_DIM, BLOCK_M, BLOCK_D, TENSOR_DESCRIPTORS)
    do_source = row_source(do_ptr, do_strides, b, h, L, HEAD_DIM_V, BLOCK_M, BLOCK_DV, TENSOR_DESCRIPTORS)
    q = load_block(q_source, q_strides, start_m, offs_m, offs_d, L, HEAD_DIM, INT64_OFFSETS, TENSOR_DESCRIPTORS)
    do = load_block(do_source, do_strides, start_m, offs_m, tl.arange(0, BLOCK_DV), L, HEAD_DIM_V, INT64_OFFSETS,
                    TENSOR_DESCRIPTORS)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=float("inf"))
    delta = tl.load(delta_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=0.0)
    k_source = row_source(k_ptr, k_strides, b, h_kv, S, HEAD_DIM, BLOCK_N, BLOCK_D, TENSOR_DESCRIPTORS)
    v_source = row_source(v_ptr, v_strides, b, h_kv, S, HEAD_DIM_V, BLOCK_N, BLOCK_DV, TENSOR_DESCRIPTORS)
    mask_base = head_slice(mask_ptr, mask_strides, b, h)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    if CAUSAL:
        unmasked_end, hi = causal_key_range(start_m, BLOCK_M, BLOCK_N, S, causal_offset)
    else:
        hi = S
        unmasked_end = (S // BLOCK_N) * BLOCK_N
    dq = _dq_key_blocks(dq, q, do, lse, delta, k_source, v_source, mask_base, k_strides, v_strides, mask_strides,
                        offs_m, 0, unmasked_end, L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
                        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N, MASK_KIND, CAUSAL, False, DROPOUT, EXACT, INT64_OFFSETS,
                        TENSOR_DESCRIPTORS)
    dq = _dq_key_blocks(dq, q, do, lse, delta, k_source, v_source, mask_base, k_strides, v_strides, mask_strides,
                        offs_m, unmasked_end, hi, L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
                        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N, MASK_KIND, CAUSAL, True, DROPOUT, EXACT, INT64_OFFSETS,
                        TENSOR_DESCRIPTORS)
    dq_ptrs = tile_pointers(head_slice(dq_ptr, dq_strides, b, h), offs_m, offs_d, dq_strides[2], dq_strides[3],
                            INT64_OFFSETS)
    tl.store(dq_ptrs, cast_rounded(dq * scale, dq_ptr.dtype.element_ty),
             mask=(offs_m < L)[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit(do_not_specialize=["seed", "causal_offset"])
def attention_backward_dmask_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dmask_ptr,
    n_heads, group_size, n_batch, L, S, mask_heads,
    q_strides, k_strides, v_strides, mask_strides, do_strides, dmask_strides,
    scale, dropout_p, seed, causal_offset,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, INT64_OFFSETS: tl.constexpr,
    REDUCE_B: tl.constexpr, REDUCE_H: tl.constexpr, REDUCE_L: tl.constexpr, REDUCE_S: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The gradient of a float mask: dS summed over the dims the mask broadcasts along
    (REDUCE_*), one tile of the mask's own [Bm, Hm, Lm, Sm] a program; dS is recomputed
    from the inputs, so nothing of size L x S is stored but the gradient itself. Each
    *_strides is its tensor's (batch, head, row, column) strides."""
    n_m_tiles = 1 if REDUCE_L else tl.cdiv(L, BLOCK_M)
    n_n_tiles = 1 if REDUCE_S else tl.cdiv(S, BLOCK_N)
    pid = tl.program_id(0)
    tile_n = pid % n_n_tiles
    tile_m = (pid // n_n_tiles) % n_m_tiles
    bhm = pid // (n_n_tiles * n_m_tiles)
    bm = bhm // mask_heads
    hm = bhm % mask_heads
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = score_units(scale, EXACT)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)

    b_lo, b_hi = (0, n_batch) if REDUCE_B else (bm, bm + 1)
    h_lo, h_hi = (0, n_heads) if REDUCE_H else (hm, hm + 1)
    m_lo, m_hi = (0, L) if REDUCE_L else (tile_m * BLOCK_M, tile_m * BLOCK_M + 1)
    n_lo, n_hi = (0, S) if REDUCE_S else (tile_n * BLOCK_N, tile_n * BLOCK_N + 1)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for b in range(b_lo, b_hi):
        # Batch and heads in int64: the base offset of a (batch, head) slice must not wrap.
        b64 = tl.cast(b, tl.int64)
        for h in range(h_lo, h_hi):
            h64 = tl.cast(h, tl.int64)
            bh = (b64 * n_heads + h64).to(tl.int32)
            h_kv = h64 // group_size
            mask_base = head_slice(mask_ptr, mask_strides, b64, h64)
            for start_m in range(m_lo, m_hi, BLOCK_M):
                offs_m = start_m + tl.arange(0, BLOCK_M)
                q = load_rows(head_slice(q_ptr, q_strides, b64, h64), offs_m, offs_d, q_strides[2], q_strides[3],
                              L, HEAD_DIM, INT64_OFFSETS)
                do = load_rows(head_slice(do_ptr, do_strides, b64, h64), offs_m, offs_dv, do_strides[2], do_strides[3],
                               L, HEAD_DIM_V, INT64_OFFSETS)
                lse = tl.load(lse_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=float("inf"))
                delta = tl.load(delta_ptr + bh.to(tl.int64) * L + offs_m, mask=offs_m < L, other=0.0)
                for start_n in range(n_lo, n_hi, BLOCK_N):
                    offs_n = start_n + tl.arange(0, BLOCK_N)
                    k = load_rows(head_slice(k_ptr, k_strides, b64, h_kv), offs_n, offs_d, k_strides[2], k_strides[3],
                                  S, HEAD_DIM, INT64_OFFSETS)
                    v = load_rows(head_slice(v_ptr, v_strides, b64, h_kv), offs_n, offs_dv, v_strides[2], v_strides[3],
                                  S, HEAD_DIM_V, INT64_OFFSETS)
                    p, ds = grad_scores(q, k, v, do, lse, delta, offs_m, offs_n, mask_base, mask_strides[2],
                                        mask_strides[3], L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed,
                                        bh, MASK_FLOAT, CAUSAL, True, DROPOUT, EXACT, INT64_OFFSETS)
                    acc += ds
    dm_base = head_slice(dmask_ptr, dmask_strides, bm.to(tl.int64), hm.to(tl.int64))
    rows = tl.arange(0, BLOCK_M) if REDUCE_L else tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N) if REDUCE_S else tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if REDUCE_L:
        acc = tl.sum(acc, axis=0)[None, :]
        rows = tl.arange(0, 1)
    if REDUCE_S:
        acc = tl.sum(acc, axis=1)[:, None]
        cols = tl.arange(0, 1)
    rows_end = 1 if REDUCE_L else L
    cols_end = 1 if REDUCE_S else S
    tl.store(tile_pointers(dm_base, rows, cols, dmask_strides[2], dmask_strides[3], INT64_OFFSETS),
             cast_rounded(acc, dmask_ptr.dtype.element_ty),
             mask=(rows < rows_end)[:, None] & (cols < cols_end)[None, :])


# The widest head (BLOCK_D, BLOCK_DV) the backward reads through tensor descriptors: at
# 256 the sm_90 compile of its dK/dV kernel spilled 0.8-2.8 KB with them (none without;
# benchmarks/results/static/triton_kernels.md), so 256 stays on pointer loads.
DESCRIPTOR_MAX_BLOCK_D = 128
# Polls of a dQ turn counter before a program gives up (and writes NaN): seconds on a GPU,
# where a turn waits for one tile of another running program; few under the
# interpreter, where a turn that is not already due never comes.
GPU_MAX_SPINS = 1 << 24
INTERPRETED_MAX_SPINS = 64


def attention_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, mask: Optional[torch.Tensor], dropout_p: float, is_causal: bool, causal_offset: int,
    scale: float, seed: int, mask_needs_grad: bool, tensor_descriptors: Optional[bool] = None,
    schedule: Optional[str] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Gradients of attention_forward: dq, dk, dv (contiguous, in the inputs' shapes and
    dtype) and, when mask_needs_grad (a float mask), dmask in the mask's own shape.
    tensor_descriptors: the dK/dV and dQ kernels read q, k, v and grad_out through tensor
    descriptors (TMA), up to head dims of DESCRIPTOR_MAX_BLOCK_D; None: as attention_forward
    decides it. schedule: "fused" or "split" (backward_schedule.SCHEDULES); None: as
    backward_schedule.schedule_for decides it."""
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    B, Hq, L, E = q.shape
    Hkv, S, Ev = k.shape[1], k.shape[2], v.shape[3]
    if B * Hq * L == 0 or S == 0 or Ev == 0:
        dmask = torch.zeros(mask.shape, dtype=mask.dtype, device=mask.device) if mask_needs_grad else None
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), dmask
    if schedule is None:
        args = (grad_out, q, k, v, out, lse, mask, dropout_p, is_causal, causal_offset, scale, seed, mask_needs_grad,
                tensor_descriptors)
        launch_class = (q.dtype, E, Ev, Hq // Hkv > 1, bool(is_causal), None if mask is None else mask.dtype,
                        mask_needs_grad, dropout_p > 0, length_bucket(L, S))
        schedule = schedule_for(launch_class, q.device, lambda chosen: attention_backward(*args, schedule=chosen))
    # Every kernel below writes the whole of its outputs: no zeroing pass.
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    dmask = torch.empty(mask.shape, dtype=mask.dtype, device=mask.device) if mask_needs_grad else None
    mask_kind, mask_arg, mask_strides = mask_operand(mask, (B, Hq, L, S), q)
    operands = [q, k, v, out, grad_out, dq, dk, dv] + ([mask_arg] if mask_kind else [])
    if dmask is not None:
        operands.append(dmask)
    int64_offsets = needs_int64_offsets(operands, (L, S) if dropout_p > 0 else None)
    dims = dict(HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=head_block(E), BLOCK_DV=head_block(Ev))
    flags = dict(MASK_KIND=mask_kind, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0, INT64_OFFSETS=int64_offsets)
    common = (float(scale), float(dropout_p), int(seed), int(causal_offset))
    if max(dims["BLOCK_D"], dims["BLOCK_DV"]) > DESCRIPTOR_MAX_BLOCK_D:
        tensor_descriptors = False
    matmul_flags = dict(flags, TENSOR_DESCRIPTORS=descriptor_loads(tensor_descriptors, [q, k, v, grad_out]))
    delta = torch.empty(B, Hq, L, dtype=torch.float32, device=q.device)
    if dmask is None:
        delta_block = delta_rows(head_block(Ev))
        attention_backward_delta_kernel[(ceil_div(L, delta_block) * B * Hq,)](
            out, grad_out, delta, Hq, L, out.stride(), grad_out.stride(),
            HEAD_DIM_V=Ev, BLOCK_DV=head_block(Ev), BLOCK_M=delta_block, INT64_OFFSETS=int64_offsets,
        )
    else:
        block_m, block_n, warps = dmask_tile(max(dims["BLOCK_D"], dims["BLOCK_DV"]))
        attention_backward_delta_from_probs_kernel[(ceil_div(L, block_m) * B * Hq,)](
            q, k, v, mask_arg, grad_out, lse, delta,
            Hq, Hq // Hkv, L, S,
            q.stride(), k.stride(), v.stride(), mask_strides, grad_out.stride(),
            *common, **dims, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0, INT64_OFFSETS=int64_offsets,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
        )
    grid_keys = lambda meta: (ceil_div(S, meta["BLOCK_N"]) * B * Hkv,)
    if schedule == "fused":
        dq_acc = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        turns = torch.zeros(1 + B * Hq * ceil_div(L, SMALLEST_BLOCK_M), dtype=torch.int32, device=q.device)
        attention_backward_fused_kernel[grid_keys](
            q, k, v, mask_arg, grad_out, lse, delta, dk, dv, dq, dq_acc, turns,
            Hq, Hq // Hkv, L, S, length_bucket(L, S), INTERPRETED_MAX_SPINS if INTERPRETED else GPU_MAX_SPINS,
            q.stride(), k.stride(), v.stride(), mask_strides, grad_out.stride(), dk.stride(), dv.stride(),
            dq.stride(), dq_acc.stride(), *common, **dims, **matmul_flags,
        )
    else:
        attention_backward_dkdv_kernel[grid_keys](
            q, k, v, mask_arg, grad_out, lse, delta, dk, dv,
            Hq, Hq // Hkv, L, S, length_bucket(L, S),
            q.stride(), k.stride(), v.stride(), mask_strides, grad_out.stride(), dk.stride(), dv.stride(),
            *common, **dims, **matmul_flags,
        )
        grid_queries = lambda meta: (ceil_div(L, meta["BLOCK_M"]) * B * Hq,)
        attention_backward_dq_kernel[grid_queries](
            q, k, v, mask_arg, grad_out, lse, delta, dq,
            Hq, Hq // Hkv, L, S, length_bucket(L, S),
            q.stride(), k.stride(), v.stride(), mask_strides, grad_out.stride(), dq.stride(),
            *common, **dims, **matmul_flags,
        )
    if dmask is not None:
        Bm, Hm, Lm, Sm = mask.shape
        reduce = dict(REDUCE_B=Bm == 1 and B > 1, REDUCE_H=Hm == 1 and Hq > 1,
                      REDUCE_L=Lm == 1 and L > 1, REDUCE_S=Sm == 1 and S > 1)
        block_m, block_n, warps = dmask_tile(max(dims["BLOCK_D"], dims["BLOCK_DV"]))
        tiles = (1 if reduce["REDUCE_L"] else ceil_div(L, block_m)) * (1 if reduce["REDUCE_S"] else ceil_div(S, block_n))
        attention_backward_dmask_kernel[(tiles * Bm * Hm,)](
            q, k, v, mask_arg, grad_out, lse, delta, dmask,
            Hq, Hq // Hkv, B, L, S, Hm,
            q.stride(), k.stride(), v.stride(), mask_strides, grad_out.stride(), dmask.stride(),
            *common, **dims, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0, INT64_OFFSETS=int64_offsets, **reduce,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
        )
    return dq, dk, dv, dmask
