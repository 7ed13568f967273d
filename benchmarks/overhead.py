"""Per-call overhead: what a seqops call costs beyond the torch call it wraps.

For decode-size inputs the kernels take microseconds and the Python in front of them
(argument checks, backend choice, torch.library dispatch) is most of the bill. Each
public op runs on the torch backend, so that both sides do the same work and the
difference is seqops' own code alone:

  seqops.softmax                      vs torch.softmax
  seqops.scaled_dot_product_attention vs F.scaled_dot_product_attention
  seqops.lstm_cell                    vs torch.lstm_cell
  seqops.nn.LSTM forward              vs torch.nn.LSTM forward (same weights)
  seqops.gru_cell                     vs torch.gru_cell
  seqops.nn.GRU forward               vs torch.nn.GRU forward (same weights)
  seqops.nn.MultiheadAttention fwd    vs torch.nn.MultiheadAttention fwd, need_weights=False

on tiny tensors, under torch.no_grad() with modules in eval mode (as in decoding), on
the CPU and on CUDA where there is one. The target is TARGET_US or less for every op;
this file measures it and asserts nothing.

Robust on a small, busy machine: the two calls are timed in alternating batches (ABBA,
so a drift in machine speed hits both alike), each batch long enough for the clock and
short enough to dodge most preemptions, and the overhead is the median over batches of
the per-call difference between neighbouring batches; p20 and p80 of those differences
give its spread. On CUDA each batch times the host side only (the GPU is synchronized
before, not inside, a batch of launches too few to fill the launch queue): the overhead
is host time.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

import seqops

from .suite import Case, Provider, Result

TARGET_US = 5.0
BASELINE = "torch"
SWEEP_NAME = "elements"
MEMORY_PANEL = None
OVERHEAD = "seqops - torch"
SEQOPS = "seqops[torch]"

# Time per measured batch: well above perf_counter's resolution, well under a scheduler slice.
BATCH_SECONDS = 300e-6
# Launches per CUDA batch stay under the driver's launch queue depth (about a thousand),
# so that the host never waits for the GPU inside a batch.
MAX_CUDA_CALLS_PER_BATCH = 200


@dataclass(frozen=True)
class Pair:
    """A public seqops op and the torch call it wraps.

    make(device) -> (seqops_call, torch_call): two argument-free calls on the same tiny
    inputs (modules share their weights); shape: that of the main input.
    """

    name: str
    torch_name: str
    shape: tuple
    make: Callable[[torch.device], tuple[Callable[[], object], Callable[[], object]]]


def _softmax(device):
    x = torch.randn(4, 16, device=device)
    return (lambda: seqops.softmax(x, -1)), (lambda: torch.softmax(x, -1))


def _attention(device):
    # One decode step: a query of length 1 against 8 cached keys, 2 heads of 16.
    q = torch.randn(1, 2, 1, 16, device=device)
    k, v = torch.randn(1, 2, 8, 16, device=device), torch.randn(1, 2, 8, 16, device=device)
    return (lambda: seqops.scaled_dot_product_attention(q, k, v)), (lambda: F.scaled_dot_product_attention(q, k, v))


def _lstm_cell(device):
    cell = torch.nn.LSTMCell(8, 16).to(device)
    x, h, c = torch.randn(1, 8, device=device), torch.randn(1, 16, device=device), torch.randn(1, 16, device=device)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    return (lambda: seqops.lstm_cell(x, (h, c), *weights)), (lambda: torch.lstm_cell(x, (h, c), *weights))


def _lstm_module(device):
    torch_lstm = torch.nn.LSTM(8, 16).to(device).eval()
    seqops_lstm = seqops.nn.LSTM(8, 16).to(device).eval()
    seqops_lstm.load_state_dict(torch_lstm.state_dict())
    x = torch.randn(1, 1, 8, device=device)  # one step of one sequence, time-major
    return (lambda: seqops_lstm(x)), (lambda: torch_lstm(x))


def _gru_cell(device):
    cell = torch.nn.GRUCell(8, 16).to(device)
    x, h = torch.randn(1, 8, device=device), torch.randn(1, 16, device=device)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    return (lambda: seqops.gru_cell(x, h, *weights)), (lambda: torch.gru_cell(x, h, *weights))


def _gru_module(device):
    torch_gru = torch.nn.GRU(8, 16).to(device).eval()
    seqops_gru = seqops.nn.GRU(8, 16).to(device).eval()
    seqops_gru.load_state_dict(torch_gru.state_dict())
    x = torch.randn(1, 1, 8, device=device)  # one step of one sequence, time-major
    return (lambda: seqops_gru(x)), (lambda: torch_gru(x))


def _multihead_attention(device):
    torch_mha = torch.nn.MultiheadAttention(16, 2, batch_first=True).to(device).eval()
    seqops_mha = seqops.nn.MultiheadAttention(16, 2, batch_first=True).to(device).eval()
    seqops_mha.load_state_dict(torch_mha.state_dict())
    query, memory = torch.randn(1, 1, 16, device=device), torch.randn(1, 8, 16, device=device)
    return ((lambda: seqops_mha(query, memory, memory, need_weights=False)),
            (lambda: torch_mha(query, memory, memory, need_weights=False)))


PAIRS = [
    Pair("seqops.softmax", "torch.softmax", (4, 16), _softmax),
    Pair("seqops.scaled_dot_product_attention", "F.scaled_dot_product_attention", (1, 2, 1, 16), _attention),
    Pair("seqops.lstm_cell", "torch.lstm_cell", (1, 8), _lstm_cell),
    Pair("seqops.nn.LSTM", "torch.nn.LSTM", (1, 1, 8), _lstm_module),
    Pair("seqops.gru_cell", "torch.gru_cell", (1, 8), _gru_cell),
    Pair("seqops.nn.GRU", "torch.nn.GRU", (1, 1, 8), _gru_module),
    Pair("seqops.nn.MultiheadAttention", "torch.nn.MultiheadAttention", (1, 1, 16), _multihead_attention),
]
_BY_NAME = {pair.name: pair for pair in PAIRS}


def _first_tensor(output) -> torch.Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def _check_same_result(pair: Pair, seqops_call, torch_call) -> None:
    """A call that computed something else would make the difference meaningless."""
    got, want = _first_tensor(seqops_call()), _first_tensor(torch_call())
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise AssertionError(f"{pair.name} on the torch backend differs from {pair.torch_name} (max |diff| "
                             f"{(got - want).abs().max().item():.3g}): the two calls do different work")


def _calls_per_batch(calls: list[Callable[[], object]], device: torch.device) -> int:
    for call in calls:  # warm-up: first calls build caches (dispatch tables, cuBLAS handles)
        for _ in range(20):
            call()
    start = time.perf_counter()
    for _ in range(20):
        for call in calls:
            call()
    per_call = (time.perf_counter() - start) / (20 * len(calls))
    count = max(1, int(BATCH_SECONDS / max(per_call, 1e-9)))
    return min(count, MAX_CUDA_CALLS_PER_BATCH) if device.type == "cuda" else count


def _batch_seconds(call: Callable[[], object], count: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        call()
    return time.perf_counter() - start


def paired_per_call_us(seqops_call: Callable[[], object], torch_call: Callable[[], object], device: torch.device,
                       seconds: float, min_batches: int = 40) -> tuple[list[float], list[float]]:
    """Per-call microseconds of each call in alternating batches: (seqops, torch), entry i
    of each from neighbouring batches. Runs about `seconds`, at least min_batches of each."""
    count = _calls_per_batch([seqops_call, torch_call], device)
    seqops_us, torch_us = [], []
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one batch of a pair would be charged to that call alone
    try:
        deadline = time.perf_counter() + seconds
        index = 0
        while len(seqops_us) < min_batches or time.perf_counter() < deadline:
            seqops_first = index % 2 == 0  # ABBA: A B, B A, A B, ...
            for is_seqops in (seqops_first, not seqops_first):
                elapsed = _batch_seconds(seqops_call if is_seqops else torch_call, count, device)
                (seqops_us if is_seqops else torch_us).append(elapsed / count * 1e6)
            index += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return seqops_us, torch_us


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    """median, p20, p80"""
    deciles = statistics.quantiles(values, n=10)
    return statistics.median(values), deciles[1], deciles[7]


def _result(case: Case, provider: str, values_us: Optional[list[float]], skipped: Optional[str] = None) -> Result:
    result = Result(case.op, case.direction, str(case.dtype).removeprefix("torch."), case.shape, case.sweep,
                    case.panel, provider, skipped=skipped)
    if values_us:
        result.median_ms, result.p20_ms, result.p80_ms = (v * 1e-3 for v in _quantiles(values_us))
    return result


def cases(device: torch.device, quick: bool) -> list[Case]:
    """One case per public op on `device`: panel names the op and the device."""
    return [Case("overhead", "forward", torch.float32, pair.shape, sweep=_numel(pair.shape),
                 panel=f"{pair.name} ({device.type})", params={"pair": pair.name}) for pair in PAIRS]


def _numel(shape: tuple) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _alone(call: Callable[[], object]) -> Callable[[], object]:
    """One call as the pytest-benchmark entries time it. Both sides enter the same contexts
    (the torch one too, where seqops.backend changes nothing), so that the difference of
    their times is seqops' dispatch alone."""
    def run():
        with torch.no_grad(), seqops.backend("torch"):
            return call()

    return run


