"""The accuracy log (SEQOPS_ACCURACY_LOG, tests/accuracy.py) and its summary over runs
(benchmarks/accuracy_margins.py): each check logs the share of the allowed error it used,
passing or failing, and the summary ranks checks by their largest share over the runs."""
import pytest
import torch

from accuracy import assert_within_torch_error
from benchmarks.accuracy_margins import read_logs, summary


def test_each_check_logs_its_share_of_the_allowed_error_pass_or_fail(tmp_path, monkeypatch):
    log = tmp_path / "run.log"
    monkeypatch.setenv("SEQOPS_ACCURACY_LOG", str(log))
    ulp = 2.0**-22  # of float32 in [2, 4): the errors below are exact
    ref = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    torch_out = torch.tensor([1.0, 2.0, 2.0 + 8 * ulp])
    assert_within_torch_error("close", torch.tensor([1.0, 2.0, 2.0 + 4 * ulp]), ref, torch_out, error_floor=0.0)
    with pytest.raises(AssertionError, match="far"):
        assert_within_torch_error("far", torch.tensor([1.0, 2.0, 2.0 + 24 * ulp]), ref, torch_out, error_floor=0.0)
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    assert [(name, test.endswith("test_each_check_logs_its_share_of_the_allowed_error_pass_or_fail"))
            for test, name, _ in lines] == [("close", True), ("far", True)]
    assert [float(share) for _, _, share in lines] == [4 / 16, 24 / 16]


def test_summary_ranks_checks_by_their_largest_share_over_the_runs(tmp_path):
    (tmp_path / "seed1.log").write_text("t::a\tout\t0.50\nt::a\tout\t0.70\nt::b\td w\t0.20\nnot a check line\n")
    (tmp_path / "seed2.log").write_text("t::a\tout\t0.60\nt::b\td w\t0.95\n")
    checks = read_logs([tmp_path / "seed1.log", tmp_path / "seed2.log"])
    assert checks[("t::a", "out")].per_run == {"seed1.log": 0.70, "seed2.log": 0.60}
    assert (checks[("t::b", "d w")].worst, checks[("t::b", "d w")].worst_run) == (0.95, "seed2.log")
    text = summary(checks, top=5, above=0.8)
    assert "2 checks over 2 runs" in text and "above 0.8: 1" in text and "(failed): 0" in text
    rows = [line for line in text.splitlines() if line.startswith("| 0.")]
    assert rows[0].startswith("| 0.950 | 2 | seed2.log | t::b | d w |") and rows[1].startswith("| 0.700 |")
