"""Tile sizes of the additive attention kernels. Not yet timed on a GPU (no result under
benchmarks/results/ covers them); chosen from what ptxas reports for sm_80 and sm_90
(registers, bytes spilled) over fp32/fp16/bf16, with and without mask and weights. Every
tl.dot operand edge is at least 16. Values up to 64 columns wide: a [16, 32, 16]
pre-activation tile and 4 warps, where no launch spills. Wider: a [16, 32, 8] tile and 8
warps, where the forward and the key-block backward spill at most 72 bytes, and the
query-block backward still spills about 4-5 KB at 256 columns (it was 6.6 KB with the
narrow values' choice): the next thing to tune once a GPU can time it."""
BLOCK_M = 16
BLOCK_N = 32


def hidden_block_and_warps(value_block: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps) for a values tile `value_block` columns wide."""
    return (16, 4) if value_block <= 64 else (8, 8)
