"""Timing and memory of one call, and the device's ceilings to compare against.

On a GPU, time comes from triton.testing.do_bench (CUDA events, L2 flushed between runs):
median, p20 and p80 in ms. On the CPU a plain timer does the same job; CPU times say
nothing about the GPU kernels, and the report says so.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


def time_call(fn: Callable[[], object], device: torch.device, budget_ms: float = 200.0) -> Timing:
    """Median, p20 and p80 time of fn() on `device`."""
    if device.type == "cuda":
        import triton.testing

        median, p20, p80 = triton.testing.do_bench(fn, warmup=25, rep=budget_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(median, p20, p80)
    fn()  # warm-up
    times = []
    deadline = time.perf_counter() + budget_ms / 1e3
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 1000):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    quantiles = statistics.quantiles(times, n=10)
    return Timing(statistics.median(times), quantiles[1], quantiles[7])


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Peak memory fn() allocates beyond what was allocated before it (its output
    included); None where the allocator keeps no statistics (the CPU)."""
    if device.type != "cuda":
        return None
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return peak


def copy_bandwidth_gb_per_s(device: torch.device, n_bytes: int) -> float:
    """Measured device-to-device copy rate (read + write bytes per second, GB/s): the
    ceiling a memory-bound kernel is judged against."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    timing = time_call(lambda: dst.copy_(src), device)
    return 2 * src.numel() * 4 / (timing.median_ms * 1e-3) / 1e9


def matmul_tflop_per_s(device: torch.device, n: int) -> float:
    """Measured bf16 n x n matrix-product rate (TFLOP/s): the compute ceiling."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    timing = time_call(lambda: a @ b, device)
    return 2 * n**3 / (timing.median_ms * 1e-3) / 1e12
