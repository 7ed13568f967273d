"""The public functions of seqops, by their public import path (each lives in its op
family, seqops/ops/<family>/api.py)."""
from seqops.ops.additive import additive_attention
from seqops.ops.attention import scaled_dot_product_attention
from seqops.ops.recurrent import gru_cell, lstm, lstm_cell, rnn_relu_cell, rnn_tanh_cell
from seqops.ops.softmax import softmax

__all__ = ["softmax", "scaled_dot_product_attention", "lstm_cell", "lstm", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "additive_attention"]
