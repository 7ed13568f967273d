"""How the recurrent drop-ins (LSTM, GRU, RNN) take their input and give back their output
as torch's RNNBase does: a PackedSequence, or a padded [T, B, I] / [B, T, I] / unbatched
[T, I] tensor, to time-major data for the op; and the op's output back to the caller's
form."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence


class SequenceInput(NamedTuple):
    """data: packed [N, I] or time-major [T, B, I]; batch_sizes [T] when packed, else None;
    the PackedSequence's sorted/unsorted indices (or None); batch: B; batched: False for
    unbatched input (its batch dim added in data); batch_dim: where the caller's batch is;
    checked: what torch's check_forward_args takes (packed data, or the input in the
    caller's layout with its batch dim)."""

    data: Tensor
    batch_sizes: Optional[Tensor]
    sorted_indices: Optional[Tensor]
    unsorted_indices: Optional[Tensor]
    batch: int
    batched: bool
    batch_dim: int
    checked: Tensor

    @property
    def packed(self) -> bool:
        return self.batch_sizes is not None


def sequence_input(module: torch.nn.RNNBase, input, shape_error: str) -> SequenceInput:
    """The input of `module`'s forward as the op takes it; shape_error: torch's message for
    an input that is neither 2-D nor 3-D (it differs between LSTM and GRU/RNN), `{}` where
    the input's number of dims goes."""
    if isinstance(input, PackedSequence):
        data, batch_sizes, sorted_indices, unsorted_indices = input
        return SequenceInput(data, batch_sizes, sorted_indices, unsorted_indices, int(batch_sizes[0]), True, 0, data)
    if input.dim() not in (2, 3):
        raise ValueError(shape_error.format(input.dim()))
    batched = input.dim() == 3
    batch_dim = 0 if module.batch_first else 1
    if not batched:
        input = input.unsqueeze(batch_dim)
    data = input.transpose(0, 1) if module.batch_first else input
    return SequenceInput(data, None, None, None, data.shape[1], batched, batch_dim, input)


def sequence_output(module: torch.nn.RNNBase, given: SequenceInput, output: Tensor):
    """The op's output [N, D] (packed) or [T, B, D] in the form the input came in."""
    if given.packed:
        return PackedSequence(output, given.batch_sizes, given.sorted_indices, given.unsorted_indices)
    if module.batch_first:
        output = output.transpose(0, 1)
    return output if given.batched else output.squeeze(given.batch_dim)
