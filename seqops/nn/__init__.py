"""Drop-in layers: each takes the constructor arguments, attributes and state_dict of the
torch.nn layer it is named after, and runs seqops' ops."""
import torch

from seqops.nn.additive_attention import AdditiveAttention
from seqops.nn.gru_rnn import GRU, RNN, GRUCell, RNNCell
from seqops.nn.lstm import LSTM, LSTMCell
from seqops.nn.multihead_attention import MultiheadAttention
from seqops.nn.softmax import Softmax

# torch layer type -> its seqops drop-in; what seqops.patch swaps.
DROP_INS = {
    torch.nn.Softmax: Softmax,
    torch.nn.MultiheadAttention: MultiheadAttention,
    torch.nn.LSTMCell: LSTMCell,
    torch.nn.LSTM: LSTM,
    torch.nn.GRUCell: GRUCell,
    torch.nn.GRU: GRU,
    torch.nn.RNNCell: RNNCell,
    torch.nn.RNN: RNN,
}

__all__ = ["Softmax", "MultiheadAttention", "LSTMCell", "LSTM", "GRUCell", "GRU", "RNNCell", "RNN", "AdditiveAttention", "DROP_INS"]
