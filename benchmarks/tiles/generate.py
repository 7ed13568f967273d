"""The generating step: kernels/tiles.py, the attention tile table, from the recorded
measurement, by one rule."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEASUREMENT = ROOT / "benchmarks" / "results" / "static" / "attention_tiles.json"
TABLE = ROOT / "kernels" / "tiles.py"
COMMAND = "python -m benchmarks.tiles generate"
# What the attention kernels compile from (kernels/tiles.py, the output, left out): the
# measurement records their digest, so that generating from a measurement of other
# kernels says so.
KERNEL_SOURCES = ["kernels/attention/common.py", "kernels/attention/forward.py", "kernels/attention/backward.py",
                  "kernels/attention/tuning.py", "kernels/masks.py", "kernels/runtime.py"]

RULE_ARCH = 90
# The most shared memory a program may ask for on sm_90 (227 KiB, the opt-in limit of an
# H100 block): a tile past it cannot launch there.
RULE_SHARED_BYTES = 227 * 1024
RULE = (f"a candidate tile is kept for a class when, compiled for sm_{RULE_ARCH} at its kernel's deepest "
        f"pipeline (the most num_stages it is tried at: the most shared memory), it compiled, spilled no "
        f"registers and asks for at most {RULE_SHARED_BYTES} bytes ({RULE_SHARED_BYTES // 1024} KiB) of shared memory")


def tile_table(measurement: dict) -> dict[str, dict[tuple, list[tuple]]]:
    """{kernel: {(dtype class, head-dim class, weight): sorted tiles (BLOCK_M, BLOCK_N,
    num_warps)}} of the tiles that pass RULE; a class with none is left out."""
    deepest = {kernel: max(stages) for kernel, stages in measurement["stages"].items()}
    table: dict[str, dict[tuple, list[tuple]]] = {kernel: {} for kernel in measurement["stages"]}
    for build in measurement["builds"]:
        kernel = build["kernel"]
        if build["arch"] != RULE_ARCH or build["stages"] != deepest[kernel]:
            continue
        if build["error"] is None and build["spilled_bytes"] == 0 and build["shared_bytes"] <= RULE_SHARED_BYTES:
            table[kernel].setdefault(tuple(build["class"]), []).append(tuple(build["tile"]))
    return {kernel: {key: sorted(classes[key]) for key in sorted(classes)} for kernel, classes in table.items()}


def render(measurement: dict, measurement_name: str) -> str:
    """The source of kernels/tiles.py for a measurement read from `measurement_name` (a
    path relative to the repository root)."""
    lines = [
        '"""Tile tables of the autotuned attention kernels: for each kernel and class of launch',
        "(dtype class, head-dim class, plain or heavy; see attention/tuning.py), the tiles",
        "(BLOCK_M, BLOCK_N, num_warps) its autotuner may try.",
        "",
        f"Generated from {measurement_name}",
        f"(measured by `{measurement['command']}`, triton {measurement['triton']})",
        f"by `{COMMAND}`; do not edit it by hand.",
        "Rule: " + RULE + ".",
        '"""',
        "",
        "TILES = {",
    ]
    for kernel, classes in tile_table(measurement).items():
        if not classes:
            lines.append(f"    {kernel!r}: {{}},")
            continue
        lines.append(f"    {kernel!r}: {{")
        lines += [f"        {key!r}: {tiles!r}," for key, tiles in classes.items()]
        lines.append("    },")
    lines.append("}")
    return "\n".join(_wrapped(line) for line in lines) + "\n"


def _wrapped(line: str, width: int = 100) -> str:
    """A header line past `width` broken at spaces (the table's lines stay whole)."""
    if line.startswith(" ") or len(line) <= width:
        return line
    out, current = [], ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return "\n".join(out + [current])


def kernel_sources_digest() -> str:
    digest = hashlib.sha256()
    for path in KERNEL_SOURCES:
        digest.update(path.encode() + b"\0" + (ROOT / path).read_bytes())
    return digest.hexdigest()


def load(path: Path = MEASUREMENT) -> dict:
    return json.loads(path.read_text())


def main(measurement_path: Path = MEASUREMENT, out: Path = TABLE) -> int:
    measurement = load(measurement_path)
    out.write_text(render(measurement, measurement_path.resolve().relative_to(ROOT).as_posix()))
    counts = {kernel: sum(map(len, classes.values())) for kernel, classes in tile_table(measurement).items()}
    print(f"wrote {out} from {measurement_path}: " + ", ".join(f"{k} {n} tiles" for k, n in counts.items()))
    if measurement["kernel_sources_sha256"] != kernel_sources_digest():
        print(f"note: the kernels changed since this measurement ({', '.join(KERNEL_SOURCES)}); if their code "
              "did, rerun `python -m benchmarks.tiles measure` and generate again")
    return 0
