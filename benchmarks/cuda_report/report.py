"""The committed CUDA instance report: what each instance file compiled to for each arch,
filed under seqops._ext.object_key, and the rule an object must pass."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from .ptxas_log import KernelReport

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "static" / "cuda_instances.json"
MARKDOWN = RESULTS.with_suffix(".md")
COMMAND = "python -m benchmarks.cuda_report --write"
# Instance files whose sm_90a object must hold wgmma (HGMMA) and TMA (UTMALDG)
# instructions: the Hopper attention forward, which would otherwise lose its reason to
# exist silently (a layout or a guard that made CuTe fall back, or an empty kernel body
# for the wrong target).
HOPPER_PREFIX = "attention/instances/forward_sm90_"
HOPPER_INSTRUCTIONS = {"HGMMA": "wgmma", "UTMALDG": "TMA"}


@dataclass
class ObjectBuild:
    """One instance file compiled for one arch."""

    source: str                      # relative to csrc/
    arch: str                        # "90a"
    seconds: float
    kernels: list[KernelReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # ptxas warning lines
    error: Optional[str] = None      # the tail of nvcc's output when it failed
    # SASS instruction counts (sass.COUNTED), or None when no cuobjdump could read the object
    instructions: Optional[dict] = None

    def problems(self) -> list[str]:
        """Why this object fails the check (empty when it passes)."""
        if self.error:
            return [f"does not compile: {self.error}"]
        found = [f"ptxas: {line}" for line in self.warnings]
        if not self.kernels:
            found.append("no kernel in ptxas's report")
        found += [f"{k.name} spills {k.spill_store_bytes} B stored, {k.spill_load_bytes} B loaded"
                  for k in self.kernels if k.spill_store_bytes or k.spill_load_bytes]
        if self.source.startswith(HOPPER_PREFIX) and self.arch == "90a":
            if self.instructions is None:
                found.append("its SASS could not be read (no cuobjdump): the wgmma and TMA rule cannot be checked")
            else:
                found += [f"no {what} ({opcode}) in its SASS: {self.instructions}"
                          for opcode, what in HOPPER_INSTRUCTIONS.items() if not self.instructions.get(opcode)]
        return found

    @classmethod
    def from_json(cls, data: dict) -> "ObjectBuild":
        return cls(**{**data, "kernels": [KernelReport(**k) for k in data["kernels"]]})


def load() -> dict[str, ObjectBuild]:
    if not RESULTS.is_file():
        return {}
    return {key: ObjectBuild.from_json(data) for key, data in json.loads(RESULTS.read_text())["objects"].items()}


def write(builds: dict[str, ObjectBuild], toolchain: dict, source_commit: Optional[str]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    ordered = dict(sorted(builds.items(), key=lambda item: (item[1].source, item[1].arch)))
    RESULTS.write_text(json.dumps({"command": COMMAND, "source_commit": source_commit, "toolchain": toolchain,
                                   "objects": {key: asdict(b) for key, b in ordered.items()}}, indent=1) + "\n")
    MARKDOWN.write_text("\n".join(_markdown(ordered.values(), toolchain, source_commit)) + "\n")


def _markdown(builds: Iterable[ObjectBuild], toolchain: dict, source_commit: Optional[str]) -> list[str]:
    lines = ["# CUDA instance files: ptxas per kernel", "",
             f"`{COMMAND}` at {source_commit or 'an uncommitted tree'}; "
             + ", ".join(f"{name} {value}" for name, value in toolchain.items()) + ". Compiled, never run here. "
             "Shared bytes are ptxas's static count: kernels that size theirs at launch (the attention "
             "forward: `attention_forward_instances()` gives it) show 0. The SASS column counts the tensor-core "
             "and copy instructions of the whole object (every kernel of the file), read with cuobjdump.", "",
             "| file | arch | kernel | registers | shared B | stack B | spilled B | SASS | nvcc s |",
             "|---|---|---|---:|---:|---:|---:|---|---:|"]
    for build in builds:
        if build.error or not build.kernels:
            lines.append(f"| {build.source} | sm_{build.arch} | {'; '.join(build.problems())} | | | | | | "
                         f"{build.seconds:.0f} |")
        counts = ", ".join(f"{op} {n}" for op, n in (build.instructions or {}).items() if n)
        for k in build.kernels:
            short = k.name.replace("(anonymous namespace)::", "").removeprefix("void ").split("(")[0]
            lines.append(f"| {build.source} | sm_{build.arch} | `{short}` | {k.registers} | {k.shared_bytes} | "
                         f"{k.stack_bytes} | {k.spill_store_bytes + k.spill_load_bytes} | {counts} | "
                         f"{build.seconds:.0f} |")
    return lines