def providers(device: torch.device) -> list[Provider]:
    """The torch call and the seqops call, each timed alone (pytest-benchmark, or
    suite.run); `run` below is the paired measurement whose difference counts."""
    return [
        Provider(BASELINE, lambda case, device: _alone(_BY_NAME[case.params["pair"]].make(device)[1])),
        Provider(SEQOPS, lambda case, device: _alone(_BY_NAME[case.params["pair"]].make(device)[0])),
    ]


def run(device: torch.device, quick: bool, progress=print, seconds: Optional[float] = None) -> list[Result]:
    """The paired measurement of every op, on the CPU and on `device` if it is a GPU: per
    op and device three results, the torch call, the seqops call and OVERHEAD (their
    difference), median/p20/p80 in ms as every benchmark result. seconds: per op and
    device (default 0.3 quick, else 2)."""
    devices = [torch.device("cpu")] + ([device] if device.type == "cuda" else [])
    seconds = seconds if seconds is not None else 0.3 if quick else 2.0
    results = []
    threads = torch.get_num_threads()
    # Dispatch runs on one thread; intra-op workers on tensors this small only add their
    # wake-ups to the timings (milliseconds of them on a busy machine).
    torch.set_num_threads(1)
    try:
        for on in devices:
            results += _run_on(on, quick, seconds, progress)
    finally:
        torch.set_num_threads(threads)
    return results


