"""Tile sizes of the additive attention kernels. Not yet timed on a GPU (no result under
benchmarks/results/ covers them); chosen from what ptxas reports for sm_80 and sm_90
(registers, bytes spilled) over fp32/fp16/bf16, with and without mask and weights. Every
tl.dot operand edge is at least 16. Values up to 64 columns wide: a [16, 32, 16]
pre-activation tile and 4 warps. Wider, and for the key-block backward with the
weights' gradient: a [16, 32, 8] tile and 8 warps. The query-block backward sums
dO . values over chunks of QUERY_VALUE_CHUNK columns (at 256 columns, holding dO and the
values tile whole spilled 3.8-5 KB in fp32). No launch of the static report spills."""
BLOCK_M = 16
BLOCK_N = 32


def hidden_block_and_warps(value_block: int, grad_weights: bool = False) -> tuple[int, int]:
    """(BLOCK_D, num_warps) for a values tile `value_block` columns wide. grad_weights:
    for the key-block backward with the weights' gradient, whose extra [BLOCK_M,
    BLOCK_N] tile spilled ~0.9 KB (fp32, 64 columns) at the narrow choice."""
    return (16, 4) if value_block <= 64 and not grad_weights else (8, 8)


# Value columns per chunk of dO . values in the query-block backward: it reads each chunk
# of dO per key tile instead of holding the rows' whole [BLOCK_M, BLOCK_DV] dO and a
# [BLOCK_N, BLOCK_DV] values tile at once.
QUERY_VALUE_CHUNK = 64
