"""seqops.patched_functional, seqops.patch_functional and seqops.unpatch_functional: route
torch's softmax and attention functions to seqops, for code that calls them directly
rather than through layers (nanoGPT-style models, library code that cannot be edited).

What is routed while patched (process-wide, every thread):
    torch.nn.functional.scaled_dot_product_attention -> seqops.scaled_dot_product_attention
    torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax -> seqops.softmax
A call seqops does not take as torch would goes to torch's own function unchanged: inputs
with a __torch_function__ override (tensor subclasses, torch.func wrappers excepted, which
seqops supports), sparse or nested inputs, softmax without a dim or with arguments seqops
has no counterpart for. Under torch.compile the functions are routed, but not the
Tensor.softmax method: Dynamo traces tensor methods as torch's own ops. seqops' torch backend calls torch's functions as they were when
seqops was imported (seqops.ops.torch_originals), never the routed names, so nothing loops.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import has_torch_function

from seqops.ops.attention.api import scaled_dot_product_attention as seqops_attention
from seqops.ops.softmax.api import softmax as seqops_softmax


def _takes(*tensors) -> bool:
    """Whether seqops takes these inputs as torch's function would: plain strided tensors."""
    return (all(isinstance(t, torch.Tensor) for t in tensors) and not has_torch_function(tensors)
            and all(t.layout == torch.strided and not t.is_nested for t in tensors))


def _routed_softmax(original, shown_name: str):
    """torch.softmax / F.softmax / Tensor.softmax (which one: `original`) through seqops."""
    # After (input, dim), torch.softmax and Tensor.softmax take dtype; F.softmax takes
    # _stacklevel (which only places the warning of a call without dim) and dtype.
    optional = ("_stacklevel", "dtype") if original is F.softmax else ("dtype",)

    def softmax(input, dim=None, *args, **kwargs):
        given = dict(zip(optional, args))
        routed = (len(args) <= len(optional) and all(name in optional and name not in given for name in kwargs)
                  and isinstance(dim, int) and not isinstance(dim, bool) and _takes(input))
        if not routed:
            return original(input, dim, *args, **kwargs)
        return seqops_softmax(input, dim, {**given, **kwargs}.get("dtype"))

    softmax.__name__ = original.__name__
    softmax.__doc__ = f"{shown_name}, routed to seqops.softmax by seqops.patch_functional."
    return softmax


def _routed_attention(original, shown_name: str):
    def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                     enable_gqa=False):
        if not _takes(query, key, value):
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa)
        return seqops_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    scaled_dot_product_attention.__doc__ = f"{shown_name}, routed to seqops by seqops.patch_functional."
    return scaled_dot_product_attention


# (owner, attribute, routed version given torch's original)
_ROUTES = [
    (F, "scaled_dot_product_attention", _routed_attention),
    (torch, "softmax", _routed_softmax),
    (F, "softmax", _routed_softmax),
    (torch.Tensor, "softmax", _routed_softmax),
]

_lock = threading.Lock()
_depth = 0  # patch_functional calls not yet undone; routed while > 0
_installed: list = []  # (owner, attribute, torch's original, the routed function)


def patch_functional() -> None:
    """Route torch's softmax and attention functions to seqops until
    unpatch_functional() (calls nest: each patch needs its unpatch)."""
    global _depth
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        _settle_dynamo_rules()
        for owner, name, route in _ROUTES:
            original = getattr(owner, name)
            routed = route(original, f"{getattr(owner, '__name__', owner)}.{name}")
            setattr(owner, name, routed)
            _installed.append((owner, name, original, routed))


def _settle_dynamo_rules() -> None:
    """Have torch.compile's table of torch functions built from torch's own functions.
    Dynamo builds it once, on first use, by looking the functions up by name; built while
    patched, it would hold the routed functions as opaque torch ops, and a compiled model
    would not run them. Importing Dynamo takes a few seconds once per process."""
    from torch._dynamo import trace_rules

    trace_rules.get_torch_obj_rule_map()


def unpatch_functional() -> None:
    """Undo one patch_functional(); the last one puts torch's functions back (an attribute
    that someone else replaced since is left to them)."""
    global _depth
    with _lock:
        if _depth == 0:
            raise RuntimeError("seqops.unpatch_functional: torch's functions are not patched")
        _depth -= 1
        if _depth > 0:
            return
        while _installed:
            owner, name, original, routed = _installed.pop()
            if getattr(owner, name) is routed:
                setattr(owner, name, original)


def is_functional_patched() -> bool:
    return _depth > 0


@contextlib.contextmanager
def patched_functional() -> Iterator[None]:
    """Inside the block, torch's softmax and attention functions run seqops; torch's own
    are back on exit, also when the block raises.

    >>> with seqops.patched_functional():
    ...     logits = gpt(tokens)   # its F.scaled_dot_product_attention calls run seqops
    """
    patch_functional()
    try:
        yield
    finally:
        unpatch_functional()
