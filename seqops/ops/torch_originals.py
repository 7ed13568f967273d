"""PyTorch's own softmax and attention functions as they were when seqops was imported.

The torch backend calls these, never the names in torch's namespaces: while
seqops.patch_functional() routes torch.softmax and F.scaled_dot_product_attention to
seqops, a torch-backend call through those names would come straight back to seqops."""
import torch
import torch.nn.functional as F

softmax = torch.softmax
scaled_dot_product_attention = F.scaled_dot_product_attention
