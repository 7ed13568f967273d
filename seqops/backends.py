"""Which backends exist, which one the user chose, and which one runs a given call.

Backends:
  triton     Triton kernels (seqops.kernels). CUDA tensors, or CPU tensors under the
             Triton interpreter (TRITON_INTERPRET=1).
  cuda       CUDA C++ kernels (csrc/). Registered; no kernels are written yet.
  torch      PyTorch's own operators (fused where PyTorch has them).
  reference  The math written out in eager PyTorch: the test oracle and the naive
             baseline of the benchmarks. Never chosen by `auto`.
  auto       Per op and device, the first backend in `AUTO_PREFERENCE` that can take
             the inputs.

The choice comes from `with seqops.backend(name):` (per thread), else from the
environment variable SEQOPS_BACKEND, else `auto`. An explicit choice that cannot run a
call raises `BackendUnavailable` with the reason; `auto` falls back.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Iterator, Optional

import torch

BACKENDS = ("auto", "triton", "cuda", "torch", "reference")

# The order `auto` tries backends in, per op and device type. Ops missing here use the
# device type's default. On CPU PyTorch's own fused ops are the fastest there is.
# CUDA entries put the fused kernels first; they are to be confirmed against the GPU
# benchmark results (benchmarks/results/) as those are measured.
AUTO_PREFERENCE: dict[tuple[Optional[str], str], tuple[str, ...]] = {
    (None, "cpu"): ("torch",),
    (None, "cuda"): ("cuda", "triton", "torch"),
}

# A thread-local (not a ContextVar) because torch.compile can trace, and guard on, a
# thread-local attribute read, but not ContextVar.get().
_choice = threading.local()


class BackendUnavailable(RuntimeError):
    """An explicitly chosen backend cannot run this call; the message says why."""


def _check_name(name: object, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name  # type: ignore[return-value]


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Run the seqops calls in this block (on this thread) with backend `name`.

    >>> with seqops.backend("triton"):
    ...     y = seqops.softmax(x, dim=-1)
    """
    _check_name(name, "seqops.backend")
    previous = getattr(_choice, "name", None)
    _choice.name = name
    try:
        yield
    finally:
        _choice.name = previous


def current() -> str:
    """The backend in force: the innermost `seqops.backend(...)`, else SEQOPS_BACKEND, else auto."""
    name = getattr(_choice, "name", None)
    if name is not None:
        return name
    return _check_name(os.environ.get("SEQOPS_BACKEND", "auto"), "environment variable SEQOPS_BACKEND")


def platform_reason(name: str, device: torch.device) -> Optional[str]:
    """Why backend `name` cannot run anything on `device`, or None if it can."""
    if name == "triton":
        try:
            from seqops.kernels import runtime
        except ImportError as error:
            return f"triton is not importable ({error})"
        if device.type == "cpu" and not runtime.INTERPRETED:
            return (
                "Triton kernels take CPU tensors only under the Triton interpreter: set "
                "TRITON_INTERPRET=1 before seqops' kernels are first imported (or use CUDA tensors)"
            )
        if runtime.INTERPRETER_PROBLEM is not None:
            return runtime.INTERPRETER_PROBLEM
        if device.type not in ("cpu", "cuda"):
            return f"Triton kernels need CUDA (or interpreted CPU) tensors, got device {device}"
        return None
    if name == "cuda":
        return "the CUDA C++ backend has no kernels yet (csrc/ is empty)"
    return None


class OpBackends:
    """The implementations of one op, one per backend that has it, and the choice among them.

    Each implementation is `run(*args, **kwargs)` plus an optional
    `supports(*args, **kwargs) -> reason or None` for input-specific limits (dtype, size);
    `platform_reason` covers whether the backend can run on the device at all.
    """

    def __init__(self, op: str):
        self.op = op
        self._runs: dict[str, Callable] = {}
        self._supports: dict[str, Callable[..., Optional[str]]] = {}

    def register(self, backend_name: str, run: Callable, supports: Optional[Callable[..., Optional[str]]] = None):
        if backend_name not in BACKENDS or backend_name == "auto":
            raise ValueError(f"cannot register {self.op} for backend {backend_name!r}")
        self._runs[backend_name] = run
        if supports is not None:
            self._supports[backend_name] = supports

    def reason(self, backend_name: str, device: torch.device, *args, **kwargs) -> Optional[str]:
        """Why `backend_name` cannot run this call, or None if it can."""
        reason = platform_reason(backend_name, device)
        if reason is None and backend_name not in self._runs:
            reason = f"backend {backend_name!r} has no implementation of {self.op}"
        if reason is None and backend_name in self._supports:
            reason = self._supports[backend_name](*args, **kwargs)
        return reason

    def select(self, device: torch.device, *args, **kwargs) -> Callable:
        """The implementation that runs this call, chosen as the module docstring says."""
        name = current()
        if name != "auto":
            reason = self.reason(name, device, *args, **kwargs)
            if reason is not None:
                raise BackendUnavailable(f"seqops.{self.op}: backend {name!r} cannot run this call: {reason}")
            return self._runs[name]
        preference = AUTO_PREFERENCE.get((self.op, device.type)) or AUTO_PREFERENCE.get((None, device.type), ("torch",))
        reasons = []
        for candidate in preference:
            reason = self.reason(candidate, device, *args, **kwargs)
            if reason is None:
                return self._runs[candidate]
            reasons.append(f"{candidate}: {reason}")
        raise BackendUnavailable(f"seqops.{self.op}: no backend can run this call ({'; '.join(reasons)})")
