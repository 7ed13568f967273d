"""seqops.nn.TransformerEncoderLayer and TransformerEncoder: torch's, with its fused
inference fast path turned off so that their attention really runs in seqops.

In eval mode without grad, torch.nn.TransformerEncoderLayer runs one native kernel
(torch._transformer_encoder_layer_fwd) instead of its submodules, and TransformerEncoder
turns padded batches into nested tensors first: either way a patched self_attn would never
be called. These drop-ins always take torch's composite path, through self.self_attn.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from seqops.nn.drop_in import DropIn


class TransformerEncoderLayer(DropIn, torch.nn.TransformerEncoderLayer):
    """torch.nn.TransformerEncoderLayer (same constructor, submodules and state_dict; an
    instance of it too) whose forward always runs self.self_attn (seqops' attention once
    patched), in training and in inference alike."""

    def forward(self, src: Tensor, src_mask: Optional[Tensor] = None, src_key_padding_mask: Optional[Tensor] = None,
                is_causal: bool = False) -> Tensor:
        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask", other_type=F._none_or_dtype(src_mask),
            other_name="src_mask", target_type=src.dtype)
        src_mask = F._canonical_mask(mask=src_mask, mask_name="src_mask", other_type=None, other_name="",
                                     target_type=src.dtype, check_other=False)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))


class TransformerEncoder(DropIn, torch.nn.TransformerEncoder):
    """torch.nn.TransformerEncoder (same constructor, submodules and state_dict; an
    instance of it too) that never converts a padded batch to a nested tensor: its layers,
    and seqops' attention in them, take the padded batch with its key padding mask."""

    @property
    def use_nested_tensor(self) -> bool:
        return False

    @use_nested_tensor.setter
    def use_nested_tensor(self, value: bool) -> None:
        """torch's constructor sets it; seqops' layers take padded batches only."""
