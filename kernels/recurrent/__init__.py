"""Fused recurrent kernels in Triton: the LSTM step (step.py), a single cell on it
(cell.py), one direction of one layer over a sequence, a step a launch (layer.py) or the
whole sequence in one launch (sequence.py); the GRU cell (gru_cell.py) and the tanh/relu
RNN cell (rnn_cell.py) steps, and one direction of one GRU/RNN layer on them, a step a
launch (hidden_layer.py), or the whole sequence in one launch (hidden_sequence.py). The
sequence kernels of both share their grid (sequence_grid.py)."""
from .cell import lstm_cell_backward, lstm_cell_forward
from .gru_cell import gru_cell_backward, gru_cell_forward
from .hidden_layer import (gru_layer_backward, gru_layer_forward, rnn_relu_layer_backward, rnn_relu_layer_forward,
                           rnn_tanh_layer_backward, rnn_tanh_layer_forward)
from .hidden_sequence import (gru_sequence_backward, gru_sequence_forward, rnn_relu_sequence_backward,
                              rnn_relu_sequence_forward, rnn_tanh_sequence_backward, rnn_tanh_sequence_forward)
from .layer import lstm_layer_backward, lstm_layer_forward
from .rnn_cell import rnn_relu_cell_backward, rnn_relu_cell_forward, rnn_tanh_cell_backward, rnn_tanh_cell_forward
from .sequence import lstm_sequence_backward, lstm_sequence_forward

__all__ = ["lstm_cell_forward", "lstm_cell_backward", "lstm_layer_forward", "lstm_layer_backward",
           "lstm_sequence_forward", "lstm_sequence_backward",
           "gru_cell_forward", "gru_cell_backward", "rnn_tanh_cell_forward", "rnn_tanh_cell_backward",
           "rnn_relu_cell_forward", "rnn_relu_cell_backward", "gru_layer_forward", "gru_layer_backward",
           "rnn_tanh_layer_forward", "rnn_tanh_layer_backward", "rnn_relu_layer_forward", "rnn_relu_layer_backward",
           "gru_sequence_forward", "gru_sequence_backward", "rnn_tanh_sequence_forward", "rnn_tanh_sequence_backward",
           "rnn_relu_sequence_forward", "rnn_relu_sequence_backward"]
