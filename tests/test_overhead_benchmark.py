"""The per-call overhead benchmark (benchmarks/overhead.py) runs and reports every public op.

It checks the report's shape, not the TARGET_US target: overhead is measured, not
asserted in CI (a busy CI machine would make such a test flaky). The numbers are printed.
"""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPS = ["seqops.softmax", "seqops.scaled_dot_product_attention", "seqops.lstm_cell", "seqops.nn.LSTM",
       "seqops.gru_cell", "seqops.nn.GRU", "seqops.nn.MultiheadAttention"]


@pytest.fixture
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.__main__
    import benchmarks.overhead

    return benchmarks


def test_overhead_op_reports_three_rows_per_public_op(benchmarks, tmp_path, capsys):
    assert benchmarks.__main__.main(["overhead", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "overhead.json").read_text())
    assert data["op"] == "overhead" and data["baseline"] == "torch"
    rows = {(r["panel"], r["provider"]): r for r in data["results"]}
    overhead = benchmarks.overhead
    for op in OPS:
        for provider in (overhead.BASELINE, overhead.SEQOPS, overhead.OVERHEAD):
            row = rows[(f"{op} (cpu)", provider)]
            assert row["skipped"] is None, row
            assert row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
            if provider != overhead.OVERHEAD:  # a difference may be negative; a time may not
                assert row["median_ms"] > 0
        assert f"{op} (cpu):" in printed and "overhead" in printed
    assert len(data["results"]) == 3 * len(OPS)
    with capsys.disabled():
        print("\nper-call overhead of seqops on the torch backend (us, median over batch pairs; target "
              f"<= {overhead.TARGET_US:g}):")
        for op in OPS:
            row = rows[(f"{op} (cpu)", overhead.OVERHEAD)]
            print(f"  {op:36s} {row['median_ms'] * 1e3:6.1f}  (p20 {row['p20_ms'] * 1e3:.1f}, p80 "
                  f"{row['p80_ms'] * 1e3:.1f})")


def test_pairs_compute_the_same_thing_and_pytest_benchmark_entries_run(benchmarks):
    """Each pytest-benchmark entry (benchmarks/test_bench_ops.py) prepares and runs."""
    import torch

    from benchmarks.test_bench_ops import CASES

    entries = [(case, provider) for op, case, provider in CASES if op == "overhead"]
    assert len(entries) == 2 * len(OPS)
    device = torch.device("cpu")
    outputs = {}
    for case, provider in entries:
        assert provider.unavailable(case, device) is None
        outputs.setdefault(case.params["pair"], []).append(provider.prepare(case, device)())
    assert sorted(outputs) == sorted(OPS)


def test_paired_timing_alternates_and_measures_a_known_difference(benchmarks):
    """A call that does strictly more work than its partner shows a positive overhead."""
    import torch

    x = torch.randn(64, 64)
    cheap = lambda: x.add(1)
    dearer = lambda: x.add(1).mul(2).sub(3).div(4)
    slower_us, faster_us = benchmarks.overhead.paired_per_call_us(dearer, cheap, torch.device("cpu"), 0.1)
    assert len(slower_us) == len(faster_us) >= 40
    differences = sorted(s - f for s, f in zip(slower_us, faster_us))
    assert differences[len(differences) // 2] > 0
