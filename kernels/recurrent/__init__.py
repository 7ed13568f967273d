"""Fused recurrent kernels in Triton: the LSTM step (step.py), a single cell on it
(cell.py), one direction of one layer over a sequence, a step a launch (layer.py) or the
whole sequence in one launch (sequence.py)."""
from .cell import lstm_cell_backward, lstm_cell_forward
from .layer import lstm_layer_backward, lstm_layer_forward
from .sequence import lstm_sequence_backward, lstm_sequence_forward

__all__ = ["lstm_cell_forward", "lstm_cell_backward", "lstm_layer_forward", "lstm_layer_backward",
           "lstm_sequence_forward", "lstm_sequence_backward"]
