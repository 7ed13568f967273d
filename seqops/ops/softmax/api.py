"""seqops.softmax: check the call (contract.py), pick an implementation, run it."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from seqops import dispatch
from seqops.ops.softmax import contract, op


def softmax(
    input: Tensor,
    dim: int = -1,
    dtype: Optional[torch.dtype] = None,
    *,
    scale: float = 1.0,
    mask: Optional[Tensor] = None,
    causal: bool = False,
) -> Tensor:
    """Softmax along `dim`, as torch.softmax, with optional attention-style extras.

    input: any shape, floating point (or any dtype when `dtype` is given).
    dtype: the input is cast to it before the op, and the output has it (torch's rule).
    scale: the input is multiplied by it first: softmax(scale * input).
    mask: bool, broadcastable to input; False entries are excluded (set to -inf).
    causal: exclude entry (..., i, j) when j > i over the last two dims of input, as in a
        causal score matrix [..., Lq, Lk] (torch's is_causal alignment).
    A row left with no entry (every one masked or -inf) gives NaN, as torch does.
    Returns a tensor of input's shape.
    """
    dim, scale = contract.check(input, dim, dtype, scale, mask, causal)
    impl = dispatch.select("softmax", input.device, input, dim, dtype, scale, mask, causal)
    if impl.composite:
        return impl.run(input, dim, dtype, scale=scale, mask=mask, causal=causal)
    return op.differentiable_forward(input, mask, dim, scale, causal, dtype, impl.key)
