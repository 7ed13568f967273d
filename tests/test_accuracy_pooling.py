"""The pooling rule of tests/accuracy.py: how many trials a result needs before the ratio
of its error to torch's means something, counted by entries and by effective entries."""
import torch

from accuracy import MIN_EFFECTIVE_ENTRIES_FOR_RATIO, MIN_ELEMENTS_FOR_RATIO, effective_entries, trials_needed


def test_effective_entries_count_equal_magnitudes_and_see_through_one_dominant_entry():
    assert effective_entries(torch.full((50,), -3.0)) == 50
    assert abs(effective_entries(torch.tensor([100.0] + [1.0] * 99)) - 1.02) < 0.01
    assert effective_entries(torch.zeros(7)) == 0 and effective_entries(torch.empty(0)) == 0
    assert effective_entries(torch.tensor([2.0, float("inf"), 2.0, float("nan")])) == 2  # finite entries only


def test_trials_needed_pools_to_both_minimums():
    assert trials_needed({"wide": torch.ones(MIN_ELEMENTS_FOR_RATIO)}) == 1
    assert trials_needed({"wide": torch.ones(64), "few": torch.ones(5)}) == -(-MIN_ELEMENTS_FOR_RATIO // 5)
    # 580 entries, the norm resting on about 4 of them (the seed 955272138 gradient's shape)
    dominated = torch.cat([torch.tensor([8.6]), torch.full((579,), 0.05)])
    assert 1.0 < effective_entries(dominated) < 4.0
    assert trials_needed({"d weight": dominated}) >= MIN_EFFECTIVE_ENTRIES_FOR_RATIO // 4
    assert trials_needed({"zeros": torch.zeros(64)}) == 1  # exact zeros are judged by entries alone
