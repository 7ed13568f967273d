"""One folder per op family (softmax, attention, recurrent), each with api.py (the public
functions), contract.py (checks, limits, what implementations receive), op.py (the
torch.library ops and their autograd), reference.py and torch_impl.py; masks.py,
checks.py and autograd.py serve them all."""
