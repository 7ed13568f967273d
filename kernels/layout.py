"""Describe strided tensors to a kernel as rows of a fixed number of leading dims.

Row kernels index rows through three leading dims (a, b, c), each tensor with its own
strides, so that sliced, transposed and broadcast (stride 0) tensors reach a kernel
without being copied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

LEADING_DIMS = 3


def collapse_leading_dims(
    sizes: Sequence[int], strides_per_tensor: Sequence[Sequence[int]], max_dims: int = LEADING_DIMS
) -> Optional[tuple[list[int], list[list[int]]]]:
    """Merge the dims of same-shaped tensors into at most `max_dims` dims.

    Adjacent dims merge when they do so for every tensor (outer stride = inner stride *
    inner size); size-1 dims are dropped. Returns (sizes, strides per tensor), padded in
    front with size-1 dims to exactly `max_dims`, or None when more dims remain.
    """
    merged_sizes: list[int] = []
    merged_strides: list[list[int]] = [[] for _ in strides_per_tensor]
    for d, size in enumerate(sizes):
        if size == 1:
            continue
        inner = [strides[d] for strides in strides_per_tensor]
        if merged_sizes and all(ms[-1] == s * size for ms, s in zip(merged_strides, inner)):
            merged_sizes[-1] *= size
            for ms, s in zip(merged_strides, inner):
                ms[-1] = s
        else:
            merged_sizes.append(size)
            for ms, s in zip(merged_strides, inner):
                ms.append(s)
    if len(merged_sizes) > max_dims:
        return None
    pad = max_dims - len(merged_sizes)
    return [1] * pad + merged_sizes, [[0] * pad + ms for ms in merged_strides]


@dataclass(frozen=True)
class RowLayout:
    """Rows of several tensors of one shape [..., n_cols], as a row kernel takes them:
    row r is (a, b, c) with c = r % rows_c, b = (r // rows_c) % rows_b, a = the rest;
    `strides[i]` are tensor i's strides (a, b, c, column)."""

    n_rows: int
    n_cols: int
    rows_b: int
    rows_c: int
    strides: tuple[tuple[int, int, int, int], ...]


def row_layout(tensors: Sequence[torch.Tensor]) -> Optional[RowLayout]:
    """The RowLayout of same-shaped tensors (at least 1-D), or None when their leading
    dims do not collapse to three (the caller then makes the odd ones contiguous)."""
    shape = tensors[0].shape
    collapsed = collapse_leading_dims(shape[:-1], [t.stride()[:-1] for t in tensors])
    if collapsed is None:
        return None
    sizes, strides = collapsed
    return RowLayout(
        n_rows=sizes[0] * sizes[1] * sizes[2],
        n_cols=shape[-1],
        rows_b=sizes[1],
        rows_c=sizes[2],
        strides=tuple((*s, t.stride(-1)) for s, t in zip(strides, tensors)),
    )


def row_layout_copying(operands: list[torch.Tensor], target: int) -> tuple[list[torch.Tensor], RowLayout]:
    """`row_layout(operands)`; where their leading dims do not collapse, first copy every
    operand but `operands[target]` (an output in a layout that collapses on its own) into
    `operands[target]`'s strides."""
    layout = row_layout(operands)
    if layout is None:
        like = operands[target]
        operands = [
            t if i == target
            else torch.empty_strided(like.shape, like.stride(), dtype=t.dtype, device=t.device).copy_(t)
            for i, t in enumerate(operands)
        ]
        layout = row_layout(operands)
    return operands, layout
