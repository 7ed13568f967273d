"""The stack of a recurrent module, written once for every family (LSTM, GRU, RNN) and
implementation (fused layer ops, the step-by-step reference): layers, one or two
directions per layer, torch's weight order, dropout between layers, and padded or packed
input. What one direction of one layer computes is the caller's `run_direction`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor


@dataclass(frozen=True)
class Steps:
    """The rows of each time step: a packed sequence's batch_sizes [T], or T steps of B
    rows (padded input, whose step sizes are known without reading a tensor: so under
    FakeTensorMode too)."""

    batch_sizes: Optional[Tensor]
    T: int
    B: int

    def as_tensor(self) -> Tensor:
        """[T] int64, as the fused layer ops take them."""
        return self.batch_sizes if self.batch_sizes is not None else torch.full((self.T,), self.B, dtype=torch.int64)

    def as_list(self) -> list[int]:
        return self.batch_sizes.tolist() if self.batch_sizes is not None else [self.B] * self.T


@dataclass(frozen=True)
class Direction:
    """One direction of one layer: `index` (layer * directions + direction) is its row of
    h0/h_n and the position of its weights; `weights` are its own, in torch's order
    (w_ih, w_hh, then b_ih, b_hh with biases, then w_hr with a projection)."""

    index: int
    reverse: bool
    weights: list[Tensor]


def run_stack(input: Tensor, batch_sizes: Optional[Tensor], weights: list[Tensor], per_direction: int,
              num_layers: int, bidirectional: bool, dropout: float, training: bool,
              run_direction: Callable[[Tensor, Steps, Direction], tuple[Tensor, ...]],
              ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Every layer and direction over the sequence.

    input: [T, B, I] (time-major), or the data [N, I] of a packed sequence with its
    batch_sizes [T]; weights: torch's flat list, `per_direction` tensors per direction.
    run_direction(layer_input [N, I'], steps, direction) -> (out [N, H'], *final
    states [B, .]) for that direction's steps (reversed when direction.reverse). Returns
    the last layer's output (packed data [N, D*H'], or [T, B, D*H']) and each final
    state stacked over layers and directions ([L*D, B, .]), in run_direction's order.
    Dropout (training only) applies between layers, not after the last."""
    if batch_sizes is None:
        T, B = input.shape[:2]
        data, steps = input.reshape(T * B, input.shape[2]), Steps(None, T, B)
    else:
        data, steps = input, Steps(batch_sizes, len(batch_sizes), 0)
    directions = 2 if bidirectional else 1
    finals: list[tuple[Tensor, ...]] = []
    layer_input = data
    for layer in range(num_layers):
        outs = []
        for direction in range(directions):
            index = layer * directions + direction
            own = weights[index * per_direction:(index + 1) * per_direction]
            out, *states = run_direction(layer_input, steps, Direction(index, direction == 1, own))
            outs.append(out)
            finals.append(tuple(states))
        layer_input = torch.cat(outs, -1) if directions == 2 else outs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = torch.nn.functional.dropout(layer_input, dropout, training=True)
    output = layer_input if batch_sizes is not None else layer_input.view(steps.T, steps.B, layer_input.shape[-1])
    return output, tuple(torch.stack(state) for state in zip(*finals))
