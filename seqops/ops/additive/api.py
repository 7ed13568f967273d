"""seqops.additive_attention: check the call (contract.py), pick an implementation, run it."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from seqops import dispatch
from seqops.ops.additive import contract, op


def additive_attention(query: Tensor, keys: Tensor, values: Tensor, w_query: Tensor, w_key: Tensor, v: Tensor,
                       b_query: Optional[Tensor] = None, b_key: Optional[Tensor] = None,
                       mask: Optional[Tensor] = None, need_weights: bool = False
                       ) -> tuple[Tensor, Optional[Tensor]]:
    """Additive (Bahdanau) attention:
    context_i = sum_j softmax_j(v . tanh(w_query q_i + b_query + w_key k_j + b_key)) values_j.

    query [B, Lq, Dq], keys [B, Lk, Dk], values [B, Lk, Dv]; w_query [d, Dq], w_key
    [d, Dk], v [d], b_query and b_key [d] or None (nn.Linear's weight and bias layout);
    one floating dtype and device. mask: bool, True = attend: [Lk], [B, Lk] (key padding),
    or 3-D broadcastable to [B, Lq, Lk]. Returns (context [B, Lq, Dv], weights
    [B, Lq, Lk] when need_weights, else None). A row whose keys are all masked gives
    context 0 and weights 0 (as SDPA does; the textbook formulation's softmax gives NaN)
    and passes no gradient. The fused kernels never hold more than a tile of the
    [B, Lq, Lk, d] pre-activations; they differentiate in reverse mode (torch.func.grad,
    vjp, vmap too); forward mode (jvp) raises unless seqops.backend("torch") is chosen.
    """
    mask = contract.check(query, keys, values, w_query, w_key, v, b_query, b_key, mask, need_weights)
    impl = dispatch.select("additive_attention", query.device, query, keys, values, w_query, w_key, v, b_query,
                           b_key, mask, need_weights)
    if impl.composite:
        return impl.run(query, keys, values, w_query, w_key, v, b_query, b_key, mask, need_weights)
    return op.run_fused(impl, query, keys, values, w_query, w_key, v, b_query, b_key, mask, need_weights)
