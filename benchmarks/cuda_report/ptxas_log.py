"""ptxas's `-v` report read per kernel: registers, shared memory, stack and spills of every
entry function nvcc compiled, for each arch, names demangled."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass


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
