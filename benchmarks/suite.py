"""Cases, the providers that run them, and the loop that measures every pair."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch

from .measure import peak_extra_bytes, time_call


@dataclass(frozen=True)
class Case:
    """One measured configuration of an op.

    sweep: the value the plots put on the x axis (row length, sequence length); panel:
    the plot it belongs to (cases differing only in `sweep`); bytes_moved and flops: the
    least traffic and arithmetic the op needs, for GB/s and TFLOP/s (0 if not meaningful);
    params: whatever else prepare() needs.
    """

    op: str
    direction: str  # "forward", "backward" or "forward+backward"
    dtype: torch.dtype
    shape: tuple
    sweep: int
    bytes_moved: int = 0
    flops: int = 0
    panel: str = ""
    params: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Provider:
    """An implementation under measurement.

    prepare(case, device) allocates the inputs and returns the call to time;
    unavailable(case, device) is why it cannot run the case, or None.
    """

    name: str
    prepare: Callable[[Case, torch.device], Callable[[], object]]
    unavailable: Callable[[Case, torch.device], Optional[str]] = lambda case, device: None


@dataclass
class Result:
    op: str
    direction: str
    dtype: str
    shape: tuple
    sweep: int
    panel: str
    provider: str
    median_ms: Optional[float] = None
    p20_ms: Optional[float] = None
    p80_ms: Optional[float] = None
    gb_per_s: Optional[float] = None
    tflop_per_s: Optional[float] = None
    peak_extra_bytes: Optional[int] = None
    skipped: Optional[str] = None

    def as_json(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


def measure_case(case: Case, provider: Provider, device: torch.device) -> Result:
    result = Result(case.op, case.direction, str(case.dtype).removeprefix("torch."), case.shape, case.sweep,
                    case.panel or f"{case.direction}, {str(case.dtype).removeprefix('torch.')}", provider.name)
    reason = provider.unavailable(case, device)
    if reason is not None:
        result.skipped = reason
        return result
    try:
        fn = provider.prepare(case, device)
        timing = time_call(fn, device)
        result.peak_extra_bytes = peak_extra_bytes(fn, device)
    except torch.cuda.OutOfMemoryError:
        result.skipped = "out of memory"
        return result
    except RuntimeError as error:  # a torch SDPA backend that cannot take the case, say
        result.skipped = f"failed: {str(error).splitlines()[0][:160]}"
        return result
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result.median_ms, result.p20_ms, result.p80_ms = timing.median_ms, timing.p20_ms, timing.p80_ms
    seconds = timing.median_ms * 1e-3
    if case.bytes_moved:
        result.gb_per_s = case.bytes_moved / seconds / 1e9
    if case.flops:
        result.tflop_per_s = case.flops / seconds / 1e12
    return result


def run(cases: list[Case], providers: list[Provider], device: torch.device, progress=print) -> list[Result]:
    results = []
    for case in cases:
        for provider in providers:
            result = measure_case(case, provider, device)
            progress(f"  {case.op} {case.direction} {result.dtype} {case.shape} {provider.name}: "
                     + (f"skipped ({result.skipped})" if result.skipped else f"{result.median_ms * 1e3:.1f} us"))
            results.append(result)
    return results
