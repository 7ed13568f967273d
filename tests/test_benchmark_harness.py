"""The benchmark harness runs end to end (the quick sweep, on whatever device is here) and
writes what the README promises: a table, JSON tagged with the environment, a result or a
reason for every case and provider."""
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def benchmarks_main(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.__main__ import main

    return main


def test_quick_softmax_sweep_writes_tagged_json(benchmarks_main, tmp_path, capsys):
    assert benchmarks_main(["softmax", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "measured ceilings: copy_gb_per_s" in printed and "torch.softmax" in printed
    data = json.loads((tmp_path / "softmax.json").read_text())
    assert data["op"] == "softmax" and data["baseline"] == "torch.softmax" and data["memory_exponents"] == {}
    for key in ("device", "torch", "triton", "cuda", "seqops", "commit"):
        assert key in data["environment"]
    assert data["ceilings"]["copy_gb_per_s"] > 0
    results = data["results"]
    providers = {r["provider"] for r in results}
    assert {"seqops[triton]", "seqops[cuda]", "torch.softmax", "reference"} <= providers
    for r in results:
        assert (r["median_ms"] is not None) != (r["skipped"] is not None), r
        if r["median_ms"] is not None:
            assert r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] and r["gb_per_s"] > 0
    assert any(r["provider"] == "torch.softmax" and r["median_ms"] for r in results)


def test_unknown_op_is_refused(benchmarks_main, capsys):
    with pytest.raises(SystemExit):
        benchmarks_main(["attention-v9"])
    assert "unknown op(s) attention-v9" in capsys.readouterr().err


def test_quick_attention_sweep(benchmarks_main, tmp_path, capsys):
    assert benchmarks_main(["attention", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "peak extra memory ~ sequence length^k" in printed
    data = json.loads((tmp_path / "attention.json").read_text())
    measured = [r for r in data["results"] if r["median_ms"] is not None]
    assert {r["provider"] for r in measured} >= {"torch.sdpa", "reference"}
    assert all(r["tflop_per_s"] > 0 for r in measured)
    assert {r["direction"] for r in measured} == {"forward", "forward+backward"}


def test_quick_lstm_sweep(benchmarks_main, tmp_path, capsys):
    assert benchmarks_main(["lstm", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "lstm.json").read_text())
    measured = [r for r in data["results"] if r["median_ms"] is not None]
    assert {r["provider"] for r in measured} >= {"torch", "torch LSTMCell loop", "reference"}
    assert {r["panel"].split()[0] for r in measured} == {"step", "sequence"}
    assert all(r["tflop_per_s"] > 0 for r in measured)


def test_quick_gru_rnn_sweep(benchmarks_main, tmp_path):
    assert benchmarks_main(["gru_rnn", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "gru_rnn.json").read_text())
    measured = [r for r in data["results"] if r["median_ms"] is not None]
    assert {r["provider"] for r in measured} >= {"torch", "reference"}
    assert {tuple(r["panel"].split()[:2]) for r in measured} == {
        ("gru", "step"), ("gru", "sequence"), ("rnn_tanh", "step"), ("rnn_tanh", "sequence")}
    assert all(r["tflop_per_s"] > 0 for r in measured)
    for r in data["results"]:
        assert (r["median_ms"] is not None) != (r["skipped"] is not None), r


def test_decode_cases_give_every_provider_the_cache_shapes(monkeypatch):
    """A GPU sweep has decode cases (one query a head, GQA, GB/s of the cache); every
    provider's call takes their K/V heads and length, and all return the same attention
    (a small decode case here, run on the CPU: seqops's Triton ones under the interpreter)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import torch

    from benchmarks import attention
    from benchmarks.suite import Case

    decode = [c for c in attention.cases(torch.device("cuda"), quick=True) if c.panel == attention.DECODE_PANEL]
    assert [c.params["kv_length"] for c in decode] == attention.DECODE_LENGTHS[::2]
    assert all(c.shape[2] == 1 and c.bytes_moved > 0 and c.flops == 0 for c in decode)
    assert not any(c.params.get("kv_length") for c in attention.cases(torch.device("cpu"), quick=False))

    case = Case("attention", "forward", torch.float32, (2, 6, 3, 16), 37, params={"causal": False, "kv_length": 37,
                                                                               "kv_heads": 2})
    outputs = {}
    for provider in attention.providers(torch.device("cpu")):
        reason = provider.unavailable(case, torch.device("cpu"))
        if reason is None or "mean nothing" in reason:  # seqops's Triton ones run under the interpreter
            torch.manual_seed(0)
            outputs[provider.name] = provider.prepare(case, torch.device("cpu"))()
    assert {"torch.sdpa", "reference"} <= set(outputs)
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert {"seqops[triton]", "seqops[triton fused]"} <= set(outputs)
    expected = outputs["reference"]
    assert expected.shape == (2, 6, 3, 16)
    for name, out in outputs.items():
        torch.testing.assert_close(out, expected, msg=name)
