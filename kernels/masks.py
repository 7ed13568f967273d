"""Which keys a query may see under a causal mask, written once for every kernel here.

Query i of Lq sees key j of Lk when j <= i + offset: offset 0 is torch's `is_causal`
(the upper-left triangle); offset Lk - Lq aligns the last query with the last key
(bottom-right, as a query block appended to a KV cache sees the whole cache).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def causal_visible(offs_m, offs_n, offset):
    """bool [rows, cols]: query offs_m[r] sees key offs_n[c]."""
    return offs_n[None, :] <= offs_m[:, None] + offset


@triton.jit
def causal_key_range(start_m, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, S, offset):
    """For the block of queries [start_m, start_m + BLOCK_M): (unmasked_end, hi). Key
    blocks before unmasked_end (a multiple of BLOCK_N) are seen whole by every query of the
    block; keys from hi on by none."""
    hi = tl.minimum(S, tl.maximum(start_m + BLOCK_M + offset, 0))
    unmasked_end = (tl.maximum(start_m + offset, 0) // BLOCK_N) * BLOCK_N
    return tl.minimum(unmasked_end, (S // BLOCK_N) * BLOCK_N), hi


@triton.jit
def causal_query_range(start_n, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, L, offset):
    """For the block of keys [start_n, start_n + BLOCK_N): (lo, unmasked_start). Query
    blocks before lo (a multiple of BLOCK_M) see none of the keys; queries from
    unmasked_start on see all of them."""
    lo = (tl.maximum(start_n - offset, 0) // BLOCK_M) * BLOCK_M
    unmasked_start = tl.minimum(tl.cdiv(tl.maximum(start_n + BLOCK_N - offset, 0), BLOCK_M) * BLOCK_M, L)
    return lo, unmasked_start
