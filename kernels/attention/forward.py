"""The attention forward: an online softmax over key blocks per block of queries; only the
logsumexp of each row is saved for the backward."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..masks import causal_key_range
from ..runtime import cast_rounded, ceil_div, dot
from .common import (descriptor_loads, dropout_keep, head_block, head_slice, load_block, lse_dtype, mask_operand,
                     needs_int64_offsets, normalised_rows, online_softmax_step, query_block_of_program, row_source,
                     score_units, scores, tile_pointers)
from .tuning import autotune, length_bucket


@triton.jit
def _forward_key_blocks(
    acc, m_i, l_i, q, k_source, v_source, mask_base, k_strides, v_strides, mask_strides,
    offs_m, lo, hi, L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
    DROPOUT: tl.constexpr, EXACT: tl.constexpr, INT64_OFFSETS: tl.constexpr, TENSOR_DESCRIPTORS: tl.constexpr,
):
    """The online softmax over key blocks [lo, hi): causal and key-bound masks only when MASKED.
    k_source, v_source: row_sources of the (batch, head) slices; mask_base: the mask's
    slice; *_strides: the tensors' (batch, head, row, column)."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = load_block(k_source, k_strides, start_n, offs_n, offs_d, S, HEAD_DIM, INT64_OFFSETS, TENSOR_DESCRIPTORS)
        s = scores(q, k, offs_m, offs_n, mask_base, mask_strides[2], mask_strides[3], L, S, qk_scale, mask_scale,
                   causal_offset, MASK_KIND, CAUSAL and MASKED, MASKED, INT64_OFFSETS)
        p, alpha, m_new, l_i = online_softmax_step(s, m_i, l_i, EXACT)
        if DROPOUT:
            keep = dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p, INT64_OFFSETS)
            p = tl.where(keep, p * (1.0 / (1.0 - dropout_p)), 0.0)
        v = load_block(v_source, v_strides, start_n, offs_n, offs_dv, S, HEAD_DIM_V, INT64_OFFSETS, TENSOR_DESCRIPTORS)
        acc = acc * alpha[:, None] + dot(cast_rounded(p, v.dtype), v)
        m_i = m_new
    return acc, m_i, l_i


