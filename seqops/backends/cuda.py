"""The CUDA C++ backend (csrc/, built by seqops/_ext.py): its implementations of each op,
where it can run, and the limits by which it narrows each op's contract.

It runs on CUDA tensors once the extension loads (prebuilt, or built with nvcc on the
first call that needs it); otherwise an explicit choice of it raises BackendUnavailable
saying why (no GPU, no nvcc, a compile error), and `auto` takes another backend.

Priority: below Triton's (20) and torch's (10) on CUDA, so `auto` does not pick these
kernels: none has run on a GPU yet. Raise it once GPU results (benchmarks/results/) show
them correct and faster than the Triton kernels.
"""
from __future__ import annotations

import functools
import importlib
from typing import Callable, Optional

import torch

from seqops import dispatch
from seqops.backends import cell_layers, cuda_attention
from seqops.ops.recurrent import contract as recurrent_contract
from seqops.ops.softmax import contract as softmax_contract

PRIORITY = {"cuda": 5}


@functools.lru_cache(maxsize=None)
def _machine_has_cuda() -> bool:
    return torch.cuda.is_available()


def _platform_reason(device: torch.device) -> Optional[str]:
    if device.type != "cuda":
        where = "" if _machine_has_cuda() else " (and this machine has no CUDA device)"
        return f"the CUDA C++ kernels take CUDA tensors, got tensors on {device}{where}"
    # Finds, or builds once, the extension; remembers a failure. Imported here, not at the
    # top, to keep the builder off `import seqops`.
    from seqops import _ext

    return _ext.unavailable_reason()


def _function(module: str, name: str) -> Callable:
    """seqops.backends.<module>.<name>, imported on the first call."""
    resolved: list[Callable] = []

    def call(*args, **kwargs):
        if not resolved:
            resolved.append(getattr(importlib.import_module(f"seqops.backends.{module}"), name))
        return resolved[0](*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


dispatch.register_backend("cuda", _platform_reason)
dispatch.register(dispatch.Impl(
    "softmax", "cuda", "fused",
    {"forward": _function("cuda_softmax", "softmax_forward"), "backward": _function("cuda_softmax", "softmax_backward")},
    supports=softmax_contract.fused_reason, priority=PRIORITY))
dispatch.register(dispatch.Impl(
    "lstm_cell", "cuda", "step",
    {"forward": _function("cuda_recurrent", "lstm_cell_forward"),
     "backward": _function("cuda_recurrent", "lstm_cell_backward")},
    supports=recurrent_contract.fused_cell_reason, priority=PRIORITY))
# Forward and backward, never run on a GPU: cuda_attention.forward_reason refuses what
# it lacks (float32, head dims other than 64/128/256, Ev != E).
dispatch.register(dispatch.Impl(
    "attention", "cuda", "fused",
    {"forward": _function("cuda_attention", "attention_forward"),
     "backward": _function("cuda_attention", "attention_backward")},
    supports=cuda_attention.forward_reason, priority=PRIORITY))
# The same op with the forward kept on the sm80 kernel on every device (on compute
# capability 9.0 the variant above runs the wgmma/TMA one): explicit choice only.
dispatch.register(dispatch.Impl(
    "attention", "cuda", "sm80",
    {"forward": _function("cuda_attention", "attention_forward_sm80"),
     "backward": _function("cuda_attention", "attention_backward")},
    supports=cuda_attention.forward_reason))
# The same forward with the five-product backward: dQ added in the dK/dV kernel, key block
# by key block in a fixed order (csrc/attention/backward_kernel.cuh, "ordered dQ"), where
# the variants above run a separate dQ kernel (seven products). Explicit choice only,
# until a GPU run shows which is faster.
dispatch.register(dispatch.Impl(
    "attention", "cuda", "ordered_dq",
    {"forward": _function("cuda_attention", "attention_forward"),
     "backward": _function("cuda_attention", "attention_backward_ordered_dq")},
    supports=cuda_attention.forward_reason))
for _cell in ("gru_cell", "rnn_tanh_cell", "rnn_relu_cell"):
    dispatch.register(dispatch.Impl(
        _cell, "cuda", "step",
        {"forward": _function("cuda_recurrent", f"{_cell}_forward"),
         "backward": _function("cuda_recurrent", f"{_cell}_backward")},
        supports=recurrent_contract.fused_hidden_cell_reason, priority=PRIORITY))
# nn.LSTM on backend("cuda"): one cooperative launch a layer and direction where the
# sequence kernels take the call (W_hh's, and W_hr's, slices fit the GPU), else torch's
# layer loop over the cells above, one launch a step. Neither has an `auto` priority
# (unmeasured, never run on a GPU); registered in that order, the backend tries the
# sequence variant first, as the Triton backend does.
dispatch.register(dispatch.Impl(
    "lstm", "cuda", "sequence",
    {"forward": _function("cuda_sequence", "lstm_sequence_forward"),
     "backward": _function("cuda_sequence", "lstm_sequence_backward")},
    supports=_function("cuda_sequence", "reason")))
dispatch.register(dispatch.Impl("lstm", "cuda", "step", {"run": cell_layers.lstm_on_cells("lstm_cell/cuda/step")},
                                supports=cell_layers.lstm_on_cells_reason))
# nn.GRU and nn.RNN likewise: one cooperative launch a layer and direction where the
# sequence kernels take the call, else the cells above, a launch a step; no `auto` priority.
for _mode in ("gru", "rnn_tanh", "rnn_relu"):
    dispatch.register(dispatch.Impl(
        _mode, "cuda", "sequence",
        {"forward": _function("cuda_sequence", f"{_mode}_sequence_forward"),
         "backward": _function("cuda_sequence", f"{_mode}_sequence_backward")},
        supports=functools.partial(_function("cuda_sequence", "hidden_layer_reason"), _mode)))
    dispatch.register(dispatch.Impl(
        _mode, "cuda", "step", {"run": cell_layers.hidden_rnn_on_cells(f"{_mode}_cell", f"{_mode}_cell/cuda/step")},
        supports=recurrent_contract.fused_hidden_layer_reason))
