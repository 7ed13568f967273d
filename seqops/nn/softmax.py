"""seqops.nn.Softmax: a drop-in for torch.nn.Softmax."""
from __future__ import annotations

import warnings

import torch

from seqops.ops.softmax.api import softmax
from seqops.nn.drop_in import DropIn


def _implicit_softmax_dim(ndim: int) -> int:
    """The dim torch.nn.Softmax(dim=None) picks, with torch's deprecation warning."""
    warnings.warn(
        "Implicit dimension choice for softmax has been deprecated. Change the call to include dim=X as an argument.",
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(DropIn, torch.nn.Softmax):
    """torch.nn.Softmax computed by seqops.softmax (same constructor, attributes and
    state_dict; an instance of torch.nn.Softmax too).

    input: any shape; output: same shape, softmax along `dim`.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dim = self.dim if self.dim is not None else _implicit_softmax_dim(input.dim())
        return softmax(input, dim)
