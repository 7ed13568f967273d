"""The recurrent family: seqops.lstm_cell, the LSTM behind seqops.nn.LSTM, and their
implementations."""
from seqops.ops.recurrent import reference, torch_impl  # noqa: F401  (they register themselves)
from seqops.ops.recurrent.api import lstm, lstm_cell

__all__ = ["lstm_cell", "lstm"]
