"""Ways into seqops for code that was not written for it: torch_nn.py swaps the layers of a
built torch model."""
