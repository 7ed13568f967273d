"""The fused attention backward's dQ-turn model (benchmarks/static_report/turns_model.py)
against schedules worked by hand."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a package of the repository, not of the install
from benchmarks.static_report.turns_model import predict_turns  # noqa: E402


def test_without_a_mask_each_key_block_starts_one_tile_after_the_next():
    # One head, 4 key blocks x 4 query blocks on 4 slots: free, every program takes 4 tiles
    # at once; with turns, key block 3 ends at 4, block 2 at 5, block 1 at 6, block 0 at 7.
    prediction = predict_turns(1, 64, 16, 16, 4, causal=False)
    assert (prediction.free_time, prediction.turns_time) == (4, 7)
    assert prediction.efficiency == pytest.approx(4 / 7)


def test_under_a_causal_mask_programs_move_in_step_where_tiles_are_not_taller_than_wide():
    # Key block j walks query blocks j..3; its predecessor j + 1 is always a tile ahead.
    prediction = predict_turns(1, 64, 16, 16, 4, causal=True)
    assert (prediction.free_time, prediction.turns_time) == (4, 4)
    # Wider tiles too (4 query blocks of 16 rows, 2 key blocks of 32).
    assert predict_turns(3, 64, 16, 32, 5, causal=True).efficiency == 1


def test_under_a_causal_mask_taller_tiles_queue_on_the_diagonal():
    # 2 query blocks of 32 rows, 4 key blocks of 16: key blocks 3 and 2 start at query
    # block 1, 1 and 0 at block 0. Block 1's order is 3, 2, 1, 0: 3 ends at 1, 2 at 2,
    # 1 (after its block 0 at 1) at 3, 0 (block 0 after 1's, at 2) at 4. Free: 2.
    prediction = predict_turns(1, 64, 32, 16, 4, causal=True)
    assert (prediction.free_time, prediction.turns_time) == (2, 4)


def test_waves_amortise_the_start():
    # One slot: the programs run one after another, so a predecessor is always done.
    assert predict_turns(2, 64, 16, 16, 1, causal=False).efficiency == 1
    short, long = (predict_turns(8, length, 32, 32, 16, causal=False).efficiency for length in (256, 1024))
    assert short < long < 1
