"""Counting what seqops runs: proof that a patched model really calls seqops' ops (and on
which backend), not torch's own fused paths."""
import collections
import contextlib

from seqops import dispatch


@contextlib.contextmanager
def counting_seqops_calls():
    """Yields a Counter of (op, backend) for every seqops op call made in the block."""
    counts = collections.Counter()
    choose = dispatch.select

    def select(op, device, *args, **kwargs):
        impl = choose(op, device, *args, **kwargs)
        counts[(op, impl.backend)] += 1
        return impl

    dispatch.select = select
    try:
        yield counts
    finally:
        dispatch.select = choose
