"""The softmax traffic model (benchmarks/static_report/softmax_model.py): what the
forward's and the backward's plans read from device memory and from L2 at each side of
their two width limits."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a package of the repository, not of the install
from benchmarks.static_report.softmax_model import Traffic, backward_traffic, forward_traffic  # noqa: E402


def test_one_pass_rows_are_read_once():
    assert forward_traffic(1056, 16384, 4, 4) == Traffic(True, 1056, 1, 1.0, 0.0, 1.0)


def test_bounded_online_rows_reread_from_l2():
    # 16385 fp32 columns in and out, 131080 bytes a row: 199 fill half of 50 MiB.
    assert forward_traffic(1056, 16385, 4, 4) == Traffic(False, 199, 1, 1.0, 1.0, 1.0)
    # Fewer rows than the bound: all of them at once, still within the share.
    assert forward_traffic(20, 65536, 4, 4) == Traffic(False, 20, 1, 1.0, 1.0, 1.0)


def test_rows_too_wide_for_a_quarter_of_the_sms_split_and_reread_from_l2():
    # 2**17 fp32 columns: 25 rows fill the share, fewer than 132 / 4 SMs: split into 6
    # parts of 24576 columns, 22 rows (132 parts) at once, 25.9 MB in flight.
    assert forward_traffic(1056, 2**17, 4, 4) == Traffic(False, 132, 6, 1.0, 1.0, 1.0)
    assert forward_traffic(1056, 2**20, 2, 2) == Traffic(False, 132, 22, 1.0, 1.0, 1.0)


def test_rows_wider_than_the_sms_parts_read_twice():
    # 2**23 fp32 columns would take 342 parts of 24576, more than 132 SMs: a program a row.
    assert forward_traffic(1056, 2**23, 4, 4) == Traffic(False, 1056, 1, 2.0, 0.0, 1.0)


def test_backward_rows_split_where_their_three_operands_outgrow_the_bound():
    # dy and y read, dx written, fp32: 12 bytes a column. 65536 columns: 33 rows fill the
    # share, a quarter of the SMs: bounded. 2**17: 16 rows, too few: 8 parts of 16384
    # columns, 16 rows (128 parts) at once, 25.2 MB in flight.
    assert backward_traffic(1056, 65536, 4, 4) == Traffic(False, 33, 1, 1.0, 1.0, 1.0)
    assert backward_traffic(1056, 2**17, 4, 4) == Traffic(False, 128, 8, 1.0, 1.0, 1.0)
    # bf16, 6 bytes a column: 2**17 columns are still bounded (33 rows), as the forward's are.
    assert backward_traffic(1056, 2**17, 2, 2) == Traffic(False, 33, 1, 1.0, 1.0, 1.0)
    assert backward_traffic(1056, 2**23, 4, 4) == Traffic(False, 1056, 1, 2.0, 0.0, 1.0)
