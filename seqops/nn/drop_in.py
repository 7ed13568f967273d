"""What every seqops layer that stands in for a torch layer shares."""
from __future__ import annotations

import torch


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
        replacement.__dict__.update({
            name: type(value)(value) if isinstance(value, (dict, list)) else value
            for name, value in module.__dict__.items()
        })
        return replacement
