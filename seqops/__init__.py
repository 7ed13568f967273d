"""seqops: fused GPU kernels for sequence models (softmax, attention, LSTM, GRU, RNN), as PyTorch
ops with autograd and drop-in layers. See README.md."""

__version__ = "0.1.0"

from seqops.dispatch import BACKENDS, BackendUnavailable, backend
from seqops.functional import (additive_attention, gru_cell, lstm_cell, rnn_relu_cell, rnn_tanh_cell,
                               scaled_dot_product_attention, softmax)
from seqops import backends  # noqa: F401  (registers the kernel backends)
from seqops import nn
from seqops.integrations.functional import patch_functional, patched_functional, unpatch_functional
from seqops.integrations.torch_nn import patch, unpatch

__all__ = [
    "BACKENDS", "BackendUnavailable", "backend", "softmax", "scaled_dot_product_attention", "lstm_cell", "gru_cell", "rnn_tanh_cell",
    "rnn_relu_cell", "additive_attention", "nn", "patch", "unpatch",
    "patch_functional", "unpatch_functional", "patched_functional",
    "__version__",
]
