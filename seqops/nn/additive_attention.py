"""seqops.nn.AdditiveAttention: the attention layer of the seq2seq encoder-decoder
(Bahdanau et al. 2015; Luong et al. 2015's "concat" score), on seqops.additive_attention.
torch has no such layer, so this is not a drop-in (seqops.patch leaves models alone)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from seqops.ops.additive.api import additive_attention

SCORES = ("bahdanau", "concat")


class AdditiveAttention(torch.nn.Module):
    """context_i = sum_j softmax_j(v . tanh(W_q q_i + W_k k_j + b)) values_j.

    score="bahdanau": two projections, `w_query` = nn.Linear(query_dim, hidden_dim) and
    `w_key` = nn.Linear(key_dim, hidden_dim) (both with a bias when bias=True, as the
    usual tutorial writes them), and `v` [hidden_dim].
    score="concat" (Luong): one projection of the concatenation [q; k], `w` =
    nn.Linear(query_dim + key_dim, hidden_dim), and `v`; the same op runs it, with w's
    weight split by columns into the query's and the key's part (views, no copy).

    forward(query, keys, values=None, mask=None, need_weights=False):
      query [B, Lq, query_dim], or [B, query_dim] for one decoder step (the outputs then
      lose the Lq dim); keys [B, Lk, key_dim]; values [B, Lk, value_dim] (default: keys);
      mask bool, True = attend: [B, Lk] (key padding), [Lk], or 3-D broadcastable to
      [B, Lq, Lk]. Returns (context [B, Lq, value_dim], weights [B, Lq, Lk] or None).
      A query that sees no key gets context 0 and weights 0.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int, value_dim: Optional[int] = None,
                 bias: bool = True, score: str = "bahdanau", device=None, dtype=None):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"seqops.nn.AdditiveAttention: score must be one of {SCORES}, got {score!r}")
        factory = dict(device=device, dtype=dtype)
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.value_dim = key_dim if value_dim is None else value_dim
        self.score = score
        if score == "bahdanau":
            self.w_query = torch.nn.Linear(query_dim, hidden_dim, bias=bias, **factory)
            self.w_key = torch.nn.Linear(key_dim, hidden_dim, bias=bias, **factory)
        else:
            self.w = torch.nn.Linear(query_dim + key_dim, hidden_dim, bias=bias, **factory)
        self.v = torch.nn.Parameter(torch.empty(hidden_dim, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The projections as nn.Linear initialises them; v as a Linear(hidden_dim, 1) would be."""
        for module in self.children():
            module.reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_dim) if self.hidden_dim else 0.0
        torch.nn.init.uniform_(self.v, -bound, bound)

    def projections(self) -> tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """(w_query [d, query_dim], w_key [d, key_dim], b_query, b_key) as the op takes them."""
        if self.score == "bahdanau":
            return self.w_query.weight, self.w_key.weight, self.w_query.bias, self.w_key.bias
        weight = self.w.weight
        return weight[:, :self.query_dim], weight[:, self.query_dim:], self.w.bias, None

    def forward(self, query: Tensor, keys: Tensor, values: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                need_weights: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        one_step = query.dim() == 2
        if one_step:
            query = query.unsqueeze(1)
        if values is not None and values.dim() >= 1 and values.shape[-1] != self.value_dim:
            raise RuntimeError(f"seqops.nn.AdditiveAttention: 'values' must have value_dim={self.value_dim} "
                               f"features (last dim), got shape {tuple(values.shape)}")
        w_query, w_key, b_query, b_key = self.projections()
        context, weights = additive_attention(query, keys, keys if values is None else values, w_query, w_key,
                                              self.v, b_query, b_key, mask=mask, need_weights=need_weights)
        if one_step:
            return context.squeeze(1), (None if weights is None else weights.squeeze(1))
        return context, weights

    def extra_repr(self) -> str:
        return (f"query_dim={self.query_dim}, key_dim={self.key_dim}, hidden_dim={self.hidden_dim}, "
                f"value_dim={self.value_dim}, score={self.score!r}")
