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


def causal_keep(n_queries: int, n_keys: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """bool [n_queries, n_keys], True where key j <= query i + offset: the rule of
    masks.py, for torch tensors."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(offset)


def softmax_row_operands(
    tensors: list[torch.Tensor], mask: Optional[torch.Tensor], causal: bool, dim: int, target: int
) -> tuple[list[torch.Tensor], Optional[torch.Tensor], int, RowLayout]:
    """The operands of a softmax along `dim` as a row kernel (Triton or CUDA C++) takes
    them: the softmax dim moved last, the rows' layout shared.

    tensors: same shape, any strides; tensors[target] is the output. mask: bool,
    broadcastable to that shape. A causal mask along a dim other than the last becomes
    part of the mask (the kernels take causal along the last dim only). Returns
    (tensors, mask as uint8 or None, causal_rows, layout): causal_rows is the number of
    queries when the kernels apply causal, else 0.
    """
    shape = tensors[0].shape
    if causal and dim != len(shape) - 1:
        keep = causal_keep(shape[-2], shape[-1], tensors[0].device)
        mask, causal = (keep if mask is None else mask & keep), False
    causal_rows = shape[-2] if causal else 0
    if mask is not None:
        mask = mask.view(torch.uint8).expand(shape)
    if len(shape) == 0:
        tensors = [t.reshape(1) for t in tensors]
        mask = None if mask is None else mask.reshape(1)
    last = len(shape) - 1 if len(shape) else 0
    operands = [t if dim == last else t.movedim(dim, -1) for t in tensors]  # (a view costs a microsecond or two)
    if mask is not None:
        operands.append(mask if dim == last else mask.movedim(dim, -1))
    operands, layout = row_layout_copying(operands, target)
    n = len(tensors)
    return operands[:n], (operands[n] if mask is not None else None), causal_rows, layout
