"""The kernel backends: each module registers its implementations with seqops.dispatch.
The op families never import them; `import seqops` does, so that they are there."""
from seqops.backends import cuda, triton  # noqa: F401
