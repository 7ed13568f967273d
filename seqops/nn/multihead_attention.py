"""seqops.nn.MultiheadAttention: a drop-in for torch.nn.MultiheadAttention."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from seqops.ops.attention.api import scaled_dot_product_attention
from seqops.ops.masks import causal_keep
from seqops.ops.softmax.api import softmax
from seqops.nn.drop_in import DropIn


def _additive(mask: Optional[Tensor], name: str, dtype: torch.dtype) -> Optional[Tensor]:
    """torch's MHA mask convention made additive: bool True = may not attend (-inf),
    float = added to the scores."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    if not mask.is_floating_point():
        raise TypeError(f"seqops.nn.MultiheadAttention: only bool and floating {name} are supported, got {mask.dtype}")
    return mask


def _is_causal_mask(mask: Tensor, L: int, S: int) -> bool:
    """Whether the additive mask ([L, S] or [N * heads, L, S]) is exactly torch's causal
    mask (-inf above the diagonal, 0 elsewhere). Under torch.compile, where the answer
    would depend on the data, it says no and the mask is read as it is."""
    if torch.compiler.is_compiling() or tuple(mask.shape[-2:]) != (L, S):
        return False
    causal = torch.zeros(L, S, dtype=mask.dtype, device=mask.device).masked_fill_(
        ~causal_keep(L, S, mask.device), float("-inf"))
    return bool(torch.equal(mask, causal.expand_as(mask)))


