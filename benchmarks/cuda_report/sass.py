"""What instructions an object compiled for a GPU holds, read from its SASS with
cuobjdump -sass (no GPU needed): the counts of the tensor-core and copy instructions the
report's rules ask about."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from seqops import _ext

# Instruction (opcode before the first dot) -> what it is, for the report's columns.
COUNTED = {
    "HGMMA": "wgmma: Hopper's warpgroup tensor-core matmul",
    "HMMA": "mma.sync: the warp-level tensor-core matmul of sm80 on",
    "LDGSTS": "cp.async: global to shared memory, bypassing registers",
    "UTMALDG": "TMA: a bulk tensor load by the copy engine",
}
_OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")


def find_cuobjdump() -> Optional[str]:
    """cuobjdump from PATH, the CUDA toolkit beside nvcc, or the copy Triton ships."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    candidates = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "cuobjdump"]
    nvcc = _ext.find_nvcc()
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent / "cuobjdump")
    try:
        import triton
        candidates.append(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    except ImportError:
        pass
    return next((str(c) for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def count_instructions(sass: str) -> dict[str, int]:
    """COUNTED opcode -> how many instructions of the listing have it."""
    counts = dict.fromkeys(COUNTED, 0)
    for match in _OPCODE.finditer(sass):
        if match.group(1) in counts:
            counts[match.group(1)] += 1
    return counts


def object_instructions(obj: Path, cuobjdump: Optional[str] = None) -> Optional[dict[str, int]]:
    """The counts of the object's SASS, or None when no cuobjdump can read it."""
    cuobjdump = cuobjdump or find_cuobjdump()
    if cuobjdump is None:
        return None
    result = subprocess.run([cuobjdump, "-sass", str(obj)], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return count_instructions(result.stdout)


_SECTION = re.compile(r"^\s*(arch = sm_\w+|Function : \S+)\s*$", re.M)


def instructions_per_function(sass: str) -> dict[tuple[str, str], dict[str, int]]:
    """(arch, mangled kernel name) -> the COUNTED opcodes of that kernel's listing, from a
    whole `cuobjdump -sass` (its "arch = sm_XX" and "Function : name" headers)."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    arch, name, start = "", None, 0
    for match in _SECTION.finditer(sass):
        if name is not None:
            out[(arch, name)] = count_instructions(sass[start:match.start()])
            name = None
        header = match.group(1)
        if header.startswith("arch = "):
            arch = header.removeprefix("arch = ")
        else:
            name, start = header.removeprefix("Function : "), match.end()
    if name is not None:
        out[(arch, name)] = count_instructions(sass[start:])
    return out
