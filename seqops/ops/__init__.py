"""One module per op: its torch.library registration (autograd, fake kernel) and its backends."""
