"""Devices and backends the tests run over: the CPU always, CUDA where there is one (the
`cuda` marker skips it elsewhere), and every backend that can run on the device."""
import pytest
import torch

from seqops import backends

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# Backends that exist as real implementations (cuda joins once csrc has kernels).
IMPLEMENTED = ("triton", "cuda", "torch", "reference")


def runnable_backends(device: str) -> list[str]:
    """Backends (and `auto`) that can run on `device` in this process."""
    return ["auto"] + [name for name in IMPLEMENTED if backends.platform_reason(name, torch.device(device)) is None]


def device_backend_params(include_auto: bool = True):
    """pytest params (device, backend) with readable ids, e.g. `cpu-triton`."""
    params = []
    for device in DEVICES:
        name = device if isinstance(device, str) else device.values[0]
        marks = () if isinstance(device, str) else device.marks
        for backend in IMPLEMENTED + (("auto",) if include_auto else ()):
            params.append(pytest.param(name, backend, marks=marks, id=f"{name}-{backend}"))
    return params


def skip_unless_runnable(device: str, backend: str) -> None:
    if backend == "auto":
        return
    reason = backends.platform_reason(backend, torch.device(device))
    if reason is not None:
        pytest.skip(f"backend {backend} cannot run on {device}: {reason}")
