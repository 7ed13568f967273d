"""Every Triton kernel launch the launchers make compiles for sm_80 and sm_90, no fixed
launch spills registers, and the 16-bit attention tiles of 64+ rows use wgmma on sm_90:
the static report's check (benchmarks/static_report), run apart from this process, whose
kernels may be interpreted. It compiles only the builds the committed report lacks."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a package of the repository, not of the install


def test_kernels_compile_for_gpus_without_spills():
    try:
        import triton.backends.nvidia  # noqa: F401  (the NVIDIA compiler and ptxas)
    except ImportError as error:
        pytest.skip(f"triton's NVIDIA backend is not importable: {error}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.static_report"], env=env, capture_output=True,
                            text=True, timeout=1500, cwd=ROOT)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "\n0 failure(s)" in report


def _entry(kernel="attention_forward_kernel", dtype="*bf16", arch=90, block_m=64, num_warps=4, autotuned=True,
           constants=(), **build):
    pytest.importorskip("triton.backends.nvidia")
    from benchmarks.kernel_launches import Build
    from benchmarks.static_report.report import Entry

    launch = SimpleNamespace(kernel=SimpleNamespace(fn=SimpleNamespace(__name__=kernel)),
                             signature={"q_ptr": dtype, "k_ptr": dtype},
                             constants=lambda: {"BLOCK_M": block_m, **dict(constants)},
                             options={"num_warps": num_warps}, autotuned=autotuned)
    return Entry(launch, arch, "key", Build(**{"registers": 100, "instructions": {"wgmma": 8}, **build}), True)


def test_verdicts():
    assert _entry().verdict() == "ok"
    assert _entry(error="CompilationError: x").failed()
    # An autotuned tile that spills is one its autotuner may drop; a fixed launch is not.
    assert _entry(spilled_bytes=8).verdict() == "spills" and not _entry(spilled_bytes=8).failed()
    assert _entry(spilled_bytes=8, autotuned=False).failed()
    no_wgmma = {"instructions": {"wgmma": 0, "mma_sync": 64}}
    assert _entry(**no_wgmma).verdict() == "NO-WGMMA" and _entry(**no_wgmma).failed()
    # wgmma is required only of 16-bit attention tiles of a warpgroup's rows, on sm_90.
    for exempt in (dict(arch=80), dict(dtype="*fp32"), dict(block_m=32), dict(kernel="softmax_forward_kernel")):
        assert _entry(**exempt, **no_wgmma).verdict() == "ok", exempt


def test_recurrent_gate_products_need_tensor_cores():
    """A recurrent launch with 16-bit weights, or fp32 ones and TF32 on, fails without
    mma.sync or wgmma; exact fp32 products run on FMA units and need neither."""
    def launch(dtype, tf32, instructions):
        entry = _entry(kernel="lstm_sequence_backward_kernel", arch=80, autotuned=False, constants={"TF32": tf32},
                       instructions=instructions)
        entry.launch.signature = {"w_hh_ptr": dtype}
        return entry

    fma_only, with_mma = {"wgmma": 0, "mma_sync": 0}, {"wgmma": 0, "mma_sync": 32}
    for dtype, tf32 in (("*bf16", False), ("*fp16", False), ("*fp32", True)):
        assert launch(dtype, tf32, fma_only).verdict() == "NO-MMA" and launch(dtype, tf32, fma_only).failed()
        assert launch(dtype, tf32, with_mma).verdict() == "ok"
    assert launch("*fp32", False, fma_only).verdict() == "ok"


def test_only_the_listed_spills_are_let_through(monkeypatch):
    pytest.importorskip("triton.backends.nvidia")
    from benchmarks.static_report import report
    wide = dict(kernel="additive_backward_query_kernel", autotuned=False, spilled_bytes=4000)
    # None is listed today: the additive backward's spills, once listed, are failures now.
    assert _entry(**wide, dtype="*fp32", constants={"BLOCK_DV": 256}).verdict() == "SPILLS"
    monkeypatch.setitem(report.KNOWN_SPILLS, "additive_backward_query_kernel", (
        lambda constants, dtypes: constants.get("BLOCK_DV", 0) > 64 and "*fp32" in dtypes, "a reason"))
    assert _entry(**wide, dtype="*fp32", constants={"BLOCK_DV": 256}).verdict() == "KNOWN-SPILL"
    assert not _entry(**wide, dtype="*fp32", constants={"BLOCK_DV": 256}).failed()
    assert _entry(**wide, dtype="*bf16", constants={"BLOCK_DV": 256}).verdict() == "SPILLS"
    assert _entry(**wide, dtype="*fp32", constants={"BLOCK_DV": 64}).verdict() == "SPILLS"
