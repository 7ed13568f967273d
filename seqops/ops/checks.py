"""Argument checks the op contracts share, each raising a clear error that names the argument."""
from __future__ import annotations

from typing import Optional

from torch import Tensor


def describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_tensor(fn: str, name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_dim(fn: str, dim: object, ndim: int) -> int:
    """`dim` made non-negative, with torch's rule that a 0-d tensor has dims -1 and 0."""
    if type(dim) is not int and (not isinstance(dim, int) or isinstance(dim, bool)):
        raise TypeError(f"{fn}: argument 'dim' must be an int, got {type(dim).__name__}")
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(
            f"{fn}: dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})"
        )
    return dim % rank


def broadcast_shape(shapes) -> Optional[tuple]:
    """The shape `shapes` broadcast to, by torch's rule, or None if they do not. Plain
    Python on plain ints: a call's checks run on every call, so they must cost little."""
    rank = 0
    for shape in shapes:
        rank = max(rank, len(shape))
    result = [1] * rank
    for shape in shapes:
        for index, size in enumerate(shape, rank - len(shape)):
            if size != 1:
                if result[index] not in (1, size):
                    return None
                result[index] = size
    return tuple(result)


def broadcast_or_raise(fn: str, what: str, shapes: list) -> tuple:
    shape = broadcast_shape(shapes)
    if shape is None:
        raise RuntimeError(f"{fn}: {what} do not broadcast: {', '.join(str(tuple(s)) for s in shapes)}")
    return shape


def check_mask_placement(fn: str, name: str, mask: Tensor, other: Tensor, other_name: str, shape: tuple,
                         shape_name: str) -> None:
    """`mask` is on `other`'s device and broadcasts to `shape` without growing it."""
    if mask.device != other.device:
        raise ValueError(f"{fn}: '{name}' is on {mask.device} but '{other_name}' is on {other.device}")
    if broadcast_shape((mask.shape, shape)) != shape:
        raise RuntimeError(f"{fn}: '{name}' of shape {tuple(mask.shape)} does not broadcast to {shape_name} {shape}")
