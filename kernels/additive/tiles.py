"""Tile sizes of the additive attention kernels. Not yet timed on a GPU (no result under
benchmarks/results/ covers them); chosen from what ptxas reports for sm_80 and sm_90
(registers, bytes spilled) over fp32/fp16/bf16, with and without mask and weights. Every
tl.dot operand edge is at least 16. Values up to 64 columns wide: a [16, 32, 16]
pre-activation tile and 4 warps. Wider: a [16, 32, 8] tile and 8 warps; the key-block
backward with the weights' gradient in fp32 takes 8 warps too. The query-block backward sums
dO . values over chunks of QUERY_VALUE_CHUNK columns (at 256 columns, holding dO and the
values tile whole spilled 3.8-5 KB in fp32). No launch of the static report spills."""
BLOCK_M = 16
BLOCK_N = 32


def hidden_block_and_warps(value_block: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps) for a values tile `value_block` columns wide. BLOCK_D must be
    the same in the forward and both backward kernels: it sets the order in which a score
    sums its hidden units, and the backward's probabilities must be the forward's to the
    last bit (its dS sums to about 0 over the keys; with scores summed in chunks of 8 in
    the key-block kernel and 16 elsewhere, d b_key in fp32 failed the error rule at 2 of
    12 seeds)."""
    return (16, 4) if value_block <= 64 else (8, 8)


def key_backward_warps(value_block: int, grad_weights: bool, fp32: bool) -> int:
    """num_warps of the key-block backward: 8 with the weights' gradient in fp32, whose
    extra [BLOCK_M, BLOCK_N] tile spilled ~0.9 KB (64 columns) at 4; in fp16 and bf16
    (tensor-core dots) 4 compile without spills and 8 spilled ~100 bytes."""
    return 8 if grad_weights and fp32 else hidden_block_and_warps(value_block)[1]


# Value columns per chunk of dO . values in the query-block backward: it reads each chunk
# of dO per key tile instead of holding the rows' whole [BLOCK_M, BLOCK_DV] dO and a
# [BLOCK_N, BLOCK_DV] values tile at once.
QUERY_VALUE_CHUNK = 64
