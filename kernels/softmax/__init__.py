"""Fused softmax in Triton: forward and backward, any dim, scale, boolean mask and causal mask
(rows.py: tiling and row addressing; forward.py, backward.py: kernels and launchers).

Two forms of each kernel:
- one pass, for rows that fit on chip (n_cols <= MAX_ONE_PASS_COLS): a tile of BLOCK_M
  whole rows is read once and written once;
- online, for longer rows: a row at a time, a first sweep keeps a running max and a
  running sum rescaled as the max grows (the online softmax), a second sweep writes. Each
  element is read twice (the backward: y and dy twice), but the grid is bounded so that
  the rows in flight fit half the L2 cache (rows.online_programs), each program taking
  every n-th row: the second read comes from L2, and device memory sees one read and one
  write of each element, up to the width where the bound would idle more than 3/4 of the
  SMs (fp32 rows of about 99k columns on an H100); wider rows run a program each.

Everything accumulates in fp32 but the backward's sum(dy * y), in fp64 (backward.py); inputs and outputs are fp32, fp16 or bf16, and the output
dtype may differ from the input's (the `dtype=` cast of torch.softmax, fused). Offsets are
64-bit; row indices are 32-bit unless a launch has 2**31 rows or more. Rows are indexed through seqops.kernels.layout, so strided and broadcast inputs
are read in place; the softmax dim need not be the last or contiguous.
"""
from .backward import softmax_backward
from .forward import softmax_forward
from .rows import MAX_ONE_PASS_COLS, Plan, plan

__all__ = ["softmax_forward", "softmax_backward", "Plan", "plan", "MAX_ONE_PASS_COLS"]
