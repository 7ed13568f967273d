"""The recurrent family: seqops.lstm_cell, gru_cell, rnn_tanh_cell, rnn_relu_cell, the
multi-layer LSTM, GRU and RNN behind seqops.nn, and their implementations."""
from seqops.ops.recurrent import reference, torch_impl  # noqa: F401  (they register themselves)
from seqops.ops.recurrent.api import gru_cell, hidden_rnn, lstm, lstm_cell, rnn_relu_cell, rnn_tanh_cell

__all__ = ["lstm_cell", "lstm", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "hidden_rnn"]