class MultiheadAttention(DropIn, torch.nn.MultiheadAttention):
    """torch.nn.MultiheadAttention (same constructor, parameters and state_dict; an
    instance of torch.nn.MultiheadAttention too) computed with seqops.

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (output, weights or None), with
    query [L, N, E] ([N, L, E] when batch_first, [L, E] unbatched), key [S, N, kdim],
    value [S, N, vdim]. need_weights=False is the fused path: the attention runs in
    seqops.scaled_dot_product_attention, which never stores the L x S weights (as torch,
    whose fast attention also needs need_weights=False). need_weights=True must return
    the weights, so it computes them in full, with seqops.softmax. Masks follow this
    module's convention, not SDPA's: a bool True means "may not attend".
    """

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Optional[Tensor]]:
        batched = self._check_shapes(query, key, value, key_padding_mask, attn_mask)
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        L, N, _ = query.shape
        key_padding_mask = _additive(key_padding_mask, "key_padding_mask", query.dtype)
        attn_mask = _additive(attn_mask, "attn_mask", query.dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError(
                "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
                "`generate_square_subsequent_mask` to create this mask."
            )
        # is_causal is a hint that attn_mask is the causal mask. The mask is what counts: the
        # fused path computes the causal mask instead of reading it only where the mask
        # given is that mask (need_weights builds the weights from the mask itself).
        causal = is_causal and not need_weights and _is_causal_mask(attn_mask, L, key.shape[0])
        if causal:
            attn_mask = None

        q, k, v = self._project_in(query, key, value)
        heads, head_dim = self.num_heads, self.head_dim
        q = q.view(L, N, heads, head_dim).permute(1, 2, 0, 3)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(1, N, -1)])
            v = torch.cat([v, self.bias_v.expand(1, N, -1)])
            attn_mask, key_padding_mask = (None if m is None else F.pad(m, (0, 1)) for m in (attn_mask, key_padding_mask))
        k = k.view(k.shape[0], N, heads, head_dim).permute(1, 2, 0, 3)
        v = v.view(v.shape[0], N, heads, head_dim).permute(1, 2, 0, 3)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(N, heads, 1, head_dim)], dim=2)
            v = torch.cat([v, v.new_zeros(N, heads, 1, head_dim)], dim=2)
            attn_mask, key_padding_mask = (None if m is None else F.pad(m, (0, 1)) for m in (attn_mask, key_padding_mask))
        mask = self._merged_mask(attn_mask, key_padding_mask, N, k.shape[2])
        dropout_p = self.dropout if self.training else 0.0

        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(head_dim))
            if mask is not None:
                scores = scores + mask
            weights = softmax(scores, -1)
            if dropout_p > 0:
                weights = F.dropout(weights, p=dropout_p)  # torch returns the weights after dropout
            attended = weights @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            attended = scaled_dot_product_attention(q, k, v, mask, dropout_p, causal)
        out = F.linear(attended.permute(2, 0, 1, 3).reshape(L, N, self.embed_dim), self.out_proj.weight, self.out_proj.bias)
        if not batched:
            return out.squeeze(1), (weights.squeeze(0) if weights is not None else None)
        return (out.transpose(0, 1) if self.batch_first else out), weights

    def _check_shapes(self, query, key, value, key_padding_mask, attn_mask) -> bool:
        """torch's shape rules; True when the input is batched (3-D)."""
        name = "seqops.nn.MultiheadAttention"
        if query.dim() not in (2, 3):
            raise ValueError(f"{name}: query should be unbatched 2-D or batched 3-D, got a {query.dim()}-D tensor")
        batched = query.dim() == 3
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(f"{name}: key and value must be {query.dim()}-D like query, got {key.dim()}-D and {value.dim()}-D")
        if query.shape[-1] != self.embed_dim:
            raise ValueError(f"{name}: expected query's last dim to be embed_dim {self.embed_dim}, got {query.shape[-1]}")
        if key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ValueError(f"{name}: expected key and value features {self.kdim} and {self.vdim}, got "
                             f"{key.shape[-1]} and {value.shape[-1]}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"{name}: key's sequence and batch dims {tuple(key.shape[:-1])} do not match "
                             f"value's {tuple(value.shape[:-1])}")
        seq_dim, batch_dim = (1, 0) if self.batch_first else (0, 1)
        if batched and query.shape[batch_dim] != key.shape[batch_dim]:
            raise ValueError(f"{name}: query batch {query.shape[batch_dim]} and key batch {key.shape[batch_dim]} differ")
        L = query.shape[seq_dim] if batched else query.shape[0]
        S = key.shape[seq_dim] if batched else key.shape[0]
        N = query.shape[batch_dim] if batched else 1
        if key_padding_mask is not None:
            expected = (N, S) if batched else (S,)
            if tuple(key_padding_mask.shape) != expected:
                raise ValueError(f"{name}: key_padding_mask of shape {tuple(key_padding_mask.shape)}, expected {expected}")
        if attn_mask is not None:
            allowed = [(L, S), (N * self.num_heads, L, S)] if batched else [(L, S), (self.num_heads, L, S)]
            if tuple(attn_mask.shape) not in allowed:
                raise ValueError(f"{name}: attn_mask of shape {tuple(attn_mask.shape)}, expected one of {allowed}")
        return batched

    def _project_in(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v = the input projections; one matrix product for self-attention."""
        E = self.embed_dim
        if not self._qkv_same_embed_dim:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
            return (F.linear(query, self.q_proj_weight, b_q), F.linear(key, self.k_proj_weight, b_k),
                    F.linear(value, self.v_proj_weight, b_v))
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key and key is value:
            return F.linear(query, w, b).unflatten(-1, (3, E)).unbind(-2)
        w_q, w_kv = w.split([E, 2 * E])
        b_q, b_kv = b.split([E, 2 * E]) if b is not None else (None, None)
        if key is value:
            return (F.linear(query, w_q, b_q), *F.linear(key, w_kv, b_kv).unflatten(-1, (2, E)).unbind(-2))
        w_k, w_v = w_kv.chunk(2)
        b_k, b_v = b_kv.chunk(2) if b_kv is not None else (None, None)
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def _merged_mask(self, attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], N: int,
                     S: int) -> Optional[Tensor]:
        """attn_mask ([L, S] or [N * heads, L, S]) plus key_padding_mask ([N, S]), as one
        additive mask broadcastable to [N, heads, L, S]."""
        if attn_mask is not None:
            attn_mask = attn_mask.view(N, self.num_heads, *attn_mask.shape[-2:]) if attn_mask.dim() == 3 else attn_mask
        if key_padding_mask is not None:
            padding = key_padding_mask.view(N, 1, 1, S)
            return padding if attn_mask is None else attn_mask + padding
        return attn_mask
