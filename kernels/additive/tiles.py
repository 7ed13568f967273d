"""Tile sizes of the additive attention kernels. Not yet measured on a GPU (no result under
benchmarks/results/ covers them): chosen so that the [BLOCK_M, BLOCK_N, BLOCK_D] fp32
pre-activation tile is 8192 values, 64 registers a thread over 4 warps, and every tl.dot
operand edge is at least 16."""
BLOCK_M = 16
BLOCK_N = 32
BLOCK_D = 16
NUM_WARPS = 4
