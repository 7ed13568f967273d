"""LSTM benchmark: one cell step (seqops.lstm_cell vs a torch.nn.LSTMCell step) and whole
sequences of T = 256 (seqops.nn.LSTM vs torch.nn.LSTM, which is cuDNN on a GPU, vs a
torch.nn.LSTMCell loop), each also against the eager reference; batch 1 to 256, hidden
64 to 2048 (input size = hidden), 1 and 2 layers, fp32 and bf16, forward and
forward+backward. TFLOP/s count the GEMMs: 8*B*H*(I + H) a step forward, 3x that with
the backward. The Triton LSTM runs as each of its variants: `step` (a launch per time
step) and `sequence` (a launch per layer and direction; W_hh's slices stay on chip up to
H = 64, 128 in fp32, and are re-read from L2 every step above), each named with its
launches per layer and direction; the CUDA C++ LSTM as its `sequence` variant (one
cooperative launch, W_hh's slices in shared memory; up to H = 1056 on an H100/H200). On a GPU the sweep opens with issue 11's target, B=16,
T=1024, H=768 in bf16, one layer, where cuDNN runs the forward in 2.0 ms and forward and
backward in 5.2 ms on an H100 (shared/ANCHORS.md): fused LSTMs and torch only (ANCHOR).

fp32 on a GPU is timed with TF32 products for every provider: torch's nn.LSTM (cuDNN)
takes them by default (torch.backends.cudnn.allow_tf32), so the others get them too,
through torch's fp32 matmul precision "high" (cuBLAS for torch's LSTMCell, and seqops'
recurrent kernels, which read it). Panels say "float32 (TF32)".
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch

import seqops
from seqops import dispatch
from seqops.ops.recurrent import reference

from .suite import Case, Provider

GPU_BATCHES = [1, 16, 64, 256]
GPU_HIDDEN = [64, 256, 512, 1024, 2048]
GPU_STEPS = 256
CPU_BATCHES, CPU_HIDDEN, CPU_STEPS = [4], [64, 128], 16
FUSED_BACKENDS = ("triton", "cuda")
# The fused LSTMs' variants, each forced in turn (seqops.backend(..., variant=)), with how
# many kernel launches one forward of one layer and direction takes over T steps.
# (The CUDA C++ step variant is what seqops[cuda] runs where the sequence kernels do not
# fit; forced everywhere it would spend the budget on a launch a step at T = 1024.)
LSTM_VARIANTS = {"triton": {"step": "T launches", "sequence": "1 launch"},
                 "cuda": {"sequence": "1 cooperative launch"}}

# (T, B, H, dtype) of issue 11's comparison with cuDNN.
ANCHOR = (1024, 16, 768, torch.bfloat16)

BASELINE = "torch"
SWEEP_NAME = "hidden size"
MEMORY_PANEL = None


def cases(device: torch.device, quick: bool) -> list[Case]:
    on_gpu = device.type == "cuda"
    batches, hidden_sizes, steps = (GPU_BATCHES, GPU_HIDDEN, GPU_STEPS) if on_gpu else (CPU_BATCHES, CPU_HIDDEN, CPU_STEPS)
    dtypes = [torch.float32, torch.bfloat16] if on_gpu else [torch.float32]
    layer_counts = [1, 2]
    if quick:
        batches, dtypes, layer_counts = batches[len(batches) // 2:][:1], dtypes[:1], [1]
    out = []
    if on_gpu:
        T, batch, hidden, dtype = ANCHOR
        for direction in ("forward", "forward+backward"):
            flops = 8 * batch * hidden * 2 * hidden * T * (3 if direction != "forward" else 1)
            out.append(Case("lstm", direction, dtype, (T, batch, hidden), hidden, flops=flops,
                            panel=f"anchor {direction}, bf16, batch {batch}, 1 layer, T={T}",
                            params={"kind": "sequence", "layers": 1, "anchor": True}))
    for dtype in dtypes:
        for direction in ("forward", "forward+backward"):
            for batch in batches:
                for kind, layers, T in [("step", 1, 1)] + [("sequence", n, steps) for n in layer_counts]:
                    for hidden in hidden_sizes:
                        flops = 8 * batch * hidden * 2 * hidden * T * layers * (3 if direction != "forward" else 1)
                        panel = (f"{kind} {direction}, {_dtype_name(dtype, device)}, batch {batch}"
                                 + (f", {layers} layer{'s' * (layers > 1)}, T={T}" if kind == "sequence" else ""))
                        out.append(Case("lstm", direction, dtype, (T, batch, hidden), hidden, flops=flops, panel=panel,
                                        params={"kind": kind, "layers": layers}))
    return out


def _tf32_products(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a case runs with TF32 products: fp32 on a GPU, as cuDNN's LSTM does by default."""
    return dtype == torch.float32 and device.type == "cuda"


