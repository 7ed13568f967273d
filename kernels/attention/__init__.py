"""Fused scaled-dot-product attention in Triton (common.py: the pieces every kernel shares;
forward.py, backward.py: the kernels and their launchers; tuning.py: tiles and autotuning), FlashAttention-style: the Lq x Lk score
matrix is never stored, on any path.

Forward: per block of queries, an online softmax over blocks of keys; key blocks every
query of the block sees run unmasked, the causal diagonal band and the ragged last block
run masked, and blocks past the diagonal are skipped. Only the logsumexp of each row is
saved. On sm_90 and later, q, k and v are read through tensor descriptors (TMA) where
their alignment allows (common.descriptor_loads), through pointers elsewhere; so are q,
k, v and dO in the backward's dK/dV and dQ kernels, up to head dim 128.

Backward: delta = rowsum(dO * O); then dK, dV per block of keys (looping over the
query blocks, and over the query heads of a GQA group) and dQ per block of queries, with P
recomputed from the logsumexp: no atomics, so the gradients are deterministic. A float
mask that needs a gradient gets its own kernel, reducing dS over the dims the mask
broadcasts along, straight into the mask's shape; on that path delta is recomputed as
rowsum(P * dP) over every key instead, since the rounding of O to the output dtype in
rowsum(dO * O) would accumulate in that reduction.

Decode (decode.py): calls of at most DECODE_MAX_QUERIES queries a head split each (batch,
key/value head)'s keys over several programs, a GQA group's query heads packed into one
program's rows, and combine the splits by their logsumexp; no dropout. Their backward is
the one above.

Tensors are 4-D: q [B, Hq, L, E], k [B, Hkv, S, E], v [B, Hkv, S, Ev], any strides;
Hkv divides Hq (query head h reads key/value head h // (Hq / Hkv)). Masks are 4-D and
broadcastable to [B, Hq, L, S]: bool (True = attend) or float (added to the scores).
fp16/bf16 scores are kept in log2 units (exp2, with log2(e) folded into the scale);
fp32 keeps natural units and an accurate exp, and its dots are true fp32, not tf32.
The base offset of each (batch, head) slice is 64-bit; offsets within a slice (and
dropout's Philox counters) are 32-bit unless the launcher finds that a launch can pass
2**31 - 1 (common.needs_int64_offsets), which then computes them in 64-bit.
"""
from .common import FP32_MAX_HEAD_DIM, MAX_HEAD_DIM
from .backward import attention_backward
from .decode import DECODE_MAX_QUERIES, attention_decode_forward
from .forward import attention_forward

__all__ = ["attention_forward", "attention_backward", "attention_decode_forward", "MAX_HEAD_DIM",
           "FP32_MAX_HEAD_DIM", "DECODE_MAX_QUERIES"]
