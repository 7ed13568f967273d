"""GRU and RNN (tanh) benchmark: one cell step (seqops.gru_cell / rnn_tanh_cell through
seqops.nn.GRUCell / RNNCell vs torch's cell modules) and whole sequences of T = 256
(seqops.nn.GRU / RNN on the Triton backend: one GEMM for the input, then its `sequence`
variant, one launch a layer and direction, and, forced, its `step` variant, a launch a
step; on the CUDA C++ backend: one cooperative launch a layer and direction where its
sequence kernels fit, else its cell a step; vs torch.nn.GRU / RNN, cuDNN on a GPU),
each also against the eager reference; on a GPU also issue 16's comparison with cuDNN
(GRU, T = 1024, batch 16, hidden 768, bf16); batch 1 to
256, hidden 256 to 2048 (input size = hidden), one layer, fp32 and bf16, forward and
forward+backward. TFLOP/s count the GEMMs: 2*G*B*H*(I + H) a step forward (G = 3 gates
for the GRU, 1 for the RNN), 3x that with the backward.
"""
from __future__ import annotations

from typing import Optional

import torch

import seqops
from seqops import dispatch
from seqops.ops.recurrent import reference

from .suite import Case, Provider

GPU_BATCHES = [1, 16, 64, 256]
GPU_HIDDEN = [256, 512, 1024, 2048]
GPU_STEPS = 256
CPU_BATCHES, CPU_HIDDEN, CPU_STEPS = [4], [64, 128], 16
# mode -> (gates, torch cell class, torch layer class, seqops cell class, seqops layer class, reference cell)
MODES = {
    "gru": (3, torch.nn.GRUCell, torch.nn.GRU, seqops.nn.GRUCell, seqops.nn.GRU, reference.gru_cell),
    "rnn_tanh": (1, torch.nn.RNNCell, torch.nn.RNN, seqops.nn.RNNCell, seqops.nn.RNN, reference.rnn_tanh_cell),
}

# (T, B, H, dtype) of issue 16's comparison of the GRU with cuDNN.
ANCHOR = (1024, 16, 768, torch.bfloat16)
# The Triton layer variant forced by its own provider (seqops[triton] runs the backend's
# first, the sequence variant), with its launches per layer and direction over T steps.
FORCED_VARIANTS = {"step": "T launches"}

BASELINE = "torch"
SWEEP_NAME = "hidden size"
MEMORY_PANEL = None


