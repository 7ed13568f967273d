"""Devices and backends the tests run over: the CPU always, CUDA where there is one (the
`cuda` marker skips it elsewhere), and every backend that can run on the device."""
import pytest
import torch

from seqops import dispatch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# Every backend but auto; one that cannot run on a device skips there, saying why.
IMPLEMENTED = ("triton", "cuda", "torch", "reference")


def device_backend_params():
    """pytest params (device, backend), auto included, with ids like `cpu-triton`."""
    params = []
    for device in DEVICES:
        name = device if isinstance(device, str) else device.values[0]
        marks = () if isinstance(device, str) else device.marks
        for backend in IMPLEMENTED + ("auto",):
            params.append(pytest.param(name, backend, marks=marks, id=f"{name}-{backend}"))
    return params


def skip_unless_runnable(device: str, backend: str) -> None:
    if backend == "auto":
        return
    reason = dispatch.platform_reason(backend, torch.device(device))
    if reason is not None:
        pytest.skip(f"backend {backend} cannot run on {device}: {reason}")
