"""The CUDA C++ recurrent cell steps (csrc/recurrent/) behind the fused cell contracts of
seqops/ops/recurrent/contract.py (lstm_cell; gru_cell, rnn_tanh_cell, rnn_relu_cell):
tensors in, plain values to the extension, tensors out.

The kernels read every tensor through its own strides (sliced, transposed and expanded
ones in place). As the Triton cells do, the backward's kernel gives the gate gradients
and d_h0 (and the LSTM's d_c0); the input, weight and bias gradients are plain GEMMs and
sums, run by torch here."""
from __future__ import annotations

from typing import Optional

import torch

from seqops import _ext
from seqops.backends.cuda_values import dtype_code, launch_place
from seqops.ops.recurrent import contract as recurrent_contract
from seqops.kernels.packed_steps import cell_gate_products, split_gate_gradients  # pure torch: imports no triton


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
    d_bias = None
    if has_bias:
        d_bias = dbias.sum(0).to(w_ih.dtype) if dbias is not None else torch.zeros(4 * H, dtype=w_ih.dtype,
                                                                                  device=input.device)
    d_input, d_w_ih, d_w_hh = cell_gate_products(dgates, dgates, input, h0, w_ih, w_hh)
    return d_input, d_h0.to(h0.dtype), d_c0.to(c0.dtype), d_w_ih, d_w_hh, d_bias


# -- the cells with one state: GRU (saved r, z, n, hn: [B, 4H]) and Elman RNN (saved h1 in fp32: [B, H]) --

def hidden_cell_forward_values(cell, input, h0, w_ih, w_hh, b_ih, b_hh, h1, saved) -> dict:
    """The extension's hidden_cell_forward arguments (all but device and stream); cell:
    "gru_cell", "rnn_tanh_cell" or "rnn_relu_cell"."""
    tensors = (("x", input), ("h0", h0), ("w_ih", w_ih), ("w_hh", w_hh), ("h1", h1), ("saved", saved))
    values = {name: _pointer(t) for name, t in tensors + (("b_ih", b_ih), ("b_hh", b_hh))}
    values.update({f"{name}_strides": _strides(t) for name, t in tensors})
    values.update(cell=cell, b_ih_stride=0 if b_ih is None else b_ih.stride(0),
                  b_hh_stride=0 if b_hh is None else b_hh.stride(0), dtype=dtype_code(input), batch=h0.shape[0],
                  input_size=input.shape[1], hidden=h0.shape[1])
    return values


def hidden_cell_backward_values(cell, d_h1, h0, saved, w_hh, dgates, d_h0) -> dict:
    """The extension's hidden_cell_backward arguments (all but device and stream). The RNNs'
    kernels never read h0: it goes as 0."""
    h0 = h0 if cell == "gru_cell" else None
    tensors = (("d_h1", d_h1), ("h0", h0), ("saved", saved), ("w_hh", w_hh), ("dgates", dgates), ("d_h0", d_h0))
    values = {name: _pointer(t) for name, t in tensors}
    values.update({f"{name}_strides": _strides(t) for name, t in tensors})
    values.update(cell=cell, dtype=dtype_code(d_h1), batch=d_h0.shape[0], hidden=d_h0.shape[1])
    return values


# Values saved a hidden unit (the contract's S), by cell name.
SAVED_PER_UNIT = {f"{mode}_cell": count for mode, count in recurrent_contract.SAVED_PER_UNIT.items()}


def hidden_cell_forward(cell: str, input: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                        b_ih: Optional[torch.Tensor], b_hh: Optional[torch.Tensor],
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """input [B, I], h0 [B, H], w_ih [G*H, I], w_hh [G*H, H], biases [G*H] or None (any
    strides). Returns h1 [B, H] in input's dtype and saved [B, S*H] (fp32)."""
    B, H = h0.shape
    h1 = torch.empty(B, H, dtype=input.dtype, device=input.device)
    saved = torch.empty(B, SAVED_PER_UNIT[cell] * H, dtype=torch.float32, device=input.device)
    if B and H:
        values = hidden_cell_forward_values(cell, input, h0, w_ih, w_hh, b_ih, b_hh, h1, saved)
        _ext.load().hidden_cell_forward(**values, **launch_place(input.device))
    return h1, saved


def hidden_cell_backward(cell: str, d_h1: torch.Tensor, input: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor,
                         w_hh: torch.Tensor, saved: torch.Tensor, has_bias: bool):
    """Gradients of hidden_cell_forward for d_h1 [B, H]: d_input [B, I], d_h0 [B, H],
    d_w_ih [G*H, I], d_w_hh [G*H, H], d_b_ih, d_b_hh [G*H] (None without biases). The
    kernel gives the pre-activation gradients and d_h0; the rest are GEMMs and sums over
    them, the input side's (x W_ih^T + b_ih) and the recurrent side's (h0 W_hh^T + b_hh)
    apart for the GRU, whose r gates the recurrent n."""
    B, H = h0.shape
    fp32 = dict(dtype=torch.float32, device=input.device)
    dgates = torch.zeros(B, SAVED_PER_UNIT[cell] * H, **fp32)
    d_h0 = torch.zeros(B, H, **fp32)
    # The kernel reads the incoming gradient in the cell's dtype.
    d_h1 = d_h1 if d_h1.dtype == h0.dtype else d_h1.to(h0.dtype)
    if B and H:
        _ext.load().hidden_cell_backward(**hidden_cell_backward_values(cell, d_h1, h0, saved, w_hh, dgates, d_h0),
                                         **launch_place(input.device))
    if cell == "gru_cell":  # dgates = (dr, dz, dn, dn * r)
        d_input_side, d_hidden_side = split_gate_gradients(dgates)
    else:
        d_input_side = d_hidden_side = dgates
    d_b_ih = d_input_side.sum(0).to(w_ih.dtype) if has_bias else None
    d_b_hh = (d_hidden_side.sum(0).to(w_hh.dtype) if cell == "gru_cell" else d_b_ih) if has_bias else None
    d_input, d_w_ih, d_w_hh = cell_gate_products(d_input_side, d_hidden_side, input, h0, w_ih, w_hh)
    return d_input, d_h0.to(h0.dtype), d_w_ih, d_w_hh, d_b_ih, d_b_hh


def gru_cell_forward(input, h0, w_ih, w_hh, b_ih, b_hh):
    return hidden_cell_forward("gru_cell", input, h0, w_ih, w_hh, b_ih, b_hh)


def gru_cell_backward(d_h1, input, h0, w_ih, w_hh, saved, has_bias):
    return hidden_cell_backward("gru_cell", d_h1, input, h0, w_ih, w_hh, saved, has_bias)


def rnn_tanh_cell_forward(input, h0, w_ih, w_hh, b_ih, b_hh):
    return hidden_cell_forward("rnn_tanh_cell", input, h0, w_ih, w_hh, b_ih, b_hh)


def rnn_tanh_cell_backward(d_h1, input, h0, w_ih, w_hh, saved, has_bias):
    return hidden_cell_backward("rnn_tanh_cell", d_h1, input, h0, w_ih, w_hh, saved, has_bias)


def rnn_relu_cell_forward(input, h0, w_ih, w_hh, b_ih, b_hh):
    return hidden_cell_forward("rnn_relu_cell", input, h0, w_ih, w_hh, b_ih, b_hh)


def rnn_relu_cell_backward(d_h1, input, h0, w_ih, w_hh, saved, has_bias):
    return hidden_cell_backward("rnn_relu_cell", d_h1, input, h0, w_ih, w_hh, saved, has_bias)
