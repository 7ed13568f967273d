"""The additive (Bahdanau) attention family: seqops.additive_attention and its
implementations."""
from seqops.ops.additive import reference, torch_impl  # noqa: F401  (they register themselves)
from seqops.ops.additive.api import additive_attention

__all__ = ["additive_attention"]
