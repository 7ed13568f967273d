"""What every seqops layer that stands in for a torch layer shares."""
from __future__ import annotations

import torch


def state_with_own_containers(module: torch.nn.Module) -> dict:
    """module's attributes (its __dict__), with each dict, list and set (parameters,
    buffers, submodules, hooks, the names of non-persistent buffers...) copied: the same
    parameter, buffer and submodule objects, in containers that another module can own
    without sharing them by accident."""
    return {name: type(value)(value) if isinstance(value, (dict, list, set)) else value
            for name, value in module.__dict__.items()}


class DropIn:
    """Base of the seqops layers that subclass a torch layer, listed first:
    `class Softmax(DropIn, torch.nn.Softmax)`."""

    @classmethod
    def from_torch(cls, module: torch.nn.Module) -> torch.nn.Module:
        """The seqops layer for `module`: it holds the same parameter, buffer and submodule
        objects and the same settings (an optimizer built on them keeps working), in
        containers of its own, so that changing the one (swapping a submodule, adding a
        hook) leaves the other as it was."""
        replacement = cls.__new__(cls)
        replacement.__dict__.update(state_with_own_containers(module))
        return replacement
