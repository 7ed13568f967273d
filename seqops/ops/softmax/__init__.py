"""The softmax family: seqops.softmax and its implementations."""
from seqops.ops.softmax import reference, torch_impl  # noqa: F401  (they register themselves)
from seqops.ops.softmax.api import softmax

__all__ = ["softmax"]
