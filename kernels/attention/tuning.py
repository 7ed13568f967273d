"""How the attention kernels are tuned: the candidate tiles, the classes of launch the tile
table (seqops.kernels.tiles) is keyed by, and the autotuner's configs and prune."""
from __future__ import annotations

import torch
import triton

from ..runtime import INTERPRETED
from ..tiles import TILES

# Tiles (BLOCK_M, BLOCK_N, num_warps) the autotuner may try, per kernel, dtype class
# ("fp32": FMA dots; "16-bit": tensor cores), head-dim class (BLOCK_D, the larger of the
# two head dims rounded up to a power of two: 64 and below, 128, 256) and feature weight
# ("plain"; "heavy": a mask or dropout). Each tile in TILES was compiled for sm_90 by
# `python tests/compile_triton_kernels.py --calibrate` and spilled no registers; the
# candidates left out spilled, some by kilobytes. CI compiles, for sm_80 and sm_90, the
# tile of each class with the most elements per thread (`--all-tiles`: every tile).
# fp32 has no class 256: its dK/dV kernel spilled at every tile tried down to 16 x 16, so
# the op sends fp32 head dims above common.FP32_MAX_HEAD_DIM to another backend.
CANDIDATE_TILES = [
    (16, 16, 4), (16, 16, 8), (16, 32, 4), (32, 32, 4), (32, 32, 8), (32, 64, 4), (32, 64, 8), (64, 32, 4),
    (64, 32, 8), (64, 64, 4), (64, 64, 8), (32, 128, 8), (128, 32, 8), (128, 64, 8), (64, 128, 8), (128, 128, 8),
]
STAGES = {"forward": (2, 3), "backward_dkdv": (1, 2), "backward_dq": (1, 2)}
# When set (by a calibration run), the prune keeps every candidate tile.
CALIBRATING = False


def _head_dim_class(block_d: int) -> int:
    return 64 if block_d <= 64 else block_d


def pruned_to_table(kernel: str):
    """The autotuner's early prune: the calibrated tiles for this launch's classes."""
    def prune(configs, named_args, **kwargs):
        if INTERPRETED or CALIBRATING:
            return configs
        dtype_class = "fp32" if named_args["q_ptr"].dtype == torch.float32 else "16-bit"
        head_class = _head_dim_class(max(kwargs["BLOCK_D"], kwargs["BLOCK_DV"]))
        weight = "heavy" if kwargs["MASK_KIND"] or kwargs["DROPOUT"] else "plain"
        allowed = TILES[kernel].get((dtype_class, head_class, weight))
        if not allowed:
            raise ValueError(f"no {kernel} tile for {dtype_class} head dims of class {head_class} ({weight}); "
                             "the op should have refused this input")
        return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) in allowed]

    return dict(early_config_prune=prune)


def autotune_configs(kernel: str) -> list[triton.Config]:
    """The autotuning space: under the interpreter one small config (tuning there would
    measure nothing, and small blocks make more block edges to test)."""
    if INTERPRETED:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w in CANDIDATE_TILES for s in STAGES[kernel]]


def dmask_tile(block_d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of the float-mask gradient kernel, which holds q, k,
    v and dO tiles with three score-sized ones: smaller as the head dim grows, so that it
    does not spill on sm_80 or sm_90 (tests/compile_triton_kernels.py)."""
    if INTERPRETED:
        return 32, 16, 4
    return DMASK_TILES[_head_dim_class(block_d)]


DMASK_TILES = {64: (32, 32, 8), 128: (16, 32, 8), 256: (16, 32, 8)}


def delta_rows(block_dv: int) -> int:
    """Queries a program of the delta kernel (rowsum(dO * O)) takes: 4096 elements of
    each operand (fewer rows as the head dim grows)."""
    return 32 if INTERPRETED else max(16, 4096 // block_dv)


# The longest edge along a sequence (queries or keys) of any tile an attention launch
# uses, at any head dim (BLOCK_DV >= 16): lanes of a tile past a length still form (masked)
# offsets, so the launchers bound offsets over lengths padded by this much.
LONGEST_TILE_EDGE = max(
    delta_rows(16),
    *(max(block_m, block_n) for block_m, block_n, _ in CANDIDATE_TILES),
    *(max(block_m, block_n) for block_m, block_n, _ in DMASK_TILES.values()),
)


AUTOTUNE_KEY = ["HEAD_DIM", "HEAD_DIM_V", "CAUSAL", "MASK_KIND", "DROPOUT", "INT64_OFFSETS"]
