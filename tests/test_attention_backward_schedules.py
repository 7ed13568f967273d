"""The attention backward's two schedules (kernels/attention/backward.py): "fused", one pass
over blocks of keys with five products a tile that adds each block's part of dQ in a fixed
order of turns between programs, and "split", a dK/dV kernel and a dQ kernel with seven.

The op runs "fused" by default, so every gradient test of test_attention checks it against
the float64 reference with the error rule. Here: "split" against the same rule and against
"fused" (dK, dV, dmask computed the same way: bitwise equal under the interpreter); every
output element written by the kernels (no zeroed buffer behind them) in both schedules,
rows that see no key included; the same bits from run to run; and a turn that never comes
(a broken order) gives NaN, not a wrong number. Shapes span several blocks of queries and
of keys of the interpreter's tile (32 x 16), so that dQ takes several turns."""
import json
import math
import types

import pytest
import torch

from devices import DEVICES, device_backend_params, skip_unless_runnable
from test_attention import check_attention, randn


@pytest.fixture
def backward():
    from seqops.kernels.attention import backward

    return backward


# (Lq, S, E, Ev, Hq, Hkv, mask, causal, causal offset, dropout)
CASES = {
    "plain": (37, 53, 40, 24, 2, 2, None, False, 0, 0.0),
    "gqa-causal": (45, 45, 32, 32, 4, 2, None, True, 0, 0.0),
    # L > S aligned bottom-right: queries 0..49 see no key, so the first block of queries
    # gets no turn and its dQ is written as zeros.
    "more-queries-than-keys-causal": (70, 20, 16, 16, 2, 1, None, True, -50, 0.0),
    "bottom-right-causal-bool-mask": (19, 50, 48, 32, 2, 1, "bool", True, 31, 0.0),
    "float-mask-dropout": (50, 33, 16, 40, 2, 2, "float", False, 0, 0.2),
}


def case_args(case: str, device: str, dtype: torch.dtype):
    """attention_backward's positional arguments for a CASES entry, after a forward."""
    skip_unless_runnable(device, "triton")
    from seqops.kernels.attention import forward

    Lq, S, E, Ev, Hq, Hkv, mask_kind, causal, offset, dropout = CASES[case]
    q = torch.randn(2, Hq, Lq, E, device=device, dtype=dtype)
    k = torch.randn(2, Hkv, S, E, device=device, dtype=dtype)
    v = torch.randn(2, Hkv, S, Ev, device=device, dtype=dtype)
    mask = {None: None,
            "bool": torch.rand(2, 1, Lq, S, device=device) > 0.3,
            "float": torch.randn(1, Hq, Lq, S, device=device, dtype=dtype)}[mask_kind]
    rest = (dropout, causal, offset, E ** -0.5, 1234)
    out, lse = forward.attention_forward(q, k, v, mask, *rest)
    return (torch.randn_like(out), q, k, v, out, lse, mask, *rest, mask_kind == "float")


def torch_with(**overrides):
    """A stand-in for the launcher module's `torch` with some functions replaced."""
    names = {name: getattr(torch, name) for name in dir(torch) if not name.startswith("__")}
    return types.SimpleNamespace(**{**names, **overrides})


def assert_same(name: str, a: torch.Tensor, b: torch.Tensor, bitwise: bool):
    assert a.isfinite().all(), f"{name}: inf or NaN"
    if bitwise and a.device.type == "cpu":
        assert torch.equal(a, b), f"{name}: {(a.float() - b.float()).abs().max().item()} apart"
    else:
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_split_and_fused_give_the_same_gradients(backward, device, dtype, case):
    """dK, dV and dmask go through the same arithmetic in both; dQ is summed over key
    blocks in another order (the fused one: last block first), so within a rounding."""
    args = case_args(case, device, dtype)
    fused = backward.attention_backward(*args, schedule="fused")
    split = backward.attention_backward(*args, schedule="split")
    for name, a, b in zip(("dq", "dk", "dv", "dmask"), fused, split):
        if b is None:
            assert a is None
        else:
            assert_same(name, a, b, bitwise=name != "dq")


