"""seqops.scaled_dot_product_attention: check the call (contract.py), pick an
implementation, run it."""
from __future__ import annotations

from typing import Optional

import sys

from torch import Tensor

from seqops import dispatch
from seqops.ops.attention import contract, op


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> Tensor:
    """Attention as torch.nn.functional.scaled_dot_product_attention computes it.

    query [..., L, E], key [..., S, E], value [..., S, Ev] -> [..., L, Ev]; the leading
    dims broadcast. attn_mask: bool (True = attend) or float (added to the scores),
    broadcastable to [..., L, S]; a float mask that requires grad gets its gradient; or
    torch's causal bias objects (torch.nn.attention.bias.causal_upper_left(L, S) and
    causal_lower_right(L, S), the bottom-right alignment a query block after a KV cache
    needs). is_causal: query i attends to keys j <= i (the upper-left triangle when
    L != S). Given both attn_mask and is_causal, seqops applies both (torch's fused
    kernels do; its math path raises). dropout_p: applied to the attention probabilities
    whenever > 0 (as torch: pass 0.0 in eval); torch.manual_seed makes it reproducible.
    scale: default 1/sqrt(E). enable_gqa: dim -3 holds heads, and key/value heads divide
    query heads. A row whose keys are all masked gives 0, as torch does.
    """
    causal_offset = 0
    if type(attn_mask) not in (Tensor, type(None)) and _is_causal_bias(attn_mask):
        attn_mask, is_causal, causal_offset = contract.causal_bias(attn_mask, query, key, is_causal)
    scale_used = contract.check(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    dropout_p = float(dropout_p)
    impl = dispatch.select("attention", query.device, query, key, value, attn_mask, dropout_p, is_causal,
                           scale_used, enable_gqa, causal_offset)
    if impl.composite:
        given = None if scale is None else scale_used  # torch's own default path is its fastest
        return impl.run(query, key, value, attn_mask, dropout_p, is_causal, given, enable_gqa, causal_offset)
    return op.run_fused(impl, query, key, value, attn_mask, dropout_p, is_causal, scale_used, enable_gqa,
                        causal_offset)


def _is_causal_bias(mask: object) -> bool:
    """Whether `mask` is one of torch's causal bias objects (a Tensor subclass holding no
    values). Their module is not imported here (it pulls in torch._dynamo, seconds of
    import time): an object of its class can only exist once the caller imported it."""
    bias = sys.modules.get("torch.nn.attention.bias")
    return bias is not None and isinstance(mask, bias.CausalBias)
