"""Which keys a query may see under a causal mask, written once for every Python
implementation (kernels/masks.py is its Triton twin).

Query i of Lq sees key j of Lk when j <= i + offset: offset 0 is torch's `is_causal`
(the upper-left triangle of the Lq x Lk matrix); offset Lk - Lq is the bottom-right
alignment, where the last query sees every key (a block of new queries after a KV cache).
"""
from __future__ import annotations

import torch


def causal_keep(n_queries: int, n_keys: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """bool [n_queries, n_keys], True where key j <= query i + offset."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(offset)
