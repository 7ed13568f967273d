"""The seqops benchmark suite: `python -m benchmarks [op ...]` (see README.md)."""
