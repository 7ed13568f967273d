"""Which backend runs a call: the user's choice, and the registry of implementations.

Backends:
  triton     Triton kernels (seqops.kernels). CUDA tensors, or CPU tensors under the
             Triton interpreter (TRITON_INTERPRET=1).
  cuda       CUDA C++ kernels (csrc/).
  torch      PyTorch's own operators (fused where PyTorch has them).
  reference  The math written out in eager PyTorch: the test oracle and the naive
             baseline of the benchmarks. Never chosen by `auto`.
  auto       Per op and device, the implementation of highest priority that takes the call.

A backend may hold several variants of one op (the Triton LSTM: "sequence", one launch
per layer, and "step", one per time step); the backend takes the highest-priority one that
supports the call. `with seqops.backend(name, variant=...):` pins the variant for the ops
that have it (tests and benchmarks force each one so); ops without it are unaffected.

The choice comes from `with seqops.backend(name):` (per thread), else from the
environment variable SEQOPS_BACKEND (read when seqops is imported), else `auto`. An explicit choice that cannot run a
call raises `BackendUnavailable` with the reason; `auto` falls back.

An implementation (`Impl`) is a record: the op it implements, its backend and variant,
`supports(*call) -> reason or None`, and its priority for `auto` per device type.
Backends register their records here (seqops/backends/, and each op family's torch and
reference implementations); op families look them up and never import a backend.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional

import torch

BACKENDS = ("auto", "triton", "cuda", "torch", "reference")

class _ThreadChoice(threading.local):
    """The backend chosen with `seqops.backend(...)` on this thread, None outside any.
    A thread-local (not a ContextVar) because torch.compile can trace, and guard on, a
    thread-local attribute read, but not ContextVar.get(); the class attribute makes the
    read cheap on threads that never chose."""

    name: Optional[str] = None
    variant: Optional[str] = None


_choice = _ThreadChoice()


class BackendUnavailable(RuntimeError):
    """An explicitly chosen backend cannot run this call; the message says why."""


def _check_name(name: object, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name  # type: ignore[return-value]


@contextlib.contextmanager
def backend(name: str, variant: Optional[str] = None) -> Iterator[None]:
    """Run the seqops calls in this block (on this thread) with backend `name`; with
    `variant`, an op that this backend implements in that variant runs that one (or
    raises BackendUnavailable saying why it cannot), other ops run as without it.

    >>> with seqops.backend("triton"):
    ...     y = seqops.softmax(x, dim=-1)
    >>> with seqops.backend("triton", variant="step"):
    ...     out, (h_n, c_n) = lstm(x)
    """
    _check_name(name, "seqops.backend")
    if variant is not None and name == "auto":
        raise ValueError("seqops.backend: a variant needs an explicit backend, not 'auto'")
    previous = _choice.name, _choice.variant
    _choice.name, _choice.variant = name, variant
    try:
        yield
    finally:
        _choice.name, _choice.variant = previous


# Read once: looking up an unset variable costs microseconds, and every call asks.
_environment_choice = os.environ.get("SEQOPS_BACKEND", "auto")


def current() -> str:
    """The backend in force: the innermost `seqops.backend(...)`, else SEQOPS_BACKEND (as
    it was when seqops was imported), else auto."""
    name = _choice.name
    if name is not None:
        return name
    if _environment_choice == "auto":
        return "auto"
    return _check_name(_environment_choice, "environment variable SEQOPS_BACKEND")


@dataclass(frozen=True)
class Impl:
    """One implementation of one op.

    op: what it implements ("softmax", "attention", "lstm_cell", "lstm", ...).
    backend, variant: who provides it and which form ("fused": kernels behind the op's
        torch.library op, which supplies autograd; "composite": plain differentiable torch
        code, run as it is; "step", "sequence", "decode": kernel forms of one op).
    supports(*call) -> None, or why this implementation cannot take the call (dtype,
        size); called with the op's contract arguments, after the op's own checks.
    priority: device type -> rank for `auto` (higher first); a device type missing here is
        one `auto` never picks this implementation for (an explicit choice still may).
    functions: what the op calls, by name: "run" for a composite; the kernel entry points
        ("forward", "backward", ...) the op's contract names for a fused one.
    """

    op: str
    backend: str
    variant: str
    functions: Mapping[str, Callable]
    supports: Optional[Callable[..., Optional[str]]] = None
    priority: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        # Plain attributes, set once: impl.key, impl.composite and impl.forward (say) are
        # read on every call.
        object.__setattr__(self, "key", f"{self.op}/{self.backend}/{self.variant}")
        object.__setattr__(self, "composite", "run" in self.functions)
        for name, function in self.functions.items():
            object.__setattr__(self, name, function)


# backend -> platform check: why it cannot run anything on a device, or None.
_platforms: dict[str, Callable[[torch.device], Optional[str]]] = {}
_by_key: dict[str, Impl] = {}
_by_op_backend: dict[tuple[str, str], list[Impl]] = {}
_auto_order: dict[tuple[str, str], list[Impl]] = {}


def register_backend(name: str, platform_reason: Callable[[torch.device], Optional[str]]) -> None:
    """Declare how backend `name` tells whether it can run on a device at all."""
    _check_name(name, "seqops.dispatch.register_backend")
    _platforms[name] = platform_reason


def register(impl: Impl) -> Impl:
    """Add an implementation; a second one with the same key replaces the first."""
    if impl.backend not in BACKENDS or impl.backend == "auto":
        raise ValueError(f"cannot register {impl.op} for backend {impl.backend!r}")
    previous = _by_key.get(impl.key)
    _by_key[impl.key] = impl
    impls = [i for i in _by_op_backend.get((impl.op, impl.backend), []) if i is not previous] + [impl]
    _by_op_backend[(impl.op, impl.backend)] = sorted(impls, key=lambda i: -max(i.priority.values(), default=0))
    # The orders `auto` tries, rebuilt here so that choosing never writes (torch.compile
    # traces the choice).
    every = implementations(impl.op)
    for device_type in {d for i in every for d in i.priority}:
        ranked = [i for i in every if device_type in i.priority]
        _auto_order[(impl.op, device_type)] = sorted(ranked, key=lambda i: -i.priority[device_type])
    return impl


def implementation(key: str) -> Impl:
    """The implementation registered under `key` (Impl.key)."""
    try:
        return _by_key[key]
    except KeyError:
        raise BackendUnavailable(f"no seqops implementation is registered as {key!r}") from None


def implementations(op: str) -> list[Impl]:
    """Every implementation of `op`, in registration order per backend."""
    return [impl for (name, _), impls in _by_op_backend.items() if name == op for impl in impls]


def platform_reason(name: str, device: torch.device) -> Optional[str]:
    """Why backend `name` cannot run anything on `device`, or None if it can."""
    check = _platforms.get(name)
    return check(device) if check is not None else None


def reason(impl: Impl, device: torch.device, *args, **kwargs) -> Optional[str]:
    """Why `impl` cannot run this call on `device`, or None if it can."""
    why = platform_reason(impl.backend, device)
    if why is None and impl.supports is not None:
        why = impl.supports(*args, **kwargs)
    return why


def backend_reason(op: str, name: str, device: torch.device, *args, **kwargs) -> Optional[str]:
    """Why backend `name` cannot run this call of `op` on `device`, or None if it can."""
    candidates = _by_op_backend.get((op, name), ())
    if not candidates:
        return platform_reason(name, device) or f"backend {name!r} has no implementation of {op}"
    reasons = [reason(impl, device, *args, **kwargs) for impl in candidates]
    return None if None in reasons else "; ".join(dict.fromkeys(reasons))  # each reason once


def select(op: str, device: torch.device, *args, **kwargs) -> Impl:
    """The implementation that runs this call of `op`, chosen as the module docstring says."""
    name = current()
    if name == "auto":
        candidates = _auto_order.get((op, device.type), ())
    else:
        candidates = _by_op_backend.get((op, name), ())
        if not candidates:
            why = platform_reason(name, device) or f"backend {name!r} has no implementation of {op}"
            raise BackendUnavailable(f"seqops.{op}: backend {name!r} cannot run this call: {why}")
        variant = _choice.variant
        if variant is not None and any(impl.variant == variant for impl in candidates):
            candidates = [impl for impl in candidates if impl.variant == variant]
    for impl in candidates:  # the common case, first candidate taken, in few steps
        platform = _platforms.get(impl.backend)
        if (platform is None or platform(device) is None) and (impl.supports is None or
                                                               impl.supports(*args, **kwargs) is None):
            return impl
    reasons = []
    for impl in candidates:
        why = reason(impl, device, *args, **kwargs)
        reasons.append(f"{impl.backend}: {why}" if name == "auto" else why)
    reasons = list(dict.fromkeys(reasons))  # variants of one backend may refuse for one reason
    if name != "auto":
        raise BackendUnavailable(f"seqops.{op}: backend {name!r} cannot run this call: {'; '.join(reasons)}")
    raise BackendUnavailable(f"seqops.{op}: no backend can run this call ({'; '.join(reasons) or 'none registered'})")
