"""Choosing a backend: seqops.backend(...), SEQOPS_BACKEND, auto's fallback, and the
reasons an explicit choice that cannot run raises."""
import os
import subprocess
import sys
import threading

import pytest
import torch

import seqops
from seqops import backends, reference, torch_backend
from seqops.ops.softmax import SOFTMAX


def chosen(x):
    return SOFTMAX.select(x.device, x, -1, None, scale=1.0, mask=None, causal=False)


def test_auto_on_cpu_is_torch():
    assert backends.current() == "auto"
    assert chosen(torch.randn(3)) is torch_backend.softmax


def test_context_manager_nests_and_restores():
    with seqops.backend("reference"):
        assert backends.current() == "reference"
        with seqops.backend("torch"):
            assert backends.current() == "torch"
        assert backends.current() == "reference"
        assert chosen(torch.randn(3)) is reference.softmax
    assert backends.current() == "auto"


def test_context_manager_restores_after_an_error():
    with pytest.raises(RuntimeError, match="boom"):
        with seqops.backend("reference"):
            raise RuntimeError("boom")
    assert backends.current() == "auto"


def test_choice_is_per_thread():
    seen = []
    with seqops.backend("reference"):
        thread = threading.Thread(target=lambda: seen.append(backends.current()))
        thread.start()
        thread.join()
    assert seen == ["auto"]


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("SEQOPS_BACKEND", "reference")
    assert backends.current() == "reference"
    assert chosen(torch.randn(3)) is reference.softmax
    with seqops.backend("torch"):
        assert backends.current() == "torch"


def test_unknown_names_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'fast'; expected one of auto, triton, cuda, torch, reference"):
        with seqops.backend("fast"):
            pass
    monkeypatch.setenv("SEQOPS_BACKEND", "Triton")
    with pytest.raises(ValueError, match="environment variable SEQOPS_BACKEND: unknown backend 'Triton'"):
        seqops.softmax(torch.randn(3))


def test_explicit_cuda_backend_says_why_it_cannot_run():
    with seqops.backend("cuda"):
        with pytest.raises(seqops.BackendUnavailable, match="backend 'cuda' cannot run this call: .*no kernels yet"):
            seqops.softmax(torch.randn(3))


def test_auto_falls_back_past_backends_that_cannot_take_the_input(monkeypatch):
    """With triton preferred (as on CUDA), auto takes it for float32 and falls back to
    torch for float64, which the fused kernels do not take."""
    if backends.platform_reason("triton", torch.device("cpu")) is not None:
        pytest.skip("triton cannot run on the CPU here (needs TRITON_INTERPRET=1)")
    monkeypatch.setitem(backends.AUTO_PREFERENCE, (None, "cpu"), ("cuda", "triton", "torch"))
    assert chosen(torch.randn(3)) is not torch_backend.softmax
    assert chosen(torch.randn(3, dtype=torch.float64)) is torch_backend.softmax


def test_auto_raises_when_nothing_can_run(monkeypatch):
    monkeypatch.setitem(backends.AUTO_PREFERENCE, (None, "cpu"), ("cuda",))
    with pytest.raises(seqops.BackendUnavailable, match=r"no backend can run this call \(cuda: .*no kernels yet"):
        seqops.softmax(torch.randn(3))


def test_triton_on_cpu_without_the_interpreter_says_to_set_it():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import torch, seqops\n"
        "with seqops.backend('triton'):\n"
        "    seqops.softmax(torch.randn(3))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "BackendUnavailable" in result.stderr
    assert "TRITON_INTERPRET=1" in result.stderr, result.stderr[-2000:]
    assert "seqops.softmax: backend 'triton' cannot run this call" in result.stderr


def test_reasons_name_the_backend_and_the_limit():
    cpu = torch.device("cpu")
    assert "no kernels yet" in backends.platform_reason("cuda", cpu)
    assert backends.platform_reason("torch", cpu) is None
    assert backends.platform_reason("reference", cpu) is None
    if backends.platform_reason("triton", cpu) is None:
        x64 = torch.randn(3, dtype=torch.float64)
        reason = SOFTMAX.reason("triton", cpu, x64, -1, None, scale=1.0, mask=None, causal=False)
        assert "float64 runs on the torch backend" in reason
