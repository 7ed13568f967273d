"""What every seqops layer that stands in for a torch layer shares."""
from __future__ import annotations

import copy

import torch


class DropIn:
    """Base of the seqops layers that subclass a torch layer, listed first:
    `class Softmax(DropIn, torch.nn.Softmax)`."""

    @classmethod
    def from_torch(cls, module: torch.nn.Module) -> torch.nn.Module:
        """The seqops layer for `module`: a shallow copy that shares its parameters,
        buffers, hooks and settings (an optimizer holding them keeps working)."""
        replacement = copy.copy(module)
        replacement.__class__ = cls
        return replacement
