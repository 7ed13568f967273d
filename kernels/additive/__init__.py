"""Fused additive (Bahdanau) attention: scores v . tanh(qp_i + kp_j) computed tile by tile
from the projected queries and keys, an online softmax, and a backward that recomputes
them; the [Lq, Lk, d] pre-activations never exist beyond one tile."""
from .backward import additive_attention_backward
from .forward import additive_attention_forward

__all__ = ["additive_attention_forward", "additive_attention_backward"]
