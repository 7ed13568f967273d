"""The CUDA C++ LSTM cell step (csrc/recurrent/) behind the fused lstm_cell contract of
seqops/ops/recurrent/contract.py: tensors in, plain values to the extension, tensors out.

The kernels read every tensor through its own strides (sliced, transposed and expanded
ones in place). As the Triton cell does, the backward's kernel gives the gate gradients,
d_c0 and d_h0 = dgates @ w_hh; the input and weight gradients are plain GEMMs, run by
torch here."""
from __future__ import annotations

from typing import Optional

import torch

from seqops import _ext
from seqops.backends.cuda_values import dtype_code, launch_place


def _pointer(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _strides(t: Optional[torch.Tensor]) -> tuple[int, int]:
    return (0, 0) if t is None else tuple(t.stride())


def forward_values(input, h0, c0, w_ih, w_hh, b_ih, b_hh, h1, c1, gates) -> dict:
    """The extension's lstm_cell_forward arguments (all but device and stream)."""
    values = {name: _pointer(t) for name, t in (("x", input), ("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh),
                                                 ("b_ih", b_ih), ("b_hh", b_hh), ("h1", h1), ("c1", c1),
                                                 ("gates", gates))}
    values.update({f"{name}_strides": _strides(t) for name, t in (("x", input), ("h0", h0), ("c0", c0),
                                                                  ("w_ih", w_ih), ("w_hh", w_hh), ("h1", h1),
                                                                  ("c1", c1), ("gates", gates))})
    values.update(b_ih_stride=0 if b_ih is None else b_ih.stride(0), b_hh_stride=0 if b_hh is None else b_hh.stride(0),
                  dtype=dtype_code(input), batch=c0.shape[0], input_size=input.shape[1], hidden=c0.shape[1])
    return values


def backward_values(d_h1, d_c1, gates, c1, c0, w_hh, dgates, d_c0, d_h0, dbias) -> dict:
    """The extension's lstm_cell_backward arguments (all but device and stream)."""
    tensors = (("d_h1", d_h1), ("d_c1", d_c1), ("gates", gates), ("c1", c1), ("c0", c0), ("w_hh", w_hh),
               ("dgates", dgates), ("d_c0", d_c0), ("d_h0", d_h0), ("dbias", dbias))
    values = {name: _pointer(t) for name, t in tensors}
    values.update({f"{name}_strides": _strides(t) for name, t in tensors})
    values.update(dtype=dtype_code(c0), batch=c0.shape[0], hidden=c0.shape[1])
    return values


def lstm_cell_forward(input: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor,
                      w_hh: torch.Tensor, b_ih: Optional[torch.Tensor], b_hh: Optional[torch.Tensor],
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input [B, I], h0, c0 [B, H], w_ih [4H, I], w_hh [4H, H], biases [4H] or None (any
    strides). Returns h1, c1 [B, H] in input's dtype and the gate activations [B, 4H] (fp32)."""
    B, H = c0.shape
    h1 = torch.empty(B, H, dtype=input.dtype, device=input.device)
    c1 = torch.empty(B, H, dtype=input.dtype, device=input.device)
    gates = torch.empty(B, 4 * H, dtype=torch.float32, device=input.device)
    if B and H:
        _ext.load().lstm_cell_forward(**forward_values(input, h0, c0, w_ih, w_hh, b_ih, b_hh, h1, c1, gates),
                                      **launch_place(input.device))
    return h1, c1, gates


def lstm_cell_backward(d_h1: Optional[torch.Tensor], d_c1: Optional[torch.Tensor], input: torch.Tensor,
                       h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, c1: torch.Tensor,
                       gates: torch.Tensor, has_bias: bool):
    """Gradients of lstm_cell_forward: d_input, d_h0, d_c0, d_w_ih, d_w_hh and d_bias (the
    same for b_ih and b_hh; None without biases)."""
    B, H = c0.shape
    fp32 = dict(dtype=torch.float32, device=input.device)
    dgates = torch.zeros(B, 4 * H, **fp32)
    d_h0, d_c0 = torch.zeros(B, H, **fp32), torch.zeros(B, H, **fp32)
    dbias = None
    # The kernel reads the incoming gradients in the cell's dtype.
    d_h1 = d_h1 if d_h1 is None or d_h1.dtype == c0.dtype else d_h1.to(c0.dtype)
    d_c1 = d_c1 if d_c1 is None or d_c1.dtype == c0.dtype else d_c1.to(c0.dtype)
    if B and H:
        ext = _ext.load()
        if has_bias:
            dbias = torch.empty(ext.lstm_cell_plan(B, H)["row_blocks"], 4 * H, **fp32)
        ext.lstm_cell_backward(**backward_values(d_h1, d_c1, gates, c1, c0, w_hh, dgates, d_c0, d_h0, dbias),
                               **launch_place(input.device))
    dgates = dgates.to(w_ih.dtype)
    d_bias = None
    if has_bias:
        d_bias = dbias.sum(0).to(w_ih.dtype) if dbias is not None else torch.zeros(4 * H, dtype=w_ih.dtype,
                                                                                  device=input.device)
    return (dgates @ w_ih, d_h0.to(h0.dtype), d_c0.to(c0.dtype), dgates.t() @ input, dgates.t() @ h0.to(w_hh.dtype),
            d_bias)
