"""Where a small call's time goes: host work per call against the kernels' device time.

The first GPU run showed short softmax rows taking 337 us (Triton) and 76 us (CUDA C++)
where torch.softmax takes 7 us and the bytes cost 2 us: host-bound, not kernel-bound.
For a few small calls, each on the backends that take it, this measures

  host_us    wall time of a burst of calls, not synchronized, per call (host work only,
             while the launch queue has room)
  wall_us    the same burst synchronized at the end, per call (host or device, whichever
             is slower)
  device_us  the kernels' own time per call, from torch.profiler's device activity

and keeps cProfile's top functions (own time) of each seqops call, so that the one
GPU run that has it says which Python sits in front of the launch. Inference calls
(torch.no_grad), as in decoding. On a machine without a GPU (dry run) it runs the torch
backend on CPU tensors: the step is exercised, the numbers say nothing about a GPU.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

import seqops

BURST = 200   # calls in a timed burst (on a CPU dry run, DRY_BURST)
DRY_BURST = 10
REPEATS = 5
TOP_FUNCTIONS = 12


@dataclass
class HostProfile:
    case: str
    backend: str
    host_us: Optional[float] = None
    wall_us: Optional[float] = None
    device_us: Optional[float] = None
    top_functions: str = ""
    skipped: Optional[str] = None

    def as_json(self) -> dict:
        return asdict(self)


def cases(device: torch.device, small: bool) -> list[tuple[str, Callable[[], Callable[[], object]]]]:
    """(name, make) where make() allocates the inputs and returns the call to time."""
    scale = 16 if small else 1

    def softmax():
        x = torch.randn(4096 // scale, 256, device=device)
        return lambda: seqops.softmax(x, -1)

    def decode_attention():
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        q = torch.randn(1, 16, 1, 128, device=device, dtype=dtype)
        k, v = (torch.randn(1, 16, 1024 // scale, 128, device=device, dtype=dtype) for _ in range(2))
        return lambda: seqops.scaled_dot_product_attention(q, k, v)

    def lstm_cell():
        batch, hidden = 16, 768 // scale
        x, h, c = (torch.randn(batch, hidden, device=device) for _ in range(3))
        w_ih, w_hh = (torch.randn(4 * hidden, hidden, device=device) * 0.05 for _ in range(2))
        b_ih, b_hh = (torch.randn(4 * hidden, device=device) for _ in range(2))
        return lambda: seqops.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)

    return [("softmax 4096x256 fp32" if not small else "softmax 256x256 fp32", softmax),
            ("attention decode 1x16x1x128 vs 1024 keys" if not small else "attention decode, 64 keys",
             decode_attention),
            ("lstm_cell B=16 H=768 fp32" if not small else "lstm_cell B=16 H=48 fp32", lstm_cell)]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _burst_us(call: Callable, device: torch.device, synchronized: bool, burst: int) -> float:
    samples = []
    for _ in range(REPEATS):
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(burst):
            call()
        if synchronized:
            _synchronize(device)
        samples.append((time.perf_counter() - start) / burst * 1e6)
    return statistics.median(samples)


def _device_us(call: Callable, device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(BURST):
            call()
        _synchronize(device)
    total = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
                for e in prof.key_averages())
    return total / BURST


def _top_functions(call: Callable) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(BURST):
        call()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(TOP_FUNCTIONS)
    return "\n".join(line for line in text.getvalue().splitlines() if line.strip())


def profile_case(name: str, make: Callable, backend: str, device: torch.device) -> HostProfile:
    result = HostProfile(name, backend)
    burst = BURST if device.type == "cuda" else DRY_BURST
    try:
        with seqops.backend(backend), torch.no_grad():
            call = make()
            for _ in range(burst // 10 + 1):  # compile, autotune, caches
                call()
            _synchronize(device)
            result.host_us = _burst_us(call, device, False, burst)
            result.wall_us = _burst_us(call, device, True, burst)
            result.device_us = _device_us(call, device)
            if backend != "torch":
                result.top_functions = _top_functions(call)
    except Exception as error:  # a backend that cannot take the call: say why, go on
        result.skipped = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
    return result


def run(device: torch.device, small: bool) -> list[HostProfile]:
    backends = ["torch", "triton", "cuda"] if device.type == "cuda" else ["torch"]
    results = []
    for name, make in cases(device, small):
        for backend in backends:
            result = profile_case(name, make, backend, device)
            results.append(result)
            print(f"{name} [{backend}]: " + (result.skipped or f"host {result.host_us:.1f} us, wall {result.wall_us:.1f} us"
                                               + (f", device {result.device_us:.1f} us" if result.device_us else "")),
                  flush=True)
    return results