def _dtype_name(dtype: torch.dtype, device: torch.device) -> str:
    name = str(dtype).removeprefix("torch.")
    return f"{name} (TF32)" if _tf32_products(dtype, device) else name


@contextlib.contextmanager
def _matmul_precision(precision: str) -> Iterator[None]:
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _timed(case: Case, device: torch.device, make: Callable) -> Callable[[], object]:
    """make(case, device) -> (run, inputs): run(*inputs) gives the tensors to differentiate.
    An fp32 case on a GPU runs under matmul precision "high" (module docstring)."""
    run, inputs = make(case, device)
    if case.direction == "forward":
        call = lambda: run(*inputs)  # noqa: E731
    else:
        leaves = [t for t in inputs if t.requires_grad]
        call = lambda: torch.autograd.grad(sum(o.float().sum() for o in run(*inputs)), leaves)  # noqa: E731
    if not _tf32_products(case.dtype, device):
        return call

    def with_tf32():
        with _matmul_precision("high"):
            return call()

    return with_tf32


def _state(case, device, size):
    T, B, _ = case.shape
    grad = case.direction != "forward"
    return torch.randn(B, size, device=device, dtype=case.dtype, requires_grad=grad)


def _cell_step(module_class, backend: Optional[str]):
    def make(case, device):
        T, B, H = case.shape
        cell = module_class(H, H).to(device, case.dtype)
        x, h, c = (_state(case, device, H) for _ in range(3))

        def run(x, h, c):
            if backend is None:
                return cell(x, (h, c))
            with seqops.backend(backend):
                return cell(x, (h, c))

        return run, (x, h, c)

    return make


def _sequence(module_class, backend: Optional[str], variant: Optional[str] = None):
    def make(case, device):
        T, B, H = case.shape
        rnn = module_class(H, H, num_layers=case.params["layers"]).to(device, case.dtype)
        x = torch.randn(T, B, H, device=device, dtype=case.dtype, requires_grad=case.direction != "forward")

        def run(x):
            if backend is None:
                out, (h_n, c_n) = rnn(x)
            else:
                with seqops.backend(backend, variant=variant):
                    out, (h_n, c_n) = rnn(x)
            return out, h_n, c_n

        return run, (x,)

    return make


def _cell_loop(case, device):
    """A torch.nn.LSTMCell per layer, stepped in Python: the way many models write it."""
    T, B, H = case.shape
    cells = [torch.nn.LSTMCell(H, H).to(device, case.dtype) for _ in range(case.params["layers"])]
    x = torch.randn(T, B, H, device=device, dtype=case.dtype, requires_grad=case.direction != "forward")

    def run(x):
        states = [(torch.zeros(B, H, device=device, dtype=case.dtype),) * 2 for _ in cells]
        outs = []
        for x_t in x.unbind(0):
            for index, cell in enumerate(cells):
                states[index] = cell(x_t, states[index])
                x_t = states[index][0]
            outs.append(x_t)
        return (torch.stack(outs),)

    return run, (x,)


