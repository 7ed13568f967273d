"""The CUDA C++ softmax (csrc/softmax/) behind the fused contract of
seqops/ops/softmax/contract.py: tensors in, plain values to the extension, tensors out.

The kernels take the row model of seqops.kernels.layout, as the Triton ones do: the
softmax dim moved last, leading dims collapsed to at most three, each tensor with its own
strides, so sliced, transposed and broadcast inputs are read in place. Where the leading
dims do not collapse (say a permuted 5-d input), the inputs are copied once into the
output's layout (layout.softmax_row_operands, which Triton shares). A causal mask along a dim
other than the last becomes part of the bool mask: the kernels take causal along the softmax
dim only.
"""
from __future__ import annotations

from typing import Optional

import torch

from seqops import _ext
from seqops.backends.cuda_values import DTYPE_CODES, dtype_code, launch_place
from seqops.kernels.layout import RowLayout, softmax_row_operands  # pure torch: imports no triton

NO_STRIDES = (0, 0, 0, 0)


def _shape_values(layout: RowLayout, causal_rows: int) -> dict:
    return {"n_rows": layout.n_rows, "n_cols": layout.n_cols, "rows_b": layout.rows_b, "rows_c": layout.rows_c,
            "causal_rows": causal_rows}


class LaunchValues(dict):
    """The extension's arguments (plain values: pointers as ints), holding the tensors they
    point into: a layout the kernels cannot address is copied, and the copy must outlive
    the launch, so the caller keeps this object until the call has been made."""

    def __init__(self, values: dict, operands: list):
        super().__init__(values)
        self.operands = operands


def forward_values(x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor], dim: int, scale: float,
                   causal: bool) -> LaunchValues:
    """The extension's softmax_forward arguments (all but device and stream) for y =
    softmax(scale * x) along dim. x: float32/16/bf16, any strides; y: x's shape."""
    (x_rows, y_rows), mask_rows, causal_rows, layout = softmax_row_operands([x, y], mask, causal, dim, target=1)
    return LaunchValues({
        "x": x_rows.data_ptr(), "x_dtype": dtype_code(x_rows), "x_strides": layout.strides[0],
        "y": y_rows.data_ptr(), "y_dtype": dtype_code(y_rows), "y_strides": layout.strides[1],
        "mask": 0 if mask_rows is None else mask_rows.data_ptr(),
        "mask_strides": NO_STRIDES if mask_rows is None else layout.strides[2],
        **_shape_values(layout, causal_rows), "scale": float(scale),
    }, [x_rows, y_rows, mask_rows])


def backward_values(grad_y: torch.Tensor, y: torch.Tensor, dx: torch.Tensor, mask: Optional[torch.Tensor], dim: int,
                    scale: float, causal: bool) -> LaunchValues:
    """The extension's softmax_backward arguments (all but device and stream)."""
    (dy_rows, y_rows, dx_rows), mask_rows, causal_rows, layout = softmax_row_operands([grad_y, y, dx], mask, causal, dim,
                                                                               target=2)
    return LaunchValues({
        "dy": dy_rows.data_ptr(), "dy_dtype": dtype_code(dy_rows), "dy_strides": layout.strides[0],
        "y": y_rows.data_ptr(), "y_dtype": dtype_code(y_rows), "y_strides": layout.strides[1],
        "mask": 0 if mask_rows is None else mask_rows.data_ptr(),
        "mask_strides": NO_STRIDES if mask_rows is None else layout.strides[3],
        "dx": dx_rows.data_ptr(), "dx_dtype": dtype_code(dx_rows), "dx_strides": layout.strides[2],
        **_shape_values(layout, causal_rows), "scale": float(scale),
    }, [dy_rows, y_rows, dx_rows, mask_rows])


def softmax_forward(x: torch.Tensor, mask: Optional[torch.Tensor], dim: int, scale: float, causal: bool,
                    out_dtype: torch.dtype) -> torch.Tensor:
    """The fused contract's forward: a new contiguous tensor of x's shape in out_dtype."""
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if y.numel() == 0:
        return y
    if x.dtype not in DTYPE_CODES:
        # The kernels read float32/16/bf16; torch.softmax(x, dtype=d) casts x to d first anyway.
        x = x.to(out_dtype)
    values = forward_values(x, y, mask, dim, scale, causal)  # holds any copy it points into
    _ext.load().softmax_forward(**values, **launch_place(x.device))
    return y


def softmax_backward(grad_y: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor], dim: int, scale: float,
                     causal: bool, in_dtype: torch.dtype) -> torch.Tensor:
    """The fused contract's backward: dx, contiguous, in in_dtype, 0 where hidden."""
    # An input dtype the kernels do not write (float64 under dtype=) gets the fp32 result
    # converted: the kernels compute in fp32 whatever they write.
    dx_dtype = in_dtype if in_dtype in DTYPE_CODES else torch.float32
    dx = torch.empty(y.shape, dtype=dx_dtype, device=y.device)
    if dx.numel() == 0:
        return dx.to(in_dtype)
    if grad_y.dtype not in (y.dtype, torch.float32):
        # The kernels read dy in y's dtype or float32 (a forward-mode tangent may be neither).
        grad_y = grad_y.float()
    values = backward_values(grad_y, y, dx, mask, dim, scale, causal)  # holds any copy it points into
    _ext.load().softmax_backward(**values, **launch_place(y.device))
    return dx if dx_dtype == in_dtype else dx.to(in_dtype)
