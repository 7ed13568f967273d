"""Triton kernels of seqops and their launchers, installed as `seqops.kernels`.

One folder per op family (softmax/, attention/, recurrent/); runtime.py, layout.py,
masks.py, packed_steps.py and tiles.py serve them all. Importing any module here needs
triton, save layout.py and packed_steps.py (pure torch, which the CUDA C++ backend's
launchers share); nothing here imports from seqops. The launchers take plain tensors (any strides) and allocate
their outputs; checking user input is the op's contract's job (seqops/ops/<family>/).
"""
