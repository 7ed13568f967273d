"""Fused recurrent kernels in Triton: the LSTM step (step.py), a single cell on it
(cell.py) and one direction of one layer over a sequence (layer.py)."""
from .cell import lstm_cell_backward, lstm_cell_forward
from .layer import lstm_layer_backward, lstm_layer_forward

__all__ = ["lstm_cell_forward", "lstm_cell_backward", "lstm_layer_forward", "lstm_layer_backward"]