def cases(device: torch.device, quick: bool) -> list[Case]:
    on_gpu = device.type == "cuda"
    batches, hidden_sizes, steps = (GPU_BATCHES, GPU_HIDDEN, GPU_STEPS) if on_gpu else (CPU_BATCHES, CPU_HIDDEN, CPU_STEPS)
    dtypes = [torch.float32, torch.bfloat16] if on_gpu else [torch.float32]
    if quick:
        batches, dtypes, hidden_sizes = batches[len(batches) // 2:][:1], dtypes[:1], hidden_sizes[::2]
    out = []
    if on_gpu:
        T, batch, hidden, dtype = ANCHOR
        for direction in ("forward", "forward+backward"):
            flops = 2 * 3 * batch * hidden * 2 * hidden * T * (3 if direction != "forward" else 1)
            out.append(Case("gru_rnn", direction, dtype, (T, batch, hidden), hidden, flops=flops,
                            panel=f"anchor gru {direction}, bf16, batch {batch}, T={T}",
                            params={"kind": "sequence", "mode": "gru", "anchor": True}))
    for mode, (gates, *_) in MODES.items():
        for dtype in dtypes:
            for direction in ("forward", "forward+backward"):
                for batch in batches:
                    for kind, T in (("step", 1), ("sequence", steps)):
                        for hidden in hidden_sizes:
                            flops = 2 * gates * batch * hidden * 2 * hidden * T * (3 if direction != "forward" else 1)
                            panel = (f"{mode} {kind} {direction}, {str(dtype).removeprefix('torch.')}, batch {batch}"
                                     + (f", T={T}" if kind == "sequence" else ""))
                            out.append(Case("gru_rnn", direction, dtype, (T, batch, hidden), hidden, flops=flops,
                                            panel=panel, params={"kind": kind, "mode": mode}))
    return out


def _timed(case: Case, run, inputs):
    if case.direction == "forward":
        return lambda: run(*inputs)
    leaves = [t for t in inputs if t.requires_grad]
    return lambda: torch.autograd.grad(sum(o.float().sum() for o in run(*inputs)), leaves)


def _inputs(case: Case, device: torch.device):
    """x [T, B, H] (or [B, H] for a step) and h [B, H]."""
    T, B, H = case.shape
    grad = case.direction != "forward"
    shape = (B, H) if case.params["kind"] == "step" else (T, B, H)
    return (torch.randn(*shape, device=device, dtype=case.dtype, requires_grad=grad),
            torch.randn(B, H, device=device, dtype=case.dtype, requires_grad=grad))


def _module_call(case: Case, device: torch.device, module, backend: Optional[str]):
    x, h = _inputs(case, device)
    sequence = case.params["kind"] == "sequence"

    def run(x, h):
        with seqops.backend(backend or "auto"):
            out = module(x, h.unsqueeze(0) if sequence else h)
        return out if isinstance(out, tuple) else (out,)

    return _timed(case, run, (x, h))


def _seqops_provider(backend: str) -> Provider:
    def prepare(case, device):
        _, _, _, cell_class, layer_class, _ = MODES[case.params["mode"]]
        H = case.shape[2]
        module = (cell_class if case.params["kind"] == "step" else layer_class)(H, H).to(device, case.dtype)
        return _module_call(case, device, module, backend)

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        probe = torch.empty(1, 4, device=device, dtype=case.dtype)
        mode = case.params["mode"]
        if case.params["kind"] == "step":
            reason = dispatch.backend_reason(f"{mode}_cell", backend, device, probe, probe, probe, probe, None, None)
        else:  # the layer op, as nn.GRU / nn.RNN call it
            reason = dispatch.backend_reason(mode, backend, device, probe.unsqueeze(0), None, probe.unsqueeze(0), [],
                                             True, 1, 0.0, False, False)
        if reason is None and device.type == "cpu":
            reason = "a GPU kernel: its CPU timings (in Triton's interpreter) mean nothing"
        return reason

    return Provider(f"seqops[{backend}]", prepare, unavailable)


def _variant_provider(variant: str) -> Provider:
    """seqops.nn.GRU / RNN on the Triton backend with `variant` forced, sequences only."""

    def prepare(case, device):
        _, _, _, _, layer_class, _ = MODES[case.params["mode"]]
        H = case.shape[2]
        module = layer_class(H, H).to(device, case.dtype)
        x, h = _inputs(case, device)

        def run(x, h):
            with seqops.backend("triton", variant=variant):
                return module(x, h.unsqueeze(0))

        return _timed(case, run, (x, h))

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        if case.params["kind"] == "step":
            return "sequences only"
        if case.params.get("anchor"):
            return "the anchor case times the Triton sequence variant, the CUDA C++ layer and torch only"
        if device.type == "cpu":
            return "a GPU kernel: its CPU timings (in Triton's interpreter) mean nothing"
        T, B, H = case.shape
        probe = torch.empty(T, B, H, device=device, dtype=case.dtype)
        return dispatch.reason(dispatch.implementation(f"{case.params['mode']}/triton/{variant}"), device, probe,
                               None, probe[:1], [], True, 1, 0.0, False, False)

    return Provider(f"seqops[triton {variant}: {FORCED_VARIANTS[variant]}]", prepare, unavailable)


def _not_at_anchor(case: Case, device: torch.device) -> Optional[str]:
    """Eager loops of 1024 steps would spend the quick check's budget at the anchor."""
    return "the anchor case times the fused layers and torch only" if case.params.get("anchor") else None


def _torch_prepare(case, device):
    _, cell_class, layer_class, _, _, _ = MODES[case.params["mode"]]
    H = case.shape[2]
    module = (cell_class if case.params["kind"] == "step" else layer_class)(H, H).to(device, case.dtype)
    return _module_call(case, device, module, None)


def _reference_prepare(case, device):
    """The reference cell in eager PyTorch, stepped in Python over the sequence."""
    _, cell_class, _, _, _, cell = MODES[case.params["mode"]]
    H = case.shape[2]
    module = cell_class(H, H).to(device, case.dtype)
    weights = (module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh)
    x, h = _inputs(case, device)

    def run(x, h):
        for x_t in (x.unbind(0) if case.params["kind"] == "sequence" else (x,)):
            h = cell(x_t, h, *weights)
        return (h,)

    return _timed(case, run, (x, h))


def providers(device: torch.device) -> list[Provider]:
    return [_seqops_provider("triton"), _seqops_provider("cuda"),
            *(_variant_provider(variant) for variant in FORCED_VARIANTS), Provider("torch", _torch_prepare),
            Provider("reference", _reference_prepare, _not_at_anchor)]
