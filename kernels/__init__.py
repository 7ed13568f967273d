"""Triton kernels of seqops and their launchers, installed as `seqops.kernels`.

Importing any module here needs triton. The launchers take tensors and do the stride
bookkeeping; validation of user input happens earlier, in `seqops.functional`.
"""
