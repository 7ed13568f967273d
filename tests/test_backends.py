"""Choosing a backend: seqops.backend(...), SEQOPS_BACKEND, the Impl registry and auto's
order over it, and the reasons an explicit choice that cannot run raises."""
import os
import subprocess
import sys
import threading

import pytest
import torch

import seqops
from seqops import dispatch


def chosen(x):
    """The backend of the implementation that would run seqops.softmax(x, -1)."""
    return dispatch.select("softmax", x.device, x, x.dim() - 1, None, 1.0, None, False).backend


def test_auto_on_cpu_is_torch():
    assert dispatch.current() == "auto"
    assert chosen(torch.randn(3)) == "torch"


def test_context_manager_nests_and_restores():
    with seqops.backend("reference"):
        assert dispatch.current() == "reference"
        with seqops.backend("torch"):
            assert dispatch.current() == "torch"
        assert dispatch.current() == "reference"
        assert chosen(torch.randn(3)) == "reference"
    assert dispatch.current() == "auto"


def test_context_manager_restores_after_an_error():
    with pytest.raises(RuntimeError, match="boom"):
        with seqops.backend("reference"):
            raise RuntimeError("boom")
    assert dispatch.current() == "auto"


def test_choice_is_per_thread():
    seen = []
    with seqops.backend("reference"):
        thread = threading.Thread(target=lambda: seen.append(dispatch.current()))
        thread.start()
        thread.join()
    assert seen == ["auto"]


def run_with_backend_variable(value: str, code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh process whose SEQOPS_BACKEND is `value` (read at import)."""
    env = {**os.environ, "SEQOPS_BACKEND": value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_environment_variable():
    result = run_with_backend_variable("reference", (
        "import torch, seqops\n"
        "from seqops import dispatch\n"
        "x = torch.randn(3)\n"
        "print(dispatch.current(), dispatch.select('softmax', x.device, x, 0, None, 1.0, None, False).backend)\n"
        "with seqops.backend('torch'):\n"
        "    print(dispatch.current())\n"))
    assert result.stdout.split() == ["reference", "reference", "torch"], result.stderr[-2000:]


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown backend 'fast'; expected one of auto, triton, cuda, torch, reference"):
        with seqops.backend("fast"):
            pass
    result = run_with_backend_variable("Triton", "import torch, seqops\nseqops.softmax(torch.randn(3))\n")
    assert result.returncode != 0
    assert "environment variable SEQOPS_BACKEND: unknown backend 'Triton'" in result.stderr, result.stderr[-2000:]


def test_explicit_cuda_backend_says_why_it_cannot_run():
    with seqops.backend("cuda"):
        with pytest.raises(seqops.BackendUnavailable,
                           match="backend 'cuda' cannot run this call: the CUDA C\\+\\+ kernels take CUDA tensors"):
            seqops.softmax(torch.randn(3))


def test_auto_falls_back_past_backends_that_cannot_take_the_input(monkeypatch):
    """With triton preferred (as on CUDA), auto takes it for float32 and falls back to
    torch for float64, which the fused kernels do not take."""
    if dispatch.platform_reason("triton", torch.device("cpu")) is not None:
        pytest.skip("triton cannot run on the CPU here (needs TRITON_INTERPRET=1)")
    triton = dispatch.implementation("softmax/triton/fused")
    monkeypatch.setitem(dispatch._auto_order, ("softmax", "cpu"), [triton, dispatch.implementation("softmax/torch/composite")])
    assert chosen(torch.randn(3)) == "triton"
    assert chosen(torch.randn(3, dtype=torch.float64)) == "torch"


def test_auto_raises_when_nothing_can_run(monkeypatch):
    monkeypatch.setitem(dispatch._auto_order, ("softmax", "cpu"), [dispatch.implementation("softmax/triton/fused")])
    with pytest.raises(seqops.BackendUnavailable, match=r"no backend can run this call \(triton: .*float64"):
        seqops.softmax(torch.randn(3, dtype=torch.float64))


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
    assert "the CUDA C++ kernels take CUDA tensors, got tensors on cpu" in dispatch.platform_reason("cuda", cpu)
    assert dispatch.platform_reason("torch", cpu) is None
    assert dispatch.platform_reason("reference", cpu) is None
    if dispatch.platform_reason("triton", cpu) is None:
        x64 = torch.randn(3, dtype=torch.float64)
        reason = dispatch.backend_reason("softmax", "triton", cpu, x64, 0, None, 1.0, None, False)
        assert "float64 runs on the torch backend" in reason


def test_every_op_has_its_torch_and_reference_implementations_and_auto_order():
    """The registry is filled at import: torch and reference for every op, the fused
    Triton ones; auto takes torch on the CPU, and on CUDA ranks the kernels as the
    committed GPU results do (torch first where it was faster: seqops/backends/triton.py)."""
    for op in ("softmax", "attention", "lstm_cell", "lstm", "additive_attention"):
        backends_of_op = {impl.backend for impl in dispatch.implementations(op)}
        assert {"torch", "reference", "triton"} <= backends_of_op, (op, backends_of_op)
        assert [impl.backend for impl in dispatch._auto_order[(op, "cpu")]] == ["torch"]
        # The CUDA C++ kernels rank last until GPU measurements say otherwise.
        cuda_last = ["cuda"] if op in ("softmax", "lstm_cell", "attention") else []
        # The LSTM has two Triton variants: sequence (one launch per layer), then step;
        # softmax's Triton kernels rank above torch for rows where they were measured faster.
        # Attention's two: decode (a few queries against long keys), then fused.
        tritons = (["triton/sequence", "triton/step"] if op == "lstm" else
                   ["triton/decode", "triton/fused"] if op == "attention" else ["triton"])
        measured = (tritons + ["torch"] if op == "additive_attention" else
                    ["triton/long-rows", "torch", "triton/fused"] if op == "softmax" else ["torch"] + tritons)
        order = [f"{impl.backend}/{impl.variant}" if op in ("lstm", "softmax", "attention") and impl.backend == "triton"
                 else impl.backend for impl in dispatch._auto_order[(op, "cuda")]]
        assert order == measured + cuda_last, (op, order)


def test_a_registered_implementation_is_found_by_key_and_chosen_explicitly():
    """A backend plugs in by registering an Impl; the op then finds it by key and an
    explicit choice of its backend runs it, through the op's own autograd."""
    calls = []

    def forward(input, mask, dim, scale, causal, out_dtype):
        calls.append("forward")
        return torch.softmax(input.to(out_dtype) * scale, dim)

    def backward(grad, y, mask, dim, scale, causal, in_dtype):
        calls.append("backward")
        return (scale * y * (grad - (grad * y).sum(dim, keepdim=True))).to(in_dtype)

    original = dispatch._by_op_backend.get(("softmax", "cuda"))
    impl = dispatch.register(dispatch.Impl("softmax", "cuda", "test", {"forward": forward, "backward": backward}))
    dispatch._by_op_backend[("softmax", "cuda")] = [impl]  # alone: the real CUDA C++ Impl needs a GPU
    try:
        assert dispatch.implementation("softmax/cuda/test") is impl
        x = torch.randn(4, 5, requires_grad=True)
        with seqops.backend("cuda"):
            dispatch_platforms = dict(dispatch._platforms)
            dispatch._platforms.pop("cuda")  # this test's implementation runs on the CPU
            try:
                y = seqops.softmax(x, -1)
                y.backward(torch.ones_like(y))
            finally:
                dispatch._platforms.update(dispatch_platforms)
        assert calls == ["forward", "backward"]
        torch.testing.assert_close(y, torch.softmax(x, -1))
    finally:
        dispatch._by_key.pop(impl.key)
        if original is None:
            dispatch._by_op_backend.pop(("softmax", "cuda"))
        else:
            dispatch._by_op_backend[("softmax", "cuda")] = original


def test_every_package_is_installed_by_setup():
    """setup.py lists packages by name: a new folder left out of it would be missing from
    a wheel though an editable install finds it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = set(re.findall(r'"(seqops(?:\.[a-z_]+)*)"', (root / "setup.py").read_text()))
    on_disk = {"seqops." + ".".join(init.parent.relative_to(root / "seqops").parts) if init.parent != root / "seqops"
               else "seqops" for init in (root / "seqops").rglob("__init__.py")}
    on_disk |= {"seqops.kernels" + "".join("." + part for part in init.parent.relative_to(root / "kernels").parts)
                for init in (root / "kernels").rglob("__init__.py")}
    assert on_disk <= listed, sorted(on_disk - listed)


def test_kernels_import_nothing_from_seqops():
    """kernels/ is the bottom of the house: the Triton code imports nothing from seqops (only
    relative imports among itself), so it can be read, compiled and tested on its own."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "kernels"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.relative_to(root)}: {name}" for name in names if name.split(".")[0] == "seqops"]
    assert not offenders, offenders


