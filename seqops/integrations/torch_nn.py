"""seqops.patch and seqops.unpatch: swap the torch layers of a built model for their
seqops drop-ins, in place, and back."""
from __future__ import annotations

import weakref

import torch

from seqops.nn import DROP_INS
from seqops.nn.drop_in import state_with_own_containers

# What each keyword of seqops.patch swaps: torch layer types by family. A type without a
# drop-in in seqops.nn.DROP_INS (yet) is left as it is.
KINDS = {
    "lstm": (torch.nn.LSTM, torch.nn.LSTMCell),
    "gru": (torch.nn.GRU, torch.nn.GRUCell),
    "rnn": (torch.nn.RNN, torch.nn.RNNCell),
    "attention": (torch.nn.MultiheadAttention,),
    "softmax": (torch.nn.Softmax,),
}

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

# What unpatch needs, held weakly by the patched objects: each drop-in put in by patch ->
# the torch layer it replaced; each module whose fast path patch turned off -> the value
# the switch had before.
_replaced: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()
_switched: "weakref.WeakKeyDictionary[torch.nn.Module, object]" = weakref.WeakKeyDictionary()


def patch(model: torch.nn.Module, *, lstm: bool = True, gru: bool = True, rnn: bool = True, attention: bool = True,
          softmax: bool = False) -> torch.nn.Module:
    """Replace, in place, every submodule of `model` whose type is exactly a torch layer of
    a chosen family (the keywords; see KINDS) that seqops has a drop-in for
    (seqops.nn.DROP_INS) with that drop-in. The drop-in holds the same parameter and
    buffer tensors (an optimizer built before the patch keeps working), the same settings
    and training mode, so state_dict keys and repr stay as they were. Also turns off the
    fused inference paths of torch's transformer layers, which would skip the patched
    attention. Subclasses of torch layers are left alone: they may change behaviour.
    nn.Softmax is swapped only with softmax=True (torch's is already one fused kernel).

    Returns the model, or its replacement if `model` itself is such a layer (rebind it:
    `layer = seqops.patch(layer)`). seqops.unpatch undoes it."""
    chosen = {kind for kind, wanted in
              dict(lstm=lstm, gru=gru, rnn=rnn, attention=attention, softmax=softmax).items() if wanted}
    swapped = {layer: DROP_INS[layer] for kind in chosen for layer in KINDS[kind] if layer in DROP_INS}
    return _patched(model, swapped)


def _patched(module: torch.nn.Module, swapped: dict) -> torch.nn.Module:
    drop_in = swapped.get(type(module))
    if drop_in is not None:
        replacement = drop_in.from_torch(module)
        _replaced[replacement] = module
        return replacement
    for name, child in module.named_children():
        replacement = _patched(child, swapped)
        if replacement is not child:
            setattr(module, name, replacement)
    switch = _FAST_PATH_SWITCHES.get(type(module))
    if switch is not None:
        attribute, off = switch
        if module not in _switched:  # a second patch must not record the value the first set
            _switched[module] = getattr(module, attribute)
        setattr(module, attribute, off)
    return module


def unpatch(model: torch.nn.Module) -> torch.nn.Module:
    """Undo seqops.patch: every drop-in it put in `model` goes back to the torch layer
    object it replaced, which takes the drop-in's state as it is now (parameters trained
    or moved since, hooks added, training mode), and each transformer fast path gets its
    former setting. Returns the model, or the torch layer if `model` itself is a drop-in
    that patch returned. Drop-ins that patch did not put in (built as seqops layers)
    stay."""
    original = _replaced.pop(model, None)
    if original is not None:
        original.__dict__.clear()
        original.__dict__.update(state_with_own_containers(model))
        return original
    for name, child in model.named_children():
        restored = unpatch(child)
        if restored is not child:
            setattr(model, name, restored)
    if model in _switched:
        setattr(model, _FAST_PATH_SWITCHES[type(model)][0], _switched.pop(model))
    return model
