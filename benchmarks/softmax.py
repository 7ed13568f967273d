"""Softmax benchmark: seqops (each fused backend) vs torch.softmax vs the eager reference,
rows of 4096 at lengths across the one-pass limit, forward and backward, as GB/s
against the minimum traffic (forward: read x, write y; backward: read y and dy, write dx).
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Optional

import torch

import seqops
from seqops import dispatch
from seqops.ops.softmax import reference

from .suite import Case, Provider

GPU_ROWS = 4096
GPU_COLUMNS = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
GPU_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
CPU_ROWS = 256
CPU_COLUMNS = [256, 1024, 4096]
CPU_DTYPES = [torch.float32]
FUSED_BACKENDS = ("triton", "cuda")


def cases(device: torch.device, quick: bool) -> list[Case]:
    on_gpu = device.type == "cuda"
    rows = GPU_ROWS if on_gpu else CPU_ROWS
    columns = GPU_COLUMNS if on_gpu else CPU_COLUMNS
    dtypes = GPU_DTYPES if on_gpu else CPU_DTYPES
    if quick:
        columns, dtypes = columns[:: max(1, len(columns) // 3)], dtypes[:1]
    out = []
    for dtype in dtypes:
        for direction in ("forward", "backward"):
            for n_cols in columns:
                elements, size = rows * n_cols, dtype.itemsize
                traffic = elements * size * (2 if direction == "forward" else 3)
                out.append(Case("softmax", direction, dtype, (rows, n_cols), n_cols, traffic))
    return out


def _timed(case: Case, device: torch.device, softmax: Callable) -> Callable[[], object]:
    x = torch.randn(case.shape, device=device, dtype=case.dtype, requires_grad=case.direction == "backward")
    if case.direction == "forward":
        return lambda: softmax(x)
    y = softmax(x)
    dy = torch.randn_like(y)
    return lambda: torch.autograd.grad(y, x, dy, retain_graph=True)


def _seqops_provider(backend: str) -> Provider:
    def softmax(x):
        with seqops.backend(backend):
            return seqops.softmax(x, -1)

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        probe = torch.empty(0, device=device, dtype=case.dtype)
        reason = dispatch.backend_reason("softmax", backend, device, probe, 0, None, 1.0, None, False)
        if reason is None and device.type == "cpu":
            reason = "a GPU kernel: its CPU timings (in Triton's interpreter) mean nothing"
        return reason

    return Provider(f"seqops[{backend}]", lambda case, device: _timed(case, device, softmax), unavailable)


def _unbounded_online_provider() -> Provider:
    """seqops' Triton backend with the grid of its online kernels (rows past
    MAX_ONE_PASS_COLS) left at a program a row, so that a row's second sweep may come from
    DRAM: beside seqops[triton], whose grid is bounded so that it comes from L2
    (kernels/softmax/rows.py, online_programs), it tells whether the bound pays."""
    triton_provider = _seqops_provider("triton")

    def prepare(case: Case, device: torch.device) -> Callable[[], object]:
        from seqops.kernels.softmax import rows

        run = triton_provider.prepare(case, device)

        def unbounded():
            share, rows.L2_SHARE = rows.L2_SHARE, 0.0  # no programs fit: no bound
            try:
                return run()
            finally:
                rows.L2_SHARE = share

        return unbounded

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        from seqops.kernels.softmax import rows

        if case.shape[-1] <= rows.MAX_ONE_PASS_COLS:
            return "rows this short are held whole: the same launch as seqops[triton]'s"
        return triton_provider.unavailable(case, device)

    return Provider("seqops[triton, a program a row]", prepare, unavailable)


def _liger_provider() -> Provider:
    """Liger-Kernel's Triton softmax (last dim), where liger-kernel is installed: a peer."""
    def prepare(case: Case, device: torch.device) -> Callable[[], object]:
        from liger_kernel.ops.softmax import LigerSoftmaxFunction

        return _timed(case, device, LigerSoftmaxFunction.apply)

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        if device.type != "cuda":
            return "a GPU kernel"
        return None if importlib.util.find_spec("liger_kernel") else "liger-kernel is not installed"

    return Provider("liger_kernel", prepare, unavailable)


def providers(device: torch.device) -> list[Provider]:
    return [_seqops_provider(name) for name in FUSED_BACKENDS] + [
        _unbounded_online_provider(),
        Provider("torch.softmax", lambda case, device: _timed(case, device, lambda x: torch.softmax(x, -1))),
        _liger_provider(),
        Provider("reference", lambda case, device: _timed(case, device, lambda x: reference.softmax(x, -1))),
    ]


BASELINE = "torch.softmax"
SWEEP_NAME = "row length"
MEMORY_PANEL = None
