"""tests/conftest.py's --list-randomised: it lists exactly the tests that draw from torch's
default generator (those whose outcome a seed can change), under pytest-xdist's
loadgroup too, in a form `pytest @LIST` runs again (a seed sweep runs those only)."""
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLE = '''
import pytest
import torch


def test_draws():
    assert torch.randn(3).shape == (3,)


def test_draws_nothing():
    assert torch.ones(3).sum() == 3


def test_own_generator_only():
    generator = torch.Generator().manual_seed(5)
    torch.randn(3, generator=generator)


@pytest.mark.parametrize("n", [1, 2])
def test_draws_sometimes(n):
    if n == 2:
        torch.rand(1)


@pytest.mark.xdist_group("one_worker")
@pytest.mark.parametrize("shape", [(2, 3)], ids=["a@b"])
def test_grouped(shape):
    torch.randint(0, 5, shape)


@pytest.mark.xdist_group("one_worker")
def test_grouped_plain():
    torch.randperm(4)
'''

DRAWING = {"test_sample.py::test_draws", "test_sample.py::test_draws_sometimes[2]", "test_sample.py::test_grouped[a@b]",
           "test_sample.py::test_grouped_plain"}


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def test_lists_the_tests_that_draw_and_pytest_reruns_them_from_the_list(tmp_path):
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    listing = tmp_path / "randomised.txt"
    run = run_pytest(tmp_path, "-n", "2", "--dist", "loadgroup", "--list-randomised", str(listing), "test_sample.py")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = listing.read_text().splitlines()
    assert sorted(lines) == sorted(DRAWING)

    rerun = run_pytest(tmp_path, "--collect-only", f"@{listing}")
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    collected = {line for line in rerun.stdout.splitlines() if "::" in line}
    assert collected == DRAWING