@autotune("forward")
@triton.jit(do_not_specialize=["seed", "causal_offset", "length_bucket"])
def attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, lse_ptr,
    n_heads, group_size, L, S, length_bucket,
    q_strides, k_strides, v_strides, mask_strides, out_strides,
    scale, dropout_p, seed, causal_offset,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, INT64_OFFSETS: tl.constexpr,
    TENSOR_DESCRIPTORS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out = softmax(scale * q k^T + mask) v for one block of BLOCK_M queries of one
    (batch, head); lse = the logsumexp of each row's scores (natural log; -inf for a row
    with every key masked, whose output is 0, as torch gives). Each *_strides is its
    tensor's (batch, head, row, column) strides. length_bucket: the autotuner's key
    (tuning.length_bucket), not read here. TENSOR_DESCRIPTORS: q, k and v are read through
    tensor descriptors (TMA on sm_90), not pointers."""
    start_m, bh, b, h, h_kv = query_block_of_program(n_heads, group_size, L, BLOCK_M)
    EXACT: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    qk_scale, mask_scale = score_units(scale, EXACT)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    q_source = row_source(q_ptr, q_strides, b, h, L, HEAD_DIM, BLOCK_M, BLOCK_D, TENSOR_DESCRIPTORS)
    q = load_block(q_source, q_strides, start_m, offs_m, tl.arange(0, BLOCK_D), L, HEAD_DIM, INT64_OFFSETS,
                   TENSOR_DESCRIPTORS)
    k_source = row_source(k_ptr, k_strides, b, h_kv, S, HEAD_DIM, BLOCK_N, BLOCK_D, TENSOR_DESCRIPTORS)
    v_source = row_source(v_ptr, v_strides, b, h_kv, S, HEAD_DIM_V, BLOCK_N, BLOCK_DV, TENSOR_DESCRIPTORS)
    mask_base = head_slice(mask_ptr, mask_strides, b, h)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    if CAUSAL:
        # Key blocks every query of the block sees run unmasked; the band up to the
        # block's last query runs masked; keys past it are never seen.
        unmasked_end, hi = causal_key_range(start_m, BLOCK_M, BLOCK_N, S, causal_offset)
    else:
        hi = S
        unmasked_end = (S // BLOCK_N) * BLOCK_N
    acc, m_i, l_i = _forward_key_blocks(
        acc, m_i, l_i, q, k_source, v_source, mask_base, k_strides, v_strides, mask_strides,
        offs_m, 0, unmasked_end, L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N, MASK_KIND, CAUSAL, False, DROPOUT, EXACT, INT64_OFFSETS,
        TENSOR_DESCRIPTORS)
    acc, m_i, l_i = _forward_key_blocks(
        acc, m_i, l_i, q, k_source, v_source, mask_base, k_strides, v_strides, mask_strides,
        offs_m, unmasked_end, hi, L, S, qk_scale, mask_scale, causal_offset, dropout_p, seed, bh,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N, MASK_KIND, CAUSAL, True, DROPOUT, EXACT, INT64_OFFSETS,
        TENSOR_DESCRIPTORS)

    out, lse = normalised_rows(acc, m_i, l_i, EXACT)
    offs_dv = tl.arange(0, BLOCK_DV)
    out_ptrs = tile_pointers(head_slice(out_ptr, out_strides, b, h), offs_m, offs_dv, out_strides[2], out_strides[3],
                             INT64_OFFSETS)
    tl.store(out_ptrs, cast_rounded(out, out_ptr.dtype.element_ty),
             mask=(offs_m < L)[:, None] & (offs_dv < HEAD_DIM_V)[None, :])
    tl.store(lse_ptr + bh.to(tl.int64) * L + offs_m, lse, mask=offs_m < L)


def attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
    dropout_p: float, is_causal: bool, causal_offset: int, scale: float, seed: int,
    tensor_descriptors: Optional[bool] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention forward.

    q [B, Hq, L, E], k [B, Hkv, S, E], v [B, Hkv, S, Ev] (any strides, Hkv divides Hq);
    mask: None, or bool/float 4-D broadcastable to [B, Hq, L, S]; is_causal: query i sees
    key j <= i + causal_offset; dropout_p in [0, 1), with the Philox `seed`. Returns out [B, Hq, L, Ev] (q's dtype, contiguous) and
    lse [B, Hq, L] (natural log; -inf for rows with every key masked; dtype: lse_dtype).
    tensor_descriptors: read q, k and v through tensor descriptors (TMA); None: where the
    device runs them and the operands' alignment lets them (common.descriptor_loads).
    Both read the same values: the choice changes how, not what.
    """
    B, Hq, L, E = q.shape
    Hkv, S, Ev = k.shape[1], k.shape[2], v.shape[3]
    out = torch.empty(B, Hq, L, Ev, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, Hq, L, dtype=lse_dtype(q.dtype), device=q.device)
    if B * Hq * L == 0 or S == 0 or Ev == 0:
        out.zero_()
        lse.fill_(float("-inf"))
        return out, lse
    mask_kind, mask_arg, mask_strides = mask_operand(mask, (B, Hq, L, S), q)
    int64_offsets = needs_int64_offsets([q, k, v, out] + ([mask_arg] if mask_kind else []),
                                        (L, S) if dropout_p > 0 else None)
    tensor_descriptors = descriptor_loads(tensor_descriptors, [q, k, v])
    grid = lambda meta: (ceil_div(L, meta["BLOCK_M"]) * B * Hq,)
    attention_forward_kernel[grid](
        q, k, v, mask_arg, out, lse,
        Hq, Hq // Hkv, L, S, length_bucket(L, S),
        q.stride(), k.stride(), v.stride(), mask_strides, out.stride(),
        float(scale), float(dropout_p), int(seed), int(causal_offset),
        HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=head_block(E), BLOCK_DV=head_block(Ev),
        MASK_KIND=mask_kind, CAUSAL=bool(is_causal), DROPOUT=dropout_p > 0, INT64_OFFSETS=int64_offsets,
        TENSOR_DESCRIPTORS=tensor_descriptors,
    )
    return out, lse
