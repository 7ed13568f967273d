"""The CUDA extension as the tests get it: built once per test session from csrc/ into a
temporary folder, for sm_80 and sm_90a with ptxas's per-kernel report (no GPU needed),
with one instance file of the CuTe kernels (benchmarks/cuda_report checks them all). Tests that need the
build skip cleanly when nvcc or pybind11 is missing."""
from __future__ import annotations

import functools
import importlib.util
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

from seqops import _ext

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ("80", "90a")
# The build is cached per process, so under pytest-xdist every test that uses it should run
# on one worker: each file that calls built() sets `pytestmark = ONE_BUILD`.
ONE_BUILD = pytest.mark.xdist_group("cuda_extension_build")
# The one instance file (csrc/*/instances/) linked into the tests' build, to show that an
# instance registers itself; every instance file's compile is checked by benchmarks/cuda_report.
# Compiled for sm_90a only: its sm_80 compile (about 45 s of nvcc, one core) adds nothing
# that report does not check.
LINKED_INSTANCE = "forward_hd64_fp16.cu"
LINKED_INSTANCE_ARCHS = ("90a",)


def skip_unless_buildable() -> None:
    if _ext.find_nvcc() is None:
        pytest.skip("nvcc is not installed: the CUDA extension cannot be built here")
    if importlib.util.find_spec("pybind11") is None:
        pytest.skip("pybind11 is not installed: the CUDA extension cannot be built here")


@functools.lru_cache(maxsize=None)
def _build() -> tuple[_ext.BuildResult, ModuleType]:
    folder = Path(tempfile.mkdtemp(prefix="seqops-cuda-ext-"))
    result = _ext.build(folder, ARCHS, ptxas_verbose=True, instances=lambda path: path.name == LINKED_INSTANCE,
                        instance_archs=LINKED_INSTANCE_ARCHS)
    return result, _ext.import_module(result.path)


def built() -> tuple[_ext.BuildResult, ModuleType]:
    """(build result, imported module), built once per session; skips when it cannot be."""
    skip_unless_buildable()
    return _build()


def run_host_program(tmp_path, name):
    """tests/cuda_programs/<name>.cu compiled for the host (CuTe's layouts are host code)
    and run: it must print "ok <n> checks" and exit 0 (tests/cuda_programs/host_checks.h)."""
    nvcc, cutlass = _ext.find_nvcc(), _ext.cutlass_include()
    if nvcc is None or cutlass is None:
        pytest.skip("nvcc or the CUTLASS headers are not installed")
    program = tmp_path / name
    compiled = subprocess.run([nvcc, "-std=c++17", "-O1", "-I", str(ROOT / "csrc"), "-I", str(cutlass), "-o",
                               str(program), str(ROOT / "tests" / "cuda_programs" / f"{name}.cu")],
                              capture_output=True, text=True, timeout=600)
    assert compiled.returncode == 0, (compiled.stdout + compiled.stderr)[-4000:]
    ran = subprocess.run([str(program)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and ran.stdout.startswith("ok "), ran.stdout[-4000:]