def _reference(case, device):
    T, B, H = case.shape
    if case.params["kind"] == "step":
        cell = torch.nn.LSTMCell(H, H).to(device, case.dtype)
        x, h, c = (_state(case, device, H) for _ in range(3))
        return (lambda x, h, c: reference.lstm_cell(x, (h, c), cell.weight_ih, cell.weight_hh, cell.bias_ih,
                                                    cell.bias_hh)), (x, h, c)
    rnn = torch.nn.LSTM(H, H, num_layers=case.params["layers"]).to(device, case.dtype)
    x = torch.randn(T, B, H, device=device, dtype=case.dtype, requires_grad=case.direction != "forward")
    zeros = torch.zeros(case.params["layers"], B, H, device=device, dtype=case.dtype)
    return (lambda x: reference.lstm(x, None, (zeros, zeros), rnn._flat_weights, True, case.params["layers"], 0.0, False,
                                     False, 0)), (x,)


def _seqops_provider(backend: str) -> Provider:
    def make(case, device):
        if case.params["kind"] == "step":
            return _cell_step(seqops.nn.LSTMCell, backend)(case, device)
        return _sequence(seqops.nn.LSTM, backend)(case, device)

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        if case.params["kind"] == "step":
            probe = torch.empty(1, 4, device=device, dtype=case.dtype)
            reason = dispatch.backend_reason("lstm_cell", backend, device, probe, probe, probe, probe, probe, None,
                                             None)
        else:  # the whole-layer op
            reason = dispatch.backend_reason("lstm", backend, device, *_lstm_call(case, device))
        if reason is None and device.type == "cpu":
            reason = "a GPU kernel: its CPU timings (in Triton's interpreter) mean nothing"
        return reason

    return Provider(f"seqops[{backend}]", lambda case, device: _timed(case, device, make), unavailable)


def _lstm_call(case: Case, device: torch.device) -> tuple:
    """The arguments nn.LSTM passes the lstm op for `case` (what `supports` judges)."""
    T, B, H = case.shape
    layers = case.params["layers"]
    probe = torch.empty(T, B, H, device=device, dtype=case.dtype)
    state = torch.empty(layers, B, H, device=device, dtype=case.dtype)
    weights = [torch.empty(4 * H, H, device=device, dtype=case.dtype)] * 2 + [torch.empty(4 * H, device=device,
                                                                                       dtype=case.dtype)] * 2
    return probe, None, (state, state), weights * layers, True, layers, 0.0, False, False, 0


def _variant_provider(backend: str, variant: str) -> Provider:
    """seqops.nn.LSTM on `backend` with `variant` forced, sequences only."""
    make = _sequence(seqops.nn.LSTM, backend, variant)

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        if case.params["kind"] == "step":
            return "sequences only"
        if device.type == "cpu":
            return "a GPU kernel: its CPU timings (in Triton's interpreter) mean nothing"
        return dispatch.reason(dispatch.implementation(f"lstm/{backend}/{variant}"), device, *_lstm_call(case, device))

    return Provider(f"seqops[{backend} {variant}: {LSTM_VARIANTS[backend][variant]}]",
                    lambda case, device: _timed(case, device, make), unavailable)


def _torch_make(case, device):
    if case.params["kind"] == "step":
        return _cell_step(torch.nn.LSTMCell, None)(case, device)
    return _sequence(torch.nn.LSTM, None)(case, device)


def _not_at_anchor(case: Case, device: torch.device) -> Optional[str]:
    """The anchor case compares the fused LSTMs with cuDNN: eager loops of 1024 steps would
    spend the quick check's budget there."""
    return "the anchor case times the fused LSTMs and torch only" if case.params.get("anchor") else None


def providers(device: torch.device) -> list[Provider]:
    only_sequences = lambda case, device: ("sequences only" if case.params["kind"] == "step"
                                           else _not_at_anchor(case, device))
    return [_seqops_provider(name) for name in FUSED_BACKENDS] + [
        _variant_provider(backend, variant) for backend in LSTM_VARIANTS for variant in LSTM_VARIANTS[backend]] + [
        Provider("torch", lambda case, device: _timed(case, device, _torch_make)),
        Provider("torch LSTMCell loop", lambda case, device: _timed(case, device, _cell_loop), only_sequences),
        Provider("reference", lambda case, device: _timed(case, device, _reference), _not_at_anchor),
    ]
