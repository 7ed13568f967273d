"""seqops.patch: swap the torch layers of a built model for their seqops drop-ins."""
from __future__ import annotations

import torch

from seqops.nn import DROP_INS


def patch(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every submodule whose type is exactly a torch layer that seqops
    has a drop-in for (seqops.nn.DROP_INS) with that drop-in, keeping its weights,
    settings and training mode, and patch inside the replacements too (the layers of a
    TransformerEncoder, the attention of a layer). Returns the model (or the replacement,
    if `model` itself is such a layer). Subclasses of torch layers are left alone: they
    may change behaviour."""
    drop_in = DROP_INS.get(type(model))
    if drop_in is not None:
        model = drop_in.from_torch(model)
    for name, child in model.named_children():
        replacement = patch(child)
        if replacement is not child:
            setattr(model, name, replacement)
    return model
