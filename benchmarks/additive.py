"""Additive (Bahdanau) attention benchmark: seqops.additive_attention (each fused backend,
and the torch backend's blocked form) vs the PyTorch formulation every seq2seq tutorial
writes (the reference: the [B, Lq, Lk, d] pre-activations in memory).

Lq = Lk = L from 256 to 16k, B = 1, query, key and value width 256, hidden d = 256;
bf16 (and fp16), forward and forward+backward. The memory panel is the bf16 forward: its
fitted exponent of peak memory in L is about 2 for the reference (L^2 * d) and 1 for the
fused kernels (the projections, L * d). TFLOP/s count the score arithmetic, 3 operations
per (query, key, hidden unit) (add, tanh, multiply-add) and 2 per (query, key, value
column), forward; 2.5x that with the backward.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

import seqops
from seqops import dispatch
from seqops.ops.additive import reference, torch_impl

from .suite import Case, Provider

GPU_LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384]
CPU_LENGTHS = [32, 64, 128]
WIDTH, HIDDEN = 256, 256
CPU_WIDTH, CPU_HIDDEN = 32, 32
FUSED_BACKENDS = ("triton", "cuda")
TORCH_MAX_LENGTH = 4096

BASELINE = "reference"
SWEEP_NAME = "Lq = Lk"
MEMORY_PANEL = "forward, bfloat16"


def _flops(L: int, hidden: int, width: int, direction: str) -> int:
    forward = L * L * (3 * hidden + 2 * width)
    return int(forward * (3.5 if direction == "forward+backward" else 1))


def cases(device: torch.device, quick: bool) -> list[Case]:
    on_gpu = device.type == "cuda"
    lengths = GPU_LENGTHS if on_gpu else CPU_LENGTHS
    width, hidden = (WIDTH, HIDDEN) if on_gpu else (CPU_WIDTH, CPU_HIDDEN)
    dtypes = [torch.bfloat16, torch.float16] if on_gpu else [torch.float32]
    if quick:
        lengths, dtypes = lengths[::2], dtypes[:1]
    out = []
    for dtype in dtypes:
        for direction in ("forward", "forward+backward"):
            for L in lengths:
                out.append(Case("additive", direction, dtype, (1, L, L, width, hidden), L,
                                flops=_flops(L, hidden, width, direction),
                                panel=f"{direction}, {str(dtype).removeprefix('torch.')}"))
    return out


def _timed(case: Case, device: torch.device, attention: Callable) -> Callable[[], object]:
    B, Lq, Lk, width, hidden = case.shape
    grad = case.direction == "forward+backward"
    make = lambda *shape, scale=1.0: (torch.randn(*shape, device=device, dtype=case.dtype) * scale
                                      ).requires_grad_(grad)
    inputs = [make(B, Lq, width), make(B, Lk, width), make(B, Lk, width), make(hidden, width, scale=width**-0.5),
              make(hidden, width, scale=width**-0.5), make(hidden), make(hidden), make(hidden)]
    if not grad:
        return lambda: attention(*inputs)
    grad_context = torch.randn(B, Lq, width, device=device, dtype=case.dtype)
    return lambda: torch.autograd.grad(attention(*inputs), inputs, grad_context)


def _seqops_provider(backend: str) -> Provider:
    def attention(*inputs):
        with seqops.backend(backend):
            return seqops.additive_attention(*inputs)[0]

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        B, Lq, Lk, width, hidden = case.shape
        probe = [torch.empty(1, 1, width, device=device, dtype=case.dtype)] * 3
        weights = [torch.empty(hidden, width, device=device, dtype=case.dtype)] * 2
        vectors = [torch.empty(hidden, device=device, dtype=case.dtype)] * 3
        reason = dispatch.backend_reason("additive_attention", backend, device, *probe, *weights, *vectors, None,
                                         False)
        if reason is None and device.type == "cpu" and backend != "torch":
            reason = "a GPU kernel: its CPU timings (in Triton's interpreter) mean nothing"
        if reason is None and backend == "torch" and Lq > TORCH_MAX_LENGTH:
            reason = (f"the blocked PyTorch form runs Lq * Lk * d / {torch_impl.BLOCK_ELEMENTS} blocks one after "
                      f"another (minutes a call here); measured up to L = {TORCH_MAX_LENGTH}")
        return reason

    return Provider(f"seqops[{backend}]", lambda case, device: _timed(case, device, attention), unavailable)


def providers(device: torch.device) -> list[Provider]:
    return [_seqops_provider(name) for name in FUSED_BACKENDS + ("torch",)] + [
        Provider("reference", lambda case, device: _timed(
            case, device, lambda *inputs: reference.additive_attention(*inputs)[0])),
    ]
