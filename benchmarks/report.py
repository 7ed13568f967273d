"""Benchmark output: a table on the terminal, JSON tagged with the environment, PNG plots."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Optional

from .suite import Result


def _group_key(r: Result) -> tuple:
    return (r.op, r.direction, r.dtype, tuple(r.shape))


def speedups(results: list[Result], baseline: str) -> dict[int, float]:
    """id(result) -> baseline time / result time, for the same op, direction, dtype, shape."""
    base = {_group_key(r): r.median_ms for r in results if r.provider == baseline and r.median_ms}
    return {id(r): base[_group_key(r)] / r.median_ms for r in results if r.median_ms and _group_key(r) in base}


def table(results: list[Result], baseline: str, copy_gb_per_s: Optional[float]) -> str:
    ratio = speedups(results, baseline)
    header = ["op", "dir", "dtype", "shape", "provider", "median us", "p20-p80 us", "GB/s", "% copy",
              f"x {baseline}", "peak extra MiB"]
    lines = [header]
    for r in results:
        if r.skipped:
            continue
        lines.append([
            r.op, {"forward": "fwd", "backward": "bwd"}[r.direction], r.dtype, "x".join(map(str, r.shape)), r.provider,
            f"{r.median_ms * 1e3:.1f}", f"{r.p20_ms * 1e3:.1f}-{r.p80_ms * 1e3:.1f}",
            f"{r.gb_per_s:.0f}" if r.gb_per_s else "",
            f"{100 * r.gb_per_s / copy_gb_per_s:.0f}" if r.gb_per_s and copy_gb_per_s else "",
            f"{ratio[id(r)]:.2f}" if id(r) in ratio else "",
            f"{r.peak_extra_bytes / 2**20:.1f}" if r.peak_extra_bytes is not None else "n/a",
        ])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in lines]
    skipped = sorted({f"{r.provider}: {r.skipped}" for r in results if r.skipped})
    if skipped:
        text += ["", "not measured:"] + [f"  {s}" for s in skipped]
    return "\n".join(text)


def write_json(path: Path, op: str, environment: dict, ceilings: dict, baseline: str, results: list[Result]) -> None:
    path.write_text(json.dumps({
        "op": op,
        "environment": environment,
        "ceilings": ceilings,
        "baseline": baseline,
        "results": [r.as_json() for r in results],
    }, indent=1) + "\n")


def plot(directory: Path, op: str, device: str, results: list[Result], copy_gb_per_s: Optional[float]) -> list[Path]:
    """One PNG per direction and dtype: GB/s against the swept size, a line per provider.
    Returns the files written ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    panels = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.gb_per_s:
            panels[(r.direction, r.dtype)][r.provider].append((r.sweep, r.gb_per_s))
    written = []
    for (direction, dtype), lines in sorted(panels.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for provider, points in sorted(lines.items()):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=provider)
        if copy_gb_per_s:
            ax.axhline(copy_gb_per_s, color="grey", linestyle="--", label=f"copy {copy_gb_per_s:.0f} GB/s")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("row length")
        ax.set_ylabel("GB/s")
        ax.set_title(f"{op} {direction}, {dtype} ({device})")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = directory / f"{op}_{direction}_{dtype}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