def test_the_kernels_copies_of_contract_values_agree():
    """What kernels/ must know of a contract and cannot import, it holds as a copy: each
    copy equal to the contract's own value."""
    from seqops.kernels import packed_steps
    from seqops.ops.recurrent import contract

    assert packed_steps.SAVED_PER_UNIT == contract.SAVED_PER_UNIT


def test_auto_prefers_triton_for_softmax_rows_where_it_was_measured_faster():
    """On CUDA, float32 rows of SOFTMAX_LONG_ROWS or more go to Triton's kernels ahead of
    torch (the H200 results); shorter rows and other dtypes keep torch (meta tensors:
    the choice is made from shapes alone)."""
    from seqops.backends import triton as triton_backend

    long_rows = triton_backend._softmax_long_rows_reason
    wide = torch.empty(4, triton_backend.SOFTMAX_LONG_ROWS, device="meta")
    assert long_rows(wide, 1, None) is None
    assert long_rows(wide.transpose(0, 1), 0, None) is None  # the softmax dim, wherever it is
    assert "torch.softmax was faster there" in long_rows(wide[:, :-1], 1, None)
    assert "float32 measurements only" in long_rows(wide.bfloat16(), 1, None)
    assert "float32 measurements only" in long_rows(wide, 1, torch.bfloat16)
    assert "float64 runs on the torch backend" in long_rows(wide.double(), 1, None)
    impls = dispatch._auto_order[("softmax", "cuda")]
    assert [i.variant for i in impls[:1]] == ["long-rows"] and impls[0].forward is not None
