"""What the additive attention kernels share: the score tile, the visibility of a tile
(key bound and the bool mask), the recomputed probabilities, and the host-side projections.

Layout the kernels read: the projected queries qp [B, Lq, d] and keys kp [B, Lk, d] fp32
contiguous, the score vector v [d] fp32; the other operands with their strides as tuples.
Every offset is int64: qp alone can pass 2**31 elements (B * Lq * d), and the cost of the
wider arithmetic is nothing beside d tanh evaluations per score.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..runtime import exp_accurate, next_power_of_2, tanh_accurate


@triton.jit
def load_tile(base, offs_rows, offs_cols, stride_row, stride_col, n_rows, n_cols):
    """A [rows, cols] tile as fp32, zeros outside [n_rows, n_cols]; offs_* int64."""
    pointers = base + offs_rows[:, None] * stride_row + offs_cols[None, :] * stride_col
    inside = (offs_rows < n_rows)[:, None] & (offs_cols < n_cols)[None, :]
    return tl.load(pointers, mask=inside, other=0.0).to(tl.float32)


@triton.jit
def load_operand(base, offs_rows, offs_cols, stride_row, stride_col, n_rows, n_cols):
    """A [rows, cols] tile in the tensor's own dtype, zeros outside [n_rows, n_cols]: an
    operand of a tl.dot, which takes 16-bit tiles on tensor cores (fp32 accumulation)."""
    pointers = base + offs_rows[:, None] * stride_row + offs_cols[None, :] * stride_col
    inside = (offs_rows < n_rows)[:, None] & (offs_cols < n_cols)[None, :]
    return tl.load(pointers, mask=inside, other=0.0)


@triton.jit
def pre_activation_chunk(qp_base, kp_base, v_ptr, offs_m, offs_n, start_d, Lq, Lk, hidden,
                         BLOCK_D: tl.constexpr):
    """For hidden units [start_d, start_d + BLOCK_D): t = tanh(qp_i + kp_j) [BLOCK_M,
    BLOCK_N, BLOCK_D] and v's chunk [BLOCK_D], zeros past d (tanh(0) = 0 and v = 0 there,
    so padding adds nothing)."""
    offs_d = start_d + tl.arange(0, BLOCK_D).to(tl.int64)
    qp = load_tile(qp_base, offs_m, offs_d, hidden, 1, Lq, hidden)
    kp = load_tile(kp_base, offs_n, offs_d, hidden, 1, Lk, hidden)
    v = tl.load(v_ptr + offs_d, mask=offs_d < hidden, other=0.0)
    return tanh_accurate(qp[:, None, :] + kp[None, :, :]), v, offs_d


@triton.jit
def score_tile(qp_base, kp_base, v_ptr, offs_m, offs_n, Lq, Lk, hidden,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """s_ij = sum_d v_d tanh(qp_id + kp_jd) for a [BLOCK_M, BLOCK_N] tile, summed over
    chunks of BLOCK_D hidden units so that only [BLOCK_M, BLOCK_N, BLOCK_D] lives at once."""
    s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for start_d in range(0, hidden, BLOCK_D):
        t, v, _ = pre_activation_chunk(qp_base, kp_base, v_ptr, offs_m, offs_n, start_d, Lq, Lk, hidden, BLOCK_D)
        s += tl.sum(t * v[None, None, :], axis=2)
    return s


@triton.jit
def visible(mask_base, offs_m, offs_n, Lq, Lk, mask_strides, MASKED: tl.constexpr):
    """[BLOCK_M, BLOCK_N]: whether query i sees key j (inside Lk, and the mask says so)."""
    keep = (offs_m >= 0)[:, None] & (offs_n < Lk)[None, :]
    if MASKED:
        pointers = mask_base + offs_m[:, None] * mask_strides[1] + offs_n[None, :] * mask_strides[2]
        keep = keep & (tl.load(pointers, mask=(offs_m < Lq)[:, None] & (offs_n < Lk)[None, :], other=0) != 0)
    return keep


@triton.jit
def probabilities(s, keep, row_max, row_sum):
    """P = exp(s - row_max) / row_sum where visible, else 0 ([BLOCK_M] statistics from the
    forward; row_sum 0 for a row that sees no key, and for rows past Lq). Dividing by the
    sum rather than subtracting its log from the exponent keeps fp32's accuracy: an
    absolute error in a logsumexp of size |lse| becomes a relative error in every P."""
    seen = row_sum > 0.0
    shift = tl.where(seen, row_max, 0.0)
    e = exp_accurate(tl.where(keep, s, 0.0) - shift[:, None])
    return tl.where(keep & seen[:, None], e / tl.where(seen, row_sum, 1.0)[:, None], 0.0)


@triton.jit
def load_row_stats(stats_ptr, b, offs_m, Lq):
    """(row_max, row_sum) [BLOCK_M] of batch entry b from stats [B, Lq, 2]; rows past Lq
    read as never seen (sum 0)."""
    pointers = stats_ptr + (b * Lq + offs_m) * 2
    row_max = tl.load(pointers, mask=offs_m < Lq, other=0.0)
    row_sum = tl.load(pointers + 1, mask=offs_m < Lq, other=0.0)
    return row_max, row_sum


def value_block(width: int) -> int:
    """Columns of the values tile: a power of two >= width, and >= 16 (tl.dot's least)."""
    return max(16, next_power_of_2(width))


def project(inputs: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """inputs [B, L, D] -> inputs weight^T + bias [B, L, d], fp32 contiguous: one GEMM per
    call, in fp32 so that the scores see the projections unrounded."""
    bias32 = None if bias is None else bias.float()
    return torch.nn.functional.linear(inputs.float(), weight.float(), bias32).contiguous()


def mask_operand(mask: Optional[torch.Tensor], shape: tuple, fallback: torch.Tensor):
    """(whether masked, tensor to pass (bool viewed as uint8), its strides expanded to
    `shape` [B, Lq, Lk], a tuple: 0 along broadcast dims)."""
    if mask is None:
        return False, fallback, (0, 0, 0)
    expanded = mask.view(torch.uint8).expand(shape)
    return True, expanded, expanded.stride()
