"""What every example shares: its command line, the text it learns from, and training a
torch model and its seqops twin side by side from the same seed on the same batches.

The twin is the same model (a deep copy, same initial weights) with one line applied: a
`Route` says which (seqops.patch on the model, or seqops.patched_functional around each
step). Both train with the same optimizer settings, alternating steps; the losses print in two columns, with the
median time of a step and, on a GPU, the most memory a step allocated. Dropout is 0 throughout: seqops and torch draw
different dropout masks, and the point is to see the same curve.

CPU timings say nothing about GPU kernels: on the CPU the examples show that the curves
agree; on a GPU (--device cuda --full) they also show time and memory.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Optional

import torch

import seqops

# The text the examples learn from: the repository's own README (shipped with it, no
# download).
TEXT = Path(__file__).resolve().parents[1] / "README.md"


@dataclass
class Route:
    """How the seqops twin is made: `prepare` turns the torch model into the twin (the one
    line: seqops.patch), `during` wraps each step (seqops.patched_functional)."""

    name: str
    prepare: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model
    during: Callable[[], ContextManager] = contextlib.nullcontext


PATCH = Route("seqops.patch(model)", prepare=seqops.patch)
FUNCTIONAL = Route("with seqops.patched_functional():", during=seqops.patched_functional)


def arguments(description: str, argv: Optional[list[str]] = None,
              extra: Callable[[argparse.ArgumentParser], object] = lambda parser: None) -> argparse.Namespace:
    """The command line every example takes, and any options `extra` adds to the parser."""
    parser = argparse.ArgumentParser(description=description)
    extra(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true", help="the full-size model and run (meant for a GPU)")
    parser.add_argument("--steps", type=int, help="training steps (default: per size)")
    parser.add_argument("--backend", default="auto", choices=seqops.BACKENDS, help="seqops backend for the twin")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="print nothing (tests)")
    args = parser.parse_args(argv)
    args.dtype = getattr(torch, args.dtype)
    return args


def size_and_steps(args: argparse.Namespace, small: dict, full: dict) -> tuple[dict, int]:
    """The example's size (`full` with --full, else `small`) and its number of steps; seeds
    torch, so that the model is built the same on every run."""
    size = full if args.full else small
    torch.manual_seed(args.seed)
    return size, args.steps or size["steps"]


def text_tokens(device) -> tuple[torch.Tensor, list[str]]:
    """The text as character ids, and the characters."""
    text = TEXT.read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text], device=device), chars


@dataclass
class Run:
    losses: list
    seconds_per_step: float
    # The most memory a step allocated beyond what was held before it (activations,
    # gradients, workspaces), on a GPU; None on the CPU.
    step_peak_bytes: Optional[int]


class Trainer:
    """One model, its optimizer and route, trained a step at a time (so that the two
    models of an example alternate steps and are timed under the same conditions)."""

    def __init__(self, model, route: Route, loss_of: Callable, lr: float, backend: str, dtype: torch.dtype,
                 device: str):
        self.model, self.route, self.loss_of, self.backend, self.dtype = model, route, loss_of, backend, dtype
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        self.device_type = torch.device(device).type
        self.losses, self.seconds, self.peak = [], [], None

    def step(self, batch) -> None:
        on_gpu = self.device_type == "cuda"
        if on_gpu:
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with self.route.during(), seqops.backend(self.backend), \
                torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            loss = self.loss_of(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        with seqops.backend(self.backend):
            loss.backward()
        self.optimizer.step()
        if on_gpu:
            torch.cuda.synchronize()
            self.peak = max(self.peak or 0, torch.cuda.max_memory_allocated() - held)
        self.seconds.append(time.perf_counter() - started)
        self.losses.append(loss.item())

    def run(self) -> Run:
        # The first step compiles kernels and fills caches: not timed.
        timed = self.seconds[1:] or self.seconds
        return Run(self.losses, sorted(timed)[len(timed) // 2], self.peak)


def side_by_side(title: str, model: torch.nn.Module, route: Route, batches: list, loss_of: Callable, args,
                 steps: int, lr: float) -> tuple[Run, Run, torch.nn.Module]:
    """Train `model` (torch layers) and its seqops twin (route applied to a deep copy) for
    `steps` on `batches`; print both loss curves. Returns both runs and the trained twin."""
    twin = route.prepare(copy.deepcopy(model))
    trainers = (Trainer(model, Route("torch"), loss_of, lr, "auto", args.dtype, args.device),
                Trainer(twin, route, loss_of, lr, args.backend, args.dtype, args.device))
    for step in range(steps):
        for trainer in trainers:
            trainer.step(batches[step % len(batches)])
    theirs, ours = (trainer.run() for trainer in trainers)
    if not args.quiet:
        print(f"{title}: torch layers vs `{route.name}` (backend {args.backend}), {args.device}, "
              f"{str(args.dtype).removeprefix('torch.')}")
        print(f"{'step':>6} {'torch':>10} {'seqops':>10}")
        for step in sorted({*range(0, steps, max(steps // 10, 1)), steps - 1}):
            print(f"{step:>6} {theirs.losses[step]:>10.4f} {ours.losses[step]:>10.4f}")
        for name, run in (("torch", theirs), ("seqops", ours)):
            memory = f", {run.step_peak_bytes / 2**20:.0f} MiB at most a step" if run.step_peak_bytes else ""
            print(f"{name:>7}: {run.seconds_per_step * 1e3:.1f} ms a step (median){memory}")
        if not args.device.startswith("cuda"):
            print("(CPU times: not a measure of GPU kernels)")
    return theirs, ours, twin
