"""seqops.patch: swap the torch layers of a built model for their seqops drop-ins."""
from __future__ import annotations

import torch

from seqops.nn import DROP_INS

# torch modules with a fused inference path of their own, which in eval mode without grad
# runs one native kernel (or converts padded batches to nested tensors) instead of their
# submodules, so that a patched attention inside would never be called; and the
# attribute, and its value, that torch reads to turn that path off. torch reads it for
# nothing else: TransformerEncoderLayer's activation_relu_or_gelu only gates and
# parametrises its fast path (its own forward applies self.activation).
_FAST_PATH_SWITCHES = {
    torch.nn.TransformerEncoderLayer: ("activation_relu_or_gelu", 0),
    torch.nn.TransformerEncoder: ("use_nested_tensor", False),
}


def patch(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every submodule whose type is exactly a torch layer that seqops
    has a drop-in for (seqops.nn.DROP_INS) with that drop-in, keeping its weights,
    settings and training mode, and turn off the fused inference paths of torch's
    transformer layers, which would skip the patched attention. Returns the model (or the
    replacement, if `model` itself is such a layer). Subclasses of torch layers are left
    alone: they may change behaviour."""
    drop_in = DROP_INS.get(type(model))
    if drop_in is not None:
        return drop_in.from_torch(model)
    for name, child in model.named_children():
        replacement = patch(child)
        if replacement is not child:
            setattr(model, name, replacement)
    switch = _FAST_PATH_SWITCHES.get(type(model))
    if switch is not None:
        setattr(model, *switch)
    return model
