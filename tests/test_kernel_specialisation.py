"""The attention kernels take the dropout seed and the causal offset as plain runtime
integers (do_not_specialize): a launch that differs from another only in them reuses its
compiled kernel. Without that, Triton would compile a new variant whenever the seed
happened to be 1 or a multiple of 16, so that training with dropout, whose
seed changes every step, would stall on compiles now and then.

Launches are recorded with Triton's own binder (benchmarks/kernel_launches.py), in a
process without TRITON_INTERPRET, and compared by the key a real launch's cache uses
(signature, constants, alignment attributes, options). Nothing is compiled.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import seqops.kernels.attention as attention
import seqops.kernels.attention.backward as backward
import seqops.kernels.attention.forward as forward
from benchmarks.kernel_launches import hungriest_config, record_launches

def keys(seed, causal_offset, group_size):
    B, H, L, S, E = 1, 2, 40, 48, 64
    q = torch.randn(B, H, L, E, dtype=torch.bfloat16)
    k, v = (torch.randn(B, H // group_size, S, E, dtype=torch.bfloat16) for _ in range(2))
    mask = torch.zeros(1, H, 1, S, dtype=torch.bfloat16)
    def drive():
        out, lse = attention.attention_forward(q, k, v, mask, 0.1, True, causal_offset, 0.125, seed)
        for schedule in backward.SCHEDULES:
            attention.attention_backward(torch.randn_like(out), q, k, v, out, lse, mask, 0.1, True, causal_offset,
                                         0.125, seed, True, schedule=schedule)
    launches = record_launches((forward, backward), drive, hungriest_config)
    return {launch.name: repr(launch.key) for launch in launches}

runs = {}
# Seeds as the op draws them (0 <= seed < 2**31 - 1: always an i32 argument); offsets up
# to the backend's limit on L and S (2**30).
for seed in (1, 16, 12345, 2**31 - 2):
    for causal_offset in (0, 1, 8, 2**30):
        runs[f"seed {seed}, offset {causal_offset}"] = keys(seed, causal_offset, 1)
runs["grouped heads"] = keys(12345, 8, 2)
print(json.dumps(runs))
"""


def test_seed_and_causal_offset_do_not_make_new_kernel_variants():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], env=env, capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    grouped = runs.pop("grouped heads")
    first_name, first = next(iter(runs.items()))
    assert {"attention_forward_kernel", "attention_backward_dkdv_kernel", "attention_backward_dq_kernel",
            "attention_backward_fused_kernel"} <= set(first)
    for name, launch_keys in runs.items():
        for kernel, key in launch_keys.items():
            assert key == first[kernel], f"{kernel}: {name} compiles another variant than {first_name}"
    # The recorder does see specialisation where Triton applies it: a group size of 1
    # (an integer equal to 1 is a compile-time constant) against 2.
    assert grouped["attention_forward_kernel"] != first["attention_forward_kernel"]
