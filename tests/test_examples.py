"""Each example of examples/ trains its torch model and its seqops twin (one line:
seqops.patch or seqops.patched_functional; seq2seq_attention also swaps its own attention
module for seqops.nn.AdditiveAttention) side by side, here for a few steps at a tiny
size on the Triton backend (interpreted on the CPU): the twin really runs seqops (its
calls counted), and its losses equal torch's within 1e-4 relative, step by step (float32:
the two differ by roundings only, and a few steps of AdamW keep them that close)."""
import importlib
import sys
from pathlib import Path

import pytest
import torch

from calls import counting_seqops_calls
from devices import skip_unless_runnable

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LOSS_RTOL = 1e-4
STEPS = 3

# example: (tiny size, the seqops ops its twin must run)
TINY = {
    "char_lstm": (dict(hidden=16, embed=8, seq=9, batch=3, lr=1e-2), {"lstm"}),
    "gpt": (dict(width=16, heads=2, layers=1, seq=9, batch=2, lr=3e-3), {"attention"}),
    "bert_mlm": (dict(width=16, heads=2, layers=1, longest=11, batch=3, lr=2e-3), {"attention"}),
    "t5_reverse": (dict(width=16, heads=2, layers=1, longest=5, batch=3, lr=2e-3), {"attention"}),
    "seq2seq_attention": (dict(embed=8, hidden=16, attention=8, batch=3, lr=1e-2),
                          {"gru", "gru_cell", "additive_attention"}),
}


def example(name):
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.mark.parametrize("name", list(TINY))
def test_example_twin_runs_seqops_and_tracks_torchs_losses(name, monkeypatch):
    skip_unless_runnable("cpu", "triton")
    module = example(name)
    size, ops = TINY[name]
    monkeypatch.setattr(module, "SMALL", {**module.SMALL, **size})
    with counting_seqops_calls() as calls:
        torch_run, seqops_run = module.main(["--device", "cpu", "--steps", str(STEPS), "--backend", "triton",
                                             "--quiet"])
    assert {op for op, backend in calls if backend == "triton"} >= ops, calls
    assert len(torch_run.losses) == len(seqops_run.losses) == STEPS
    assert torch_run.losses[-1] != torch_run.losses[0], "the model trained"
    torch.testing.assert_close(torch.tensor(seqops_run.losses), torch.tensor(torch_run.losses), rtol=LOSS_RTOL,
                               atol=0)


def test_examples_print_both_curves(capsys):
    """The CPU-sized command as documented (auto backend), shortened to 2 steps."""
    example("gpt").main(["--device", "cpu", "--steps", "2"])
    printed = capsys.readouterr().out
    assert "torch" in printed and "seqops" in printed and "with seqops.patched_functional()" in printed
