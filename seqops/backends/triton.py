"""The Triton backend: its implementations of each op (seqops.kernels, imported on first
use), where it can run, and the limits by which it narrows each op's contract.

Priorities are provisional: no GPU benchmark result has been recorded yet
(benchmarks/results/), so `auto` on CUDA prefers the fused kernels over torch's ops as
the design expects, to be revisited once measurements exist.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Callable, Optional

import torch

from seqops import dispatch
from seqops.ops.additive import contract as additive_contract
from seqops.ops.attention import contract as attention_contract
from seqops.ops.recurrent import contract as recurrent_contract
from seqops.ops.softmax import contract as softmax_contract

# Where `auto` ranks each Triton implementation against torch's own (10), from the GPU
# results committed under benchmarks/results/ (the H200 quick check of 2026-11-30): torch
# was faster for attention (cuDNN SDPA; Triton forward 0.72-0.74x, forward+backward
# 0.34-0.52x at bf16, head dim 128), for softmax rows up to 16384 wide (Triton faster
# at 131072: the "long-rows" Impl below) and for the LSTM (0.06-0.3x cuDNN), so there `auto` takes torch
# and Triton only for what torch cannot take; `seqops.backend("triton")` runs them.
# Additive attention has no fused torch op to lose to: torch's is the formulation that
# holds [B, Lq, Lk, d] (issue 16 owes its GPU timing).
BELOW_TORCH = {"cuda": 8}
ABOVE_TORCH = {"cuda": 20}

def _where_it_runs() -> dict[str, Optional[str]]:
    """Per device type, why the Triton kernels cannot run there, or None; decided once,
    as seqops is imported. That is the only context certain to be free of what a first
    call may happen inside (torch.compile's tracing, FakeTensorMode, torch.func), and it
    keeps both triton's import and the interpreter's probe off the path of every call."""
    if importlib.util.find_spec("triton") is None:
        return dict.fromkeys(("cpu", "cuda"), "triton is not installed")
    not_interpreted = ("Triton kernels take CPU tensors only under the Triton interpreter: set TRITON_INTERPRET=1 "
                       "before seqops is imported (or use CUDA tensors)")
    if not os.environ.get("TRITON_INTERPRET"):
        return {"cpu": not_interpreted, "cuda": None}
    try:
        from seqops.kernels import runtime
    except ImportError as error:
        return dict.fromkeys(("cpu", "cuda"), f"triton is not importable ({error})")
    if not runtime.INTERPRETED:
        return {"cpu": not_interpreted, "cuda": None}
    return dict.fromkeys(("cpu", "cuda"), runtime.interpreter_problem())


_WHERE_IT_RUNS = _where_it_runs()


def _platform_reason(device: torch.device) -> Optional[str]:
    if device.type in _WHERE_IT_RUNS:  # (the message below is formatted only when needed: it costs microseconds)
        return _WHERE_IT_RUNS[device.type]
    return f"Triton kernels need CUDA (or interpreted CPU) tensors, got device {device}"


def _kernel(module: str, name: str) -> Callable:
    """seqops.kernels.<module>.<name>, imported on the first call (importing triton)."""
    resolved: list[Callable] = []

    def call(*args, **kwargs):
        if not resolved:
            resolved.append(getattr(importlib.import_module(f"seqops.kernels.{module}"), name))
        return resolved[0](*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _attention_reason(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                      causal_offset=0) -> Optional[str]:
    reason = attention_contract.fused_reason(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                                             causal_offset)
    if reason is not None:
        return reason
    head_dims = (query.shape[-1], value.shape[-1])
    if query.dtype == torch.float32 and max(head_dims) > FP32_MAX_HEAD_DIM:
        return (f"the Triton attention takes float32 head dims up to {FP32_MAX_HEAD_DIM}, got {head_dims[0]} and "
                f"{head_dims[1]} (its float32 backward spills registers above that; float16 and bfloat16 go to "
                f"{attention_contract.MAX_HEAD_DIM})")
    if max(query.shape[-2], key.shape[-2]) > MAX_SEQUENCE_LENGTH:
        return (f"the Triton attention takes sequence lengths up to 2**30 (its kernels count positions in 32 bits), "
                f"got L={query.shape[-2]} and S={key.shape[-2]}")
    return None


def _attention_decode_reason(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             causal_offset=0) -> Optional[str]:
    """Why the decode variant (split keys, a GQA group's heads in one program) cannot take
    this call, so that the fused variant runs it."""
    reason = _attention_reason(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, causal_offset)
    if reason is not None:
        return reason
    if query.dim() >= 2 and query.shape[-2] > DECODE_MAX_QUERIES:
        return (f"the decode variant takes at most {DECODE_MAX_QUERIES} queries a head, got {query.shape[-2]}: "
                "the fused variant runs it")
    if dropout_p > 0:
        return "the decode variant takes no dropout: the fused variant runs it"
    return None


def _softmax_long_rows_reason(input, dim, dtype, scale=1.0, mask=None, causal=False) -> Optional[str]:
    reason = softmax_contract.fused_reason(input, dim, dtype, scale, mask, causal)
    if reason is not None:
        return reason
    if (dtype or input.dtype) != torch.float32 or input.dtype != torch.float32:
        return "the long-rows preference rests on float32 measurements only"
    length = input.shape[dim] if input.dim() else 1
    if length < SOFTMAX_LONG_ROWS:
        return (f"rows of {length} (< {SOFTMAX_LONG_ROWS}): torch.softmax was faster there on the H200 "
                "(benchmarks/results/nvidia-h200)")
    return None


def _additive_reason(query, keys, values, w_query, w_key, v, b_query, b_key, mask, need_weights) -> Optional[str]:
    reason = additive_contract.fused_reason(query, keys, values, w_query, w_key, v, b_query, b_key, mask,
                                            need_weights)
    if reason is None and max(query.shape[1], keys.shape[1]) > MAX_SEQUENCE_LENGTH:
        return (f"the Triton additive attention takes lengths up to 2**30, got Lq={query.shape[1]} and "
                f"Lk={keys.shape[1]}")
    return reason


def _lstm_sequence_reason(input, batch_sizes, hx, weights, has_biases, num_layers, dropout, training, bidirectional,
                          proj_size) -> Optional[str]:
    """Why the sequence variant (one launch per layer and direction) cannot take this
    nn.LSTM call, so that the step variant runs it: what no fused LSTM takes, or more
    rows of steps than it indexes. Every hidden size fits: a slice of W_hh that does not
    fit on chip is re-read from L2 every step, and the grid, capped at one program per
    multiprocessor, loops over the slices (seqops.kernels.recurrent.sequence.plan)."""
    return recurrent_contract.fused_lstm_reason(input, batch_sizes, hx, weights) or _sequence_rows_reason(
        input, batch_sizes)


def _hidden_sequence_reason(input, batch_sizes, *args) -> Optional[str]:
    """Why the GRU/RNN sequence variant cannot take this nn.GRU or nn.RNN call, so that the
    step variant runs it (every hidden size fits, as for the LSTM's)."""
    return recurrent_contract.fused_hidden_layer_reason(input, batch_sizes, *args) or _sequence_rows_reason(
        input, batch_sizes)


def _sequence_rows_reason(input, batch_sizes) -> Optional[str]:
    rows = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]
    if rows >= 2**31:
        return f"{rows} rows of steps: the sequence kernels index steps in 32 bits; the step variant runs it"
    return None


# As seqops.kernels.attention.FP32_MAX_HEAD_DIM and DECODE_MAX_QUERIES, without importing
# triton to read them.
FP32_MAX_HEAD_DIM = 128
DECODE_MAX_QUERIES = 16
# Positions, and sums of a position, a tile and the causal offset, stay below 2**31.
MAX_SEQUENCE_LENGTH = 2**30
# Rows this long (and longer) are where Triton's softmax beat torch.softmax on the H200
# (float32, 4096 rows: 1.22x forward, 1.39x backward at 131072; 0.64x and 0.61x at 16384,
# nothing measured between): there `auto` prefers it.
SOFTMAX_LONG_ROWS = 131072

dispatch.register_backend("triton", _platform_reason)
dispatch.register(dispatch.Impl(
    "softmax", "triton", "fused",
    {"forward": _kernel("softmax", "softmax_forward"), "backward": _kernel("softmax", "softmax_backward")},
    supports=softmax_contract.fused_reason, priority=BELOW_TORCH))
# The same kernels, where they were measured faster than torch: ahead of torch for `auto`.
dispatch.register(dispatch.Impl(
    "softmax", "triton", "long-rows",
    {"forward": _kernel("softmax", "softmax_forward"), "backward": _kernel("softmax", "softmax_backward")},
    supports=_softmax_long_rows_reason, priority=ABOVE_TORCH))
# Decode steps (a few queries against a long key/value cache): the keys split over more
# programs, a GQA group's heads read their keys and values once. Ahead of the fused variant
# wherever it takes the call; below torch on CUDA as the fused one is (never run on a GPU).
# Its backward is the fused variant's: it needs only the output and the logsumexp.
dispatch.register(dispatch.Impl(
    "attention", "triton", "decode",
    {"forward": _kernel("attention", "attention_decode_forward"),
     "backward": _kernel("attention", "attention_backward")},
    supports=_attention_decode_reason, priority={device: rank + 1 for device, rank in BELOW_TORCH.items()}))
dispatch.register(dispatch.Impl(
    "attention", "triton", "fused",
    {"forward": _kernel("attention", "attention_forward"), "backward": _kernel("attention", "attention_backward")},
    supports=_attention_reason, priority=BELOW_TORCH))
dispatch.register(dispatch.Impl(
    "lstm_cell", "triton", "step",
    {"forward": _kernel("recurrent", "lstm_cell_forward"), "backward": _kernel("recurrent", "lstm_cell_backward")},
    supports=recurrent_contract.fused_cell_reason, priority=BELOW_TORCH))
dispatch.register(dispatch.Impl(
    "lstm", "triton", "step",
    {"forward": _kernel("recurrent", "lstm_layer_forward"), "backward": _kernel("recurrent", "lstm_layer_backward")},
    supports=recurrent_contract.fused_lstm_reason, priority=BELOW_TORCH))
# One launch per layer and direction instead of one per step: preferred to the step
# variant wherever it takes the call; below torch on CUDA as the step variant is (no
# measurement says it beats cuDNN, and its many-program path has never run on a GPU).
dispatch.register(dispatch.Impl(
    "lstm", "triton", "sequence",
    {"forward": _kernel("recurrent", "lstm_sequence_forward"),
     "backward": _kernel("recurrent", "lstm_sequence_backward")},
    supports=_lstm_sequence_reason, priority={device: rank + 1 for device, rank in BELOW_TORCH.items()}))
for _cell in ("gru", "rnn_tanh", "rnn_relu"):
    _functions = {"forward": _kernel("recurrent", f"{_cell}_cell_forward"),
                  "backward": _kernel("recurrent", f"{_cell}_cell_backward")}
    # Unmeasured on a GPU: below torch's cell there, as the LSTM cell is.
    dispatch.register(dispatch.Impl(f"{_cell}_cell", "triton", "step", _functions,
                                    supports=recurrent_contract.fused_hidden_cell_reason, priority=BELOW_TORCH))
    # The whole layer, in one launch a layer and direction ("sequence"), or one a step
    # ("step", where the sequence variant refuses). Unmeasured against cuDNN's GRU/RNN,
    # so `auto` picks neither yet (no priority); seqops.backend("triton") runs them, the
    # sequence variant first (registered first: of equal priority, the backend keeps
    # the order of registration).
    dispatch.register(dispatch.Impl(
        _cell, "triton", "sequence",
        {"forward": _kernel("recurrent", f"{_cell}_sequence_forward"),
         "backward": _kernel("recurrent", f"{_cell}_sequence_backward")},
        supports=_hidden_sequence_reason))
    dispatch.register(dispatch.Impl(
        _cell, "triton", "step",
        {"forward": _kernel("recurrent", f"{_cell}_layer_forward"),
         "backward": _kernel("recurrent", f"{_cell}_layer_backward")},
        supports=recurrent_contract.fused_hidden_layer_reason))
dispatch.register(dispatch.Impl(
    "additive_attention", "triton", "fused",
    {"forward": _kernel("additive", "additive_attention_forward"),
     "backward": _kernel("additive", "additive_attention_backward")},
    supports=_additive_reason, priority=ABOVE_TORCH))
