"""The measuring step: compile every candidate tile of each autotuned attention kernel for
each class of launch the tile table is keyed by, for each arch, and record what each
compiled to (benchmarks/results/static/attention_tiles.json)."""
from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path
from typing import Optional

import torch
import triton
from triton.backends.nvidia.compiler import get_ptxas

import seqops.kernels.attention as attention_kernels
import seqops.kernels.attention.backward as attention_backward
import seqops.kernels.attention.forward as attention_forward
from seqops.kernels import runtime
from seqops.kernels.attention import tuning
from seqops.kernels.attention.common import head_block

from ..kernel_launches import Build, BuildTask, compile_build, every_config, record_launches
from .generate import MEASUREMENT, kernel_sources_digest
# Each class is measured at one launch that stands for it: B=1, H=2, L=S=64, causal;
# "heavy" with both of its features at once (a float mask, with its gradient, and dropout).
SHAPE = (1, 2, 64, 64)
WEIGHT_INPUTS = {"plain": {"mask": None, "dropout": 0.0}, "heavy": {"mask": "float", "dropout": 0.1}}
DTYPES = {"16-bit": torch.bfloat16, "fp32": torch.float32}
# fp32 tiles of more scores than this are recorded as not compiled: fp32 dots run on FMA
# units, each thread holding its share of the operand tiles whole, and every such tile
# measured spilled kilobytes, while ptxas takes minutes over one (dK/dV at 128 x 128 and
# head dim 128: 850 KB spilled, 9 minutes).
FP32_MAX_TILE_SCORES = 64 * 64
NOT_COMPILED = f"not compiled: fp32 tiles of more than {FP32_MAX_TILE_SCORES} scores spill kilobytes"
# The fused backward holds all that the dK/dV kernel holds (k, v, the dK and dV
# accumulators, a tile of scores and their gradient) and a dQ tile more, so it is
# compiled only at the tiles the dK/dV kernel's table keeps for the class.
BOUNDED_BY = {"backward_fused": "backward_dkdv"}
NOT_COMPILED_BOUNDED = "not compiled: the table of {} drops this tile for this class"
MAX_HEAD_DIMS = {"16-bit": attention_kernels.MAX_HEAD_DIM, "fp32": attention_kernels.FP32_MAX_HEAD_DIM}


def admitted_classes() -> list[tuple[str, int, str]]:
    """(dtype class, head-dim class, weight) of every launch the attention kernels take."""
    return [(dtype_class, head_class, weight)
            for dtype_class, max_head_dim in MAX_HEAD_DIMS.items()
            for head_class in tuning.HEAD_DIM_CLASSES if head_class <= tuning.head_dim_class(head_block(max_head_dim))
            for weight in WEIGHT_INPUTS]


def class_launch(dtype_class: str, head_class: int, weight: str):
    """One forward and backward (each schedule) through the launchers at the launch
    standing for a class."""
    B, H, L, S = SHAPE
    dtype = DTYPES[dtype_class]
    q, k, v = (torch.randn(B, H, n, head_class, dtype=dtype) for n in (L, S, S))
    inputs = WEIGHT_INPUTS[weight]
    mask = torch.zeros(1, H, 1, S, dtype=dtype) if inputs["mask"] == "float" else None
    out, lse = attention_kernels.attention_forward(q, k, v, mask, inputs["dropout"], True, 0, 0.1, 1)
    for schedule in attention_backward.SCHEDULES:
        attention_kernels.attention_backward(torch.randn_like(out), q, k, v, out, lse, mask, inputs["dropout"], True,
                                             0, 0.1, 1, mask is not None, schedule=schedule)


def kernel_of(launch) -> str:
    """The tuning name of an autotuned attention kernel's launch ("forward", ...)."""
    return launch.name.removeprefix("attention_").removesuffix("_kernel")


def builds_to_measure(archs: list[int], all_stages: bool,
                      kernels: Optional[list[str]] = None) -> list[tuple[dict, Optional[BuildTask], Optional[str]]]:
    """(what is measured, how to compile it, or None and why it is not compiled) for
    every candidate config of every autotuned kernel (or of `kernels`), class and arch:
    the autotuners' prune (the tile table itself) is bypassed."""
    from seqops.kernels.tiles import TILES

    builds = []
    for key in admitted_classes():
        launches = record_launches((attention_forward, attention_backward), lambda: class_launch(*key),
                                   every_config, pruned=False)
        for launch in launches:
            if not launch.autotuned:
                continue
            kernel = kernel_of(launch)
            stages = launch.options["num_stages"]
            if (kernels and kernel not in kernels) or (not all_stages and stages != max(tuning.STAGES[kernel])):
                continue
            constants = launch.constants()
            tile = [constants["BLOCK_M"], constants["BLOCK_N"], launch.options["num_warps"]]
            skipped = None
            if key[0] == "fp32" and tile[0] * tile[1] > FP32_MAX_TILE_SCORES:
                skipped = NOT_COMPILED
            elif kernel in BOUNDED_BY and tuple(tile) not in TILES[BOUNDED_BY[kernel]].get(key, []):
                skipped = NOT_COMPILED_BOUNDED.format(BOUNDED_BY[kernel])
            for arch in archs:
                what = {"kernel": kernel, "class": list(key), "tile": tile, "stages": stages, "arch": arch}
                builds.append((what, None if skipped else launch.build(arch), skipped))
    kernel_order = list(tuning.STAGES)
    order = lambda item: (kernel_order.index(item[0]["kernel"]), admitted_classes().index(tuple(item[0]["class"])),
                          tuning.CANDIDATE_TILES.index(tuple(item[0]["tile"])), item[0]["stages"], -item[0]["arch"])
    return sorted(builds, key=order)