def _run_on(on: torch.device, quick: bool, seconds: float, progress) -> list[Result]:
    results = []
    for case in cases(on, quick):
        pair = _BY_NAME[case.params["pair"]]
        try:
            with torch.no_grad(), seqops.backend("torch"):
                seqops_call, torch_call = pair.make(on)
                _check_same_result(pair, seqops_call, torch_call)
                seqops_us, torch_us = paired_per_call_us(seqops_call, torch_call, on, seconds)
        except (RuntimeError, AssertionError) as error:  # BackendUnavailable is a RuntimeError
            reason = f"failed: {str(error).splitlines()[0][:200]}"
            results += [_result(case, name, None, reason) for name in (BASELINE, SEQOPS, OVERHEAD)]
            progress(f"  {case.panel}: {reason}")
            continue
        overhead_us = [s - t for s, t in zip(seqops_us, torch_us)]
        results += [_result(case, BASELINE, torch_us), _result(case, SEQOPS, seqops_us),
                    _result(case, OVERHEAD, overhead_us)]
        median, p20, p80 = _quantiles(overhead_us)
        progress(f"  {case.panel}: {pair.torch_name} {statistics.median(torch_us):.1f} us, seqops "
                 f"{statistics.median(seqops_us):.1f} us, overhead {median:.1f} us (p20 {p20:.1f}, p80 {p80:.1f}; "
                 f"{len(overhead_us)} batch pairs)" + ("" if median <= TARGET_US else f"  > {TARGET_US:g} us target"))
    return results
