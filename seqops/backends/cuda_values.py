"""What the CUDA C++ extension takes in place of tensors: dtype codes, data pointers and
the stream as ints. The extension sees no torch (csrc/bindings.cpp), so this is the one
place tensors become plain values."""
from __future__ import annotations

import torch

# csrc/common/dtypes.h's DType codes; tests/test_cuda_host.py checks the two agree.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def dtype_code(tensor: torch.Tensor) -> int:
    try:
        return DTYPE_CODES[tensor.dtype]
    except KeyError:
        raise TypeError(f"the CUDA kernels read float32, float16 and bfloat16, got {tensor.dtype}") from None


def launch_place(device: torch.device) -> dict[str, int]:
    """The device index and torch's current stream on it, as the launchers take them."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"device": index, "stream": torch.cuda.current_stream(index).cuda_stream}
