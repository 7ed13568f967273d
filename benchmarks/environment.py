"""What a benchmark ran on: device, library versions, commit; tags every result file."""
from __future__ import annotations

import datetime
import platform
import re
import subprocess
from pathlib import Path

import torch

import seqops


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}"


def device_slug(device: torch.device) -> str:
    """A folder name for the device, e.g. nvidia-h100-80gb-hbm3."""
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def describe(device: torch.device) -> dict:
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda": torch.version.cuda,
        "seqops": seqops.__version__,
        "commit": _git_commit(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
