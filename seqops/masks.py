"""Masks shared by every backend, so that all of them agree on what `causal` means."""
import torch


def causal_keep(n_queries: int, n_keys: int, device: torch.device) -> torch.Tensor:
    """bool [n_queries, n_keys], True where key j <= query i: torch's `is_causal`
    alignment (the upper-left triangle, tril of the n_queries x n_keys matrix)."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril()
