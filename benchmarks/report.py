"""Benchmark output: a table on the terminal, JSON tagged with the environment, PNG plots."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

from .suite import Result


def _group_key(r: Result) -> tuple:
    return (r.op, r.panel, r.direction, r.dtype, tuple(r.shape))


def speedups(results: list[Result], baseline: str) -> dict[int, float]:
    """id(result) -> baseline time / result time, for the same op, direction, dtype, shape."""
    base = {_group_key(r): r.median_ms for r in results if r.provider == baseline and r.median_ms}
    return {id(r): base[_group_key(r)] / r.median_ms for r in results if r.median_ms and _group_key(r) in base}


def table(results: list[Result], baseline: str, copy_gb_per_s: Optional[float]) -> str:
    ratio = speedups(results, baseline)
    header = ["op", "case", "shape", "provider", "median us", "p20-p80 us", "GB/s", "% copy", "TFLOP/s",
              f"x {baseline}", "peak extra MiB"]
    lines = [header]
    for r in results:
        if r.skipped:
            continue
        lines.append([
            r.op, r.panel, "x".join(map(str, r.shape)), r.provider,
            f"{r.median_ms * 1e3:.1f}", f"{r.p20_ms * 1e3:.1f}-{r.p80_ms * 1e3:.1f}",
            f"{r.gb_per_s:.0f}" if r.gb_per_s else "",
            f"{100 * r.gb_per_s / copy_gb_per_s:.0f}" if r.gb_per_s and copy_gb_per_s else "",
            f"{r.tflop_per_s:.1f}" if r.tflop_per_s else "",
            f"{ratio[id(r)]:.2f}" if id(r) in ratio else "",
            f"{r.peak_extra_bytes / 2**20:.1f}" if r.peak_extra_bytes is not None else "n/a",
        ])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in lines]
    skipped = sorted({f"{r.provider}: {r.skipped}" for r in results if r.skipped})
    if skipped:
        text += ["", "not measured:"] + [f"  {s}" for s in skipped]
    return "\n".join(text)


def write_json(path: Path, op: str, environment: dict, ceilings: dict, baseline: str, results: list[Result],
               memory_exponents: dict[str, float]) -> None:
    path.write_text(json.dumps({
        "op": op,
        "environment": environment,
        "ceilings": ceilings,
        "baseline": baseline,
        "memory_exponents": memory_exponents,
        "results": [r.as_json() for r in results],
    }, indent=1) + "\n")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_throughput(directory: Path, op: str, device: str, results: list[Result], sweep_name: str,
                    ceilings: dict) -> list[Path]:
    """One PNG per panel: TFLOP/s (or GB/s, where no FLOPs are counted) against the swept
    size, a line per provider, the measured ceiling dashed. [] without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return []
    panels = defaultdict(lambda: defaultdict(list))
    for r in results:
        value = r.tflop_per_s or r.gb_per_s
        if value:
            panels[r.panel][r.provider].append((r.sweep, value))
    written = []
    for panel, lines in sorted(panels.items()):
        in_flops = any(r.tflop_per_s for r in results if r.panel == panel)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for provider, points in sorted(lines.items()):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=provider)
        ceiling = ceilings.get("matmul_tflop_per_s" if in_flops else "copy_gb_per_s")
        if ceiling:
            unit = "TFLOP/s bf16 matmul" if in_flops else "GB/s copy"
            ax.axhline(ceiling, color="grey", linestyle="--", label=f"{ceiling:.0f} {unit}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(sweep_name)
        ax.set_ylabel("TFLOP/s" if in_flops else "GB/s")
        ax.set_title(f"{op}: {panel} ({device})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        path = directory / f"{op}_{_slug(panel)}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def memory_exponents(results: list[Result], panel: str) -> dict[str, float]:
    """provider -> the slope of log(peak extra memory) against log(sweep) over `panel`'s
    cases (least squares; providers measured at fewer than 3 sizes are left out)."""
    points = defaultdict(list)
    for r in results:
        if r.panel == panel and r.peak_extra_bytes:
            points[r.provider].append((math.log(r.sweep), math.log(r.peak_extra_bytes)))
    exponents = {}
    for provider, xy in points.items():
        if len(xy) < 3:
            continue
        mean_x = sum(x for x, _ in xy) / len(xy)
        mean_y = sum(y for _, y in xy) / len(xy)
        exponents[provider] = sum((x - mean_x) * (y - mean_y) for x, y in xy) / sum((x - mean_x) ** 2 for x, _ in xy)
    return exponents


def plot_memory(directory: Path, op: str, device: str, results: list[Result], panel: str, sweep_name: str,
                exponents: dict[str, float]) -> list[Path]:
    """Peak extra memory against the swept size on log-log axes, a line per provider,
    labelled with its fitted exponent. [] without matplotlib or measurements."""
    plt = _pyplot()
    lines = defaultdict(list)
    for r in results:
        if r.panel == panel and r.peak_extra_bytes:
            lines[r.provider].append((r.sweep, r.peak_extra_bytes / 2**20))
    if plt is None or not lines:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for provider, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points))
        label = f"{provider} (exponent {exponents[provider]:.2f})" if provider in exponents else provider
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(sweep_name)
    ax.set_ylabel("peak extra memory (MiB)")
    ax.set_title(f"{op}: {panel} ({device})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    path = directory / f"{op}_{_slug(panel)}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [path]