def measure(archs: list[int], jobs: int, all_stages: bool, kernels: Optional[list[str]] = None) -> dict:
    """The measurement: its provenance, what was measured, and one record per build."""
    builds = builds_to_measure(archs, all_stages, kernels)
    tasks = [task for _, task, _ in builds if task is not None]
    print(f"compiling {len(tasks)} launches with {jobs} processes ({len(builds) - len(tasks)} not compiled)",
          flush=True)
    records = []
    started = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        results = iter(pool.map(compile_build, tasks))
        for done, (what, task, skipped) in enumerate(builds, 1):
            build = next(results) if task is not None else Build(error=skipped)
            if build.error:
                record = {**what, "registers": None, "spilled_bytes": None, "shared_bytes": None, "error": build.error}
            else:
                record = {**what, "registers": build.registers, "spilled_bytes": build.spilled_bytes,
                          "shared_bytes": build.shared_bytes, "error": None}
            records.append(record)
            outcome = build.error or f"{build.registers} registers, {build.spilled_bytes} bytes spilled, " \
                                     f"{build.shared_bytes} bytes shared"
            print(f"[{done}/{len(builds)} {time.monotonic() - started:.0f}s] sm_{what['arch']} {what['kernel']} "
                  f"{tuple(what['class'])} tile {tuple(what['tile'])} stages {what['stages']}: {outcome}", flush=True)
    return {
        "what": "Every candidate tile of each autotuned attention kernel, compiled for each class of launch of the "
                "tile table (seqops.kernels.tiles) at a launch standing for the class: registers a thread, bytes "
                "spilled (stores and loads), shared memory a program in bytes, or why it did not compile.",
        "command": "python -m benchmarks.tiles measure " + " ".join(
            [f"--archs {' '.join(map(str, archs))}"] + (["--all-stages"] if all_stages else [])),
        "triton": triton.__version__,
        "ptxas": {str(arch): get_ptxas(arch).version for arch in archs},
        "kernel_sources_sha256": kernel_sources_digest(),
        "candidate_tiles": [list(tile) for tile in tuning.CANDIDATE_TILES],
        "stages": {kernel: list(stages) for kernel, stages in tuning.STAGES.items()},
        "archs": archs,
        "classes": [list(key) for key in admitted_classes()],
        "class_launch": {"shape [B, H, L, S]": list(SHAPE), "head_dim": "the head-dim class", "causal": True,
                         "dtype": {k: str(v).removeprefix("torch.") for k, v in DTYPES.items()},
                         "weight": WEIGHT_INPUTS},
        "builds": records,
    }


def write_measurement(measurement: dict, path: Path = MEASUREMENT):
    """JSON with one field of the header, then one build, a line, so that a new
    measurement diffs line by line."""
    header = [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in measurement.items() if key != "builds"]
    builds = ",\n".join("  " + json.dumps(record) for record in measurement["builds"])
    text = "{\n" + "\n".join(header) + '\n "builds": [\n' + builds + "\n ]\n}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def merged(measured: dict, previous: dict, kernels: list[str]) -> dict:
    """`previous` with the builds of `kernels` replaced by those of `measured` (a
    measurement of those kernels only) and the header of `measured`; the command and the
    source digest of each earlier measurement stay on record under "earlier"."""
    kept = [build for build in previous["builds"] if build["kernel"] not in kernels]
    earlier = previous.get("earlier", []) + [{"command": previous["command"],
                                              "kernel_sources_sha256": previous["kernel_sources_sha256"],
                                              "kernels kept": sorted({build["kernel"] for build in kept})}]
    order = list(tuning.STAGES)
    builds = sorted(kept + measured["builds"], key=lambda build: order.index(build["kernel"]))
    return {**measured, "earlier": earlier, "builds": builds}


def main(archs: list[int], jobs: int, all_stages: bool, out: Path, kernels: Optional[list[str]] = None) -> int:
    if runtime.INTERPRETED:
        print("measure: run without TRITON_INTERPRET (kernels are interpreted here)")
        return 2
    measurement = measure(archs, jobs, all_stages, kernels)
    if kernels:
        measurement["command"] += " --kernels " + " ".join(kernels)
        measurement = merged(measurement, json.loads(out.read_text()), kernels)
    write_measurement(measurement, out)
    errors = [record["error"] for record in measurement["builds"] if record["error"] is not None]
    skipped = sum(error.startswith("not compiled") for error in errors)
    print(f"wrote {out} ({len(measurement['builds'])} builds: {skipped} not compiled, "
          f"{len(errors) - skipped} failed to compile)")
    return 0
