"""Every Triton kernel launch the launchers make compiles for sm_80 and sm_90 without
register spills (tests/compile_triton_kernels.py, run apart from this process, whose
kernels may be interpreted)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).with_name("compile_triton_kernels.py")


def test_kernels_compile_for_gpus_without_spills():
    try:
        import triton.backends.nvidia  # noqa: F401  (the NVIDIA compiler and ptxas)
    except ImportError as error:
        pytest.skip(f"triton's NVIDIA backend is not importable: {error}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "0 failure(s)" in report
