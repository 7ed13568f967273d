"""Shared test set-up: a fresh random seed per test (printed, so a failure can be rerun
with SEQOPS_TEST_SEED), and the `cuda` marker skipping cleanly without a GPU."""
import os
import random

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = int(os.environ.get("SEQOPS_TEST_SEED") or random.SystemRandom().randrange(2**31))
    torch.manual_seed(seed)
    print(f"torch seed {seed} (rerun with SEQOPS_TEST_SEED={seed})")
    yield seed
