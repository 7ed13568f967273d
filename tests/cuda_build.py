"""The CUDA extension as the tests get it: built once per test session from csrc/ into a
temporary folder, for sm_80 and sm_90a with ptxas's per-kernel report (no GPU needed),
and ptxas's report read per kernel. Tests that need the build skip cleanly when nvcc or
pybind11 is missing."""
from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from seqops import _ext

ARCHS = ("80", "90a")


@dataclass(frozen=True)
class KernelReport:
    """One kernel for one arch, as ptxas -v reports it."""

    name: str            # demangled
    arch: str            # "sm_80"
    registers: int
    shared_bytes: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int


def demangle(names: list[str]) -> list[str]:
    if not names or shutil.which("c++filt") is None:
        return names
    result = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    out = result.stdout.splitlines()
    return out if len(out) == len(names) else names


def ptxas_reports(log: str) -> list[KernelReport]:
    """Every entry function in a `-Xptxas -v` log: 'Compiling entry function' gives name and
    arch; the lines after it give stack, spills, registers and shared memory."""
    raw: list[dict] = []
    for line in log.splitlines():
        entry = re.search(r"Compiling entry function '([^']+)' for '(sm_\w+)'", line)
        if entry:
            raw.append({"name": entry.group(1), "arch": entry.group(2), "registers": 0, "shared_bytes": 0,
                        "stack_bytes": 0, "spill_store_bytes": 0, "spill_load_bytes": 0})
            continue
        if not raw:
            continue
        frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if frame:
            raw[-1].update(stack_bytes=int(frame.group(1)), spill_store_bytes=int(frame.group(2)),
                           spill_load_bytes=int(frame.group(3)))
        used = re.search(r"Used (\d+) registers", line)
        if used:
            raw[-1]["registers"] = int(used.group(1))
            smem = re.search(r"(\d+) bytes smem", line)
            raw[-1]["shared_bytes"] = int(smem.group(1)) if smem else 0
    names = demangle([r["name"] for r in raw])
    return [KernelReport(**{**r, "name": name}) for r, name in zip(raw, names)]


def skip_unless_buildable() -> None:
    if _ext.find_nvcc() is None:
        pytest.skip("nvcc is not installed: the CUDA extension cannot be built here")
    if importlib.util.find_spec("pybind11") is None:
        pytest.skip("pybind11 is not installed: the CUDA extension cannot be built here")


@functools.lru_cache(maxsize=None)
def _build() -> tuple[_ext.BuildResult, ModuleType]:
    folder = Path(tempfile.mkdtemp(prefix="seqops-cuda-ext-"))
    result = _ext.build(folder, ARCHS, ptxas_verbose=True)
    return result, _ext.import_module(result.path)


def built() -> tuple[_ext.BuildResult, ModuleType]:
    """(build result, imported module), built once per session; skips when it cannot be."""
    skip_unless_buildable()
    return _build()