@pytest.mark.parametrize("case", ["plain", "more-queries-than-keys-causal", "float-mask-dropout"])
@pytest.mark.parametrize("schedule", ["fused", "split"])
def test_every_output_element_is_written(backward, monkeypatch, schedule, case):
    """The launcher allocates its outputs and the fused dQ accumulator without zeroing
    them: filled with NaN instead, the gradients come out the same."""
    args = case_args(case, "cpu", torch.float32)
    expected = backward.attention_backward(*args, schedule=schedule)

    def nan_empty(*shape, **kwargs):
        t = torch.empty(*shape, **kwargs)
        return t.fill_(math.nan) if t.is_floating_point() else t

    monkeypatch.setattr(backward, "torch", torch_with(empty=nan_empty))
    got = backward.attention_backward(*args, schedule=schedule)
    for name, a, b in zip(("dq", "dk", "dv", "dmask"), got, expected):
        if b is not None:
            assert torch.equal(a, b), f"{name}: an element the kernels left unwritten"


def test_a_turn_that_never_comes_gives_nan(backward, monkeypatch):
    """Turn counters that no predecessor can bring to a block's turn (set far below it):
    every key block after the first in a block's order polls in vain, gives up, and dQ is
    NaN, while dK and dV (no turns) are right. A hang or a silently wrong dQ would fail."""
    args = case_args("plain", "cpu", torch.float32)
    expected = backward.attention_backward(*args, schedule="fused")

    def unreachable_turns(*shape, dtype=None, **kwargs):
        t = torch.zeros(*shape, dtype=dtype, **kwargs)
        if dtype == torch.int32:
            t[1:] = -1000  # [0] stays the ticket counter
        return t

    monkeypatch.setattr(backward, "torch", torch_with(zeros=unreachable_turns))
    dq, dk, dv, _ = backward.attention_backward(*args, schedule="fused")
    assert dq.isnan().all()  # 53 keys: 4 key blocks of 16, so every block of queries waits
    assert torch.equal(dk, expected[1]) and torch.equal(dv, expected[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_fused_is_deterministic(backward, device, dtype):
    """The same inputs give the same bits (on a GPU, programs reach their turns in any
    timing, but each block's dQ is summed in one order)."""
    args = case_args("gqa-causal", device, dtype)
    first = backward.attention_backward(*args, schedule="fused")
    for _ in range(2):
        again = backward.attention_backward(*args, schedule="fused")
        for a, b in zip(first[:3], again[:3]):
            assert torch.equal(a, b)


def test_schedules_launch_their_kernels(backward, monkeypatch):
    """Off a GPU (here: interpreted) nothing is timed: None runs backward_schedule.UNTIMED."""
    from test_attention_offsets import launch_flags

    args = case_args("plain", "cpu", torch.float16)

    def launched(schedule):
        return set(launch_flags(monkeypatch, backward, lambda: backward.attention_backward(*args, schedule=schedule)))

    assert launched(None) == launched("fused") == {"attention_backward_delta_kernel",
                                                   "attention_backward_fused_kernel"}
    assert launched("split") == {"attention_backward_delta_kernel", "attention_backward_dkdv_kernel",
                                 "attention_backward_dq_kernel"}
    with pytest.raises(ValueError, match="schedule"):
        backward.attention_backward(*args, schedule="atomic")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device, backend", [p for p in device_backend_params() if p.values[1] == "triton"])
def test_split_schedule_against_the_reference(backward, monkeypatch, device, backend, dtype, causal):
    """The split schedule through the op, every gradient against the float64 reference
    (test_attention runs the default, fused), with GQA and lengths off the tiles."""
    from seqops.kernels.attention import backward_schedule

    monkeypatch.setattr(backward_schedule, "FORCED", "split")
    q = randn(2, 4, 45, 40, device=device, dtype=dtype)
    k = randn(2, 2, 53, 40, device=device, dtype=dtype)
    v = randn(2, 2, 53, 40, device=device, dtype=dtype)
    check_attention(backend, q, k, v, is_causal=causal, enable_gqa=True)


PRODUCTS_PROBE = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import seqops.kernels.attention as attention
import seqops.kernels.attention.backward as backward
import seqops.kernels.attention.forward as forward
from benchmarks.kernel_launches import _kernel_of, record_launches

def smallest(configs):
    return [min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_warps, c.num_stages))]

