"""How the recurrent drop-ins (LSTM, GRU, RNN) take their input and give back their output
as torch's RNNBase does: a PackedSequence, or a padded [T, B, I] / [B, T, I] / unbatched
[T, I] tensor, to time-major data for the op; and the op's output back to the caller's
form."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake
from torch.nn.utils.rnn import PackedSequence


class SequenceInput(NamedTuple):
    """data: packed [N, I] or time-major [T, B, I]; batch_sizes [T] when packed, else None;
    the PackedSequence's sorted/unsorted indices (or None); batch: B; batched: False for
    unbatched input (its batch dim added in data); batch_dim: where the caller's batch is;
    checked: what torch's check_input takes (packed data, or the input in the caller's
    layout with its batch dim)."""

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
        batch = packed_batch_size(type(module).__name__, batch_sizes, sorted_indices)
        return SequenceInput(data, batch_sizes, sorted_indices, unsorted_indices, batch, True, 0, data)
    if input.dim() not in (2, 3):
        raise ValueError(shape_error.format(input.dim()))
    batched = input.dim() == 3
    batch_dim = 0 if module.batch_first else 1
    if not batched:
        input = input.unsqueeze(batch_dim)
    data = input.transpose(0, 1) if module.batch_first else input
    return SequenceInput(data, None, None, None, data.shape[1], batched, batch_dim, input)


def packed_batch_size(name: str, batch_sizes: Tensor, sorted_indices: Optional[Tensor]) -> int:
    """B of a packed sequence (its first batch size), found so that tracing with fake
    tensors (FakeTensorMode, torch.compile, torch.export), which have shapes but no data,
    knows it: the length of sorted_indices where the PackedSequence has them (as
    pack_padded_sequence and pack_sequence make it by default, enforce_sorted=False), else
    batch_sizes[0]. tolist reads batch_sizes' memory, not through the dispatcher, so that a
    real batch_sizes is read under FakeTensorMode too (int(batch_sizes[0]) would index it
    into a fake tensor first); a fake one without sorted_indices has no B to give."""
    if sorted_indices is not None:
        return sorted_indices.shape[0]
    if is_fake(batch_sizes):
        raise RuntimeError(f"{name}: the batch size of a PackedSequence without sorted_indices (made with "
                           "enforce_sorted=True) is the data of its batch_sizes, which a fake tensor does not have; "
                           "pack with enforce_sorted=False (the default), or pass batch_sizes as a real tensor")
    return batch_sizes.tolist()[0]


def check_forward_args(module: torch.nn.RNNBase, given: SequenceInput, hx) -> None:
    """torch's checks of the input and of the state's sizes (RNNBase.check_forward_args, and
    LSTM's with its cell state), with their messages, against the batch size `given` found:
    torch's read it from batch_sizes' data again, which fake tensors do not have.
    hx: h0, or (h0, c0) for an LSTM, batched [layers * directions, B, *]."""
    module.check_input(given.checked, given.batch_sizes)
    leading = (module.num_layers * (2 if module.bidirectional else 1), given.batch)
    if module.mode == "LSTM":
        module.check_hidden_size(hx[0], (*leading, module.proj_size or module.hidden_size),
                                 "Expected hidden[0] size {}, got {}")
        module.check_hidden_size(hx[1], (*leading, module.hidden_size), "Expected hidden[1] size {}, got {}")
    else:
        module.check_hidden_size(hx, (*leading, module.hidden_size))


def sequence_output(module: torch.nn.RNNBase, given: SequenceInput, output: Tensor):
    """The op's output [N, D] (packed) or [T, B, D] in the form the input came in."""
    if given.packed:
        return PackedSequence(output, given.batch_sizes, given.sorted_indices, given.unsorted_indices)
    if module.batch_first:
        output = output.transpose(0, 1)
    return output if given.batched else output.squeeze(given.batch_dim)
