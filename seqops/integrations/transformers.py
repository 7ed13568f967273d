"""seqops attention in Hugging Face transformers: `register()` adds the name "seqops" to
transformers' attention interface, so that

    seqops.integrations.transformers.register()
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="seqops")
    # or, on a built model: model.set_attn_implementation("seqops")

runs every attention layer of a model that dispatches through that interface (Llama-style
and GPT-2 decoders, BERT-style encoders, T5-style encoder-decoders) in
seqops.scaled_dot_product_attention, whose backend seqops.dispatch picks (`seqops.backend`
chooses it as for any other call).

transformers is optional: importing this module (and seqops) never imports it; register()
does, and raises ImportError saying how to install it when it is missing.

What the model hands the attention function, and what this one does with it:
- query [B, Hq, L, E], key and value [B, Hkv, S, E] (Hkv divides Hq: grouped-query
  attention runs as such, the key/value heads are never repeated in memory).
- attention_mask: built by the mask function registered with the same name. The one
  registered is transformers' boolean mask (True = attend), [B, 1, L, S], or None when the
  mask is plain causal or plain full attention (no padding); a 4-D mask the caller built
  arrives as it is (bool, or float added to the scores). Without this registration
  transformers would build no mask at all for an unknown name: padding would be ignored.
- is_causal (keyword, else the module's attribute): only used when no mask came, and only
  for more than one query. transformers leaves the mask out only where torch's upper-left
  causal alignment is the right one (L == S, or a cache whose extra slots are all in the
  future); a block of queries after a KV cache always comes with a mask, which holds the
  bottom-right alignment.
- position_bias (T5): an additive float bias [1 or B, H, L, S] with its gradient; it is
  folded into the mask (masked entries -inf) and reaches seqops as a float mask, whose
  gradient seqops computes.
- dropout, scaling: passed on (dropout is 0.0 in eval, as the models pass it).

A query row that may attend no key at all (the padding positions of a left-padded batch
under a causal mask) gives 0, as transformers' "sdpa" gives; "eager" gives the mean of the
values there instead. Those rows are padding: no real position reads them, so the logits
at real positions and every gradient of a loss over real positions are the same as eager's.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

import seqops

NAME = "seqops"

_INSTALL_HINT = 'pip install "seqops[transformers]" (or pip install transformers)'


def register() -> None:
    """Register seqops attention, and the mask it needs, under the name "seqops" in
    transformers' AttentionInterface and AttentionMaskInterface. Calling it again is
    harmless (it registers the same functions again)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError as error:
        raise ImportError(
            f"seqops.integrations.transformers.register() needs transformers, which is not installed: {_INSTALL_HINT}"
        ) from error
    AttentionInterface.register(NAME, attention_forward)
    # The boolean mask transformers builds for torch's SDPA is what seqops takes too: the
    # same semantics (True = attend, a row with no key gives 0), and the same places where
    # it may be left out in favour of is_causal, since seqops' is_causal is torch's.
    AttentionMaskInterface.register(NAME, sdpa_mask)


def attention_forward(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Optional[Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    is_causal: Optional[bool] = None,
    position_bias: Optional[Tensor] = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention function signature: returns (output [B, L, Hq, Ev]
    contiguous, None). seqops computes no attention weights."""
    _refuse_unsupported(attention_mask, kwargs)
    query_length = query.shape[-2]
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    # A mask, when given, already holds the causal pattern (with the alignment the cache
    # needs); a single query attends every key it is given.
    is_causal = bool(is_causal) and attention_mask is None and query_length > 1
    if position_bias is not None:
        attention_mask = _mask_with_bias(position_bias, attention_mask)
    output = seqops.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=float(dropout),
        is_causal=is_causal,
        scale=None if scaling is None else float(scaling),
        enable_gqa=key.shape[-3] != query.shape[-3],
    )
    return output.transpose(1, 2).contiguous(), None


def _mask_with_bias(position_bias: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
    """The additive float mask seqops receives for a model with a score bias (T5): the bias
    where the mask lets a key be seen, -inf where it does not. -inf (not the dtype's
    minimum, which eager adds) so that a masked score stays masked whatever the bias."""
    if attention_mask is None:
        return position_bias
    if attention_mask.dtype == torch.bool:
        return torch.where(attention_mask, position_bias, float("-inf"))
    return position_bias + attention_mask


def _refuse_unsupported(attention_mask: Optional[Tensor], kwargs: dict) -> None:
    """Raise on what seqops' attention does not compute, instead of silently computing
    something else."""
    if attention_mask is not None and not isinstance(attention_mask, Tensor):
        raise TypeError(
            f'attn_implementation="{NAME}" takes a tensor attention mask (bool or float), got '
            f"{type(attention_mask).__name__}; a flex-attention BlockMask needs attn_implementation=\"flex_attention\""
        )
    if kwargs.get("softcap") is not None:
        raise ValueError(f'attn_implementation="{NAME}" does not compute logit soft-capping (softcap); use "eager"')
    if kwargs.get("s_aux") is not None:
        raise ValueError(f'attn_implementation="{NAME}" does not compute attention sinks (s_aux); use "eager"')
    if kwargs.get("output_attentions"):
        raise ValueError(
            f'attn_implementation="{NAME}" never forms the attention weights, so it cannot return them '
            '(output_attentions=True); use attn_implementation="eager" for them'
        )
