"""The attention family: seqops.scaled_dot_product_attention and its implementations."""
from seqops.ops.attention import reference, torch_impl  # noqa: F401  (they register themselves)
from seqops.ops.attention.api import scaled_dot_product_attention

__all__ = ["scaled_dot_product_attention"]
