"""Which schedule the attention backward (backward.py) runs a launch on: "fused", one kernel
with five products a tile and dQ added in turns between programs, or "split", a dK/dV and a
dQ kernel with seven products a tile. Neither wins everywhere on paper: the fused one does
5/7 of the products, but keeps dK, dV and a dQ tile live at once, so its tile table
(kernels/tiles.py) holds smaller tiles, and without a causal mask its turns queue up the
first tiles of a (batch, head). So on a GPU each class of launch is timed on both, once per
process, as the autotuner times tiles, and the faster one kept."""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch
from triton.testing import do_bench

from ..runtime import INTERPRETED

SCHEDULES = ("fused", "split")
# The schedule wherever nothing is timed: under the interpreter (whose timings mean
# nothing), off a GPU, while a CUDA graph is captured (nothing may run outside it), and
# under torch.use_deterministic_algorithms, where a choice by timing could differ from one
# process to the next and so change the bits of dQ (each schedule alone is deterministic).
UNTIMED = "fused"
# SEQOPS_ATTENTION_BACKWARD=fused or =split: that schedule for every launch, untimed (a
# GPU run that must tell whether the turns are at fault, or a benchmark of one schedule).
FORCED: Optional[str] = os.environ.get("SEQOPS_ATTENTION_BACKWARD") or None
if FORCED is not None and FORCED not in SCHEDULES:
    raise ValueError(f"SEQOPS_ATTENTION_BACKWARD must be one of {SCHEDULES}, got {FORCED!r}")

_chosen: dict[tuple, str] = {}


def schedule_for(key: tuple, device: torch.device, run: Callable[[str], object]) -> str:
    """The schedule for a launch of class `key` on `device`. run(schedule) runs the launch
    on a schedule: called (the first time a class is seen on a GPU) once to compile and
    autotune each schedule's kernels, then timed by median."""
    if FORCED is not None:
        return FORCED
    if (INTERPRETED or device.type != "cuda" or torch.cuda.is_current_stream_capturing()
            or torch.are_deterministic_algorithms_enabled()):
        return UNTIMED
    key = (device.index, *key)
    if key not in _chosen:
        times = {}
        for schedule in SCHEDULES:
            run(schedule)
            times[schedule] = do_bench(lambda: run(schedule), return_mode="median")
        _chosen[key] = min(SCHEDULES, key=times.__getitem__)
    return _chosen[key]