def drive():
    q, k, v = (torch.randn(1, 2, 40, 64, dtype=torch.float16) for _ in range(3))
    out, lse = attention.attention_forward(q, k, v, None, 0.0, True, 0, 0.125, 1)
    for schedule in backward.SCHEDULES:
        attention.attention_backward(torch.randn_like(out), q, k, v, out, lse, None, 0.0, True, 0, 0.125, 1, False,
                                     schedule=schedule)

dots = {}
for launch in record_launches((forward, backward), drive, smallest, pruned=False):
    if launch.name.startswith("attention_backward") and launch.autotuned:
        task = launch.build(90)
        compiled = triton.compile(ASTSource(_kernel_of(task), task.signature, task.constexprs, task.attrs),
                                  target=GPUTarget("cuda", 90, 32), options=task.options)
        dots[launch.name] = compiled.asm["ttir"].count("tt.dot ")
print(json.dumps(dots))
"""


def test_fused_backward_takes_five_products_a_tile_where_split_takes_seven():
    """Counted in the compiled kernels' Triton IR (sm_90): each kernel walks its tiles in
    two loops (the causal band, then the unmasked rest), so a kernel of n products a tile
    holds 2n dots. Fused: S, dP, dV, dK, dQ. Split: S, dP, dV, dK in one kernel, and S, dP
    and dQ again in the other."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton.backends.nvidia")
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", PRODUCTS_PROBE, str(root)], env=env, capture_output=True,
                            text=True, timeout=900, cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    dots = json.loads(result.stdout.strip().splitlines()[-1])
    assert dots == {"attention_backward_fused_kernel": 2 * 5, "attention_backward_dkdv_kernel": 2 * 4,
                    "attention_backward_dq_kernel": 2 * 3}


class FakeTimer:
    """Stands in for triton's do_bench: each schedule's time from a table; counts runs."""

    def __init__(self, times):
        self.times, self.runs = times, []

    def run(self, schedule):
        self.runs.append(schedule)

    def bench(self, call, return_mode):
        assert return_mode == "median"
        call()
        return self.times[self.runs[-1]]


@pytest.fixture
def timed_schedules(monkeypatch):
    """backward_schedule as on a GPU, with the timer faked."""
    from seqops.kernels.attention import backward_schedule

    monkeypatch.setattr(backward_schedule, "INTERPRETED", False)
    monkeypatch.setattr(backward_schedule, "FORCED", None)
    monkeypatch.setattr(backward_schedule, "_chosen", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # a CPU build's raises
    return backward_schedule


@pytest.mark.parametrize("faster", ["fused", "split"])
def test_a_gpu_keeps_the_schedule_it_timed_faster(monkeypatch, timed_schedules, faster):
    timer = FakeTimer({faster: 1.0, {"fused": "split", "split": "fused"}[faster]: 2.0})
    monkeypatch.setattr(timed_schedules, "do_bench", timer.bench)
    gpu = torch.device("cuda", 0)
    assert timed_schedules.schedule_for(("class a",), gpu, timer.run) == faster
    assert sorted(set(timer.runs)) == ["fused", "split"]  # each warmed up (compiled, autotuned) and timed
    timer.runs.clear()
    assert timed_schedules.schedule_for(("class a",), gpu, timer.run) == faster
    assert timer.runs == []  # timed once per class
    assert timed_schedules.schedule_for(("class a",), torch.device("cuda", 1), timer.run) == faster
    assert timer.runs  # another GPU is timed apart


def test_nothing_is_timed_where_timing_must_not_decide(monkeypatch, timed_schedules):
    def must_not_run(schedule):
        raise AssertionError("timed")

    gpu = torch.device("cuda", 0)
    assert timed_schedules.schedule_for(("k",), torch.device("cpu"), must_not_run) == timed_schedules.UNTIMED
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert timed_schedules.schedule_for(("k",), gpu, must_not_run) == timed_schedules.UNTIMED
    monkeypatch.setattr(timed_schedules, "FORCED", "split")
    assert timed_schedules.schedule_for(("k",), gpu, must_not_run) == "split"
    monkeypatch.setattr(timed_schedules, "FORCED", None)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert timed_schedules.schedule_for(("k",), gpu, must_not_run) == timed_schedules.UNTIMED
