"""The softmax forward's traffic model (benchmarks/static_report/softmax_model.py): what
its plan reads from device memory and from L2 at each side of its two width limits."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a package of the repository, not of the install
from benchmarks.static_report.softmax_model import Traffic, forward_traffic  # noqa: E402


def test_one_pass_rows_are_read_once():
    assert forward_traffic(1056, 16384, 4, 4) == Traffic(True, 1056, 1.0, 0.0, 1.0)


def test_bounded_online_rows_reread_from_l2():
    # 16385 fp32 columns in and out, 131080 bytes a row: 199 fill half of 50 MiB.
    assert forward_traffic(1056, 16385, 4, 4) == Traffic(False, 199, 1.0, 1.0, 1.0)
    # Fewer rows than the bound: all of them at once, still within the share.
    assert forward_traffic(20, 65536, 4, 4) == Traffic(False, 20, 1.0, 1.0, 1.0)


def test_rows_too_wide_for_a_quarter_of_the_sms_read_twice():
    # 2**17 fp32 columns: 25 rows fill the share, fewer than 132 / 4 SMs: no bound.
    assert forward_traffic(1056, 2**17, 4, 4) == Traffic(False, 1056, 2.0, 0.0, 1.0)
