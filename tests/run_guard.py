"""A pytest plugin for unattended runs on a lent GPU (benchmarks/gpu_check), off unless
its variables are set, so that one hung or crashing test costs one test, not the run:

- SEQOPS_TEST_WATCHDOG_S: seconds a test may take before faulthandler writes every
  thread's stack and ends the process (a kernel spinning forever holds the host inside
  a CUDA call, where no Python signal handler runs; faulthandler's thread does).
- SEQOPS_TEST_PROGRESS: a file each test appends `started <nodeid>` to before it runs
  and `finished <outcome> <nodeid>` after (passed, failed, skipped, or error where its
  set-up or tear-down failed), so that whoever restarts pytest knows which test ended the
  process (started, never finished), which need not run again, and how they went (a
  process that ends early writes no junit). The watchdog's stacks go beside it, to
  `<file>.stacks` (pytest's capture holds stderr during a test, and a process that ends
  there never hands it back).
- SEQOPS_TEST_DESELECT: a file of node ids, one a line, left out of the collection.

pytest-timeout would do the first, but the GPU machines do not have it."""
from __future__ import annotations

import faulthandler
import os
from pathlib import Path

import pytest

WATCHDOG_VARIABLE = "SEQOPS_TEST_WATCHDOG_S"
PROGRESS_VARIABLE = "SEQOPS_TEST_PROGRESS"
DESELECT_VARIABLE = "SEQOPS_TEST_DESELECT"


def _watchdog_seconds() -> float:
    return float(os.environ.get(WATCHDOG_VARIABLE) or 0)


def _note(event: str, nodeid: str) -> None:
    path = os.environ.get(PROGRESS_VARIABLE)
    if not path:
        return
    # One write of one line in append mode: xdist's workers may share the file.
    with open(path, "a", encoding="utf-8") as progress:
        progress.write(f"{event} {nodeid}\n")


def read_progress(path: Path) -> tuple[list[str], dict[str, str]]:
    """(node ids started, in order; {node id: outcome} of those finished) from a progress file."""
    started, finished = [], {}
    if not path.exists():
        return started, finished
    for line in path.read_text(encoding="utf-8").splitlines():
        event, _, rest = line.partition(" ")
        if event == "started":
            started.append(rest)
        elif event == "finished":
            outcome, _, nodeid = rest.partition(" ")
            finished[nodeid] = outcome
    return started, finished


_outcomes: dict[str, str] = {}  # node id -> outcome so far, over its set-up, call and tear-down


def pytest_runtest_logreport(report):
    if report.when == "call":
        outcome = report.outcome
    else:  # a set-up skip is the test's skip; a set-up or tear-down failure is an error
        outcome = "skipped" if report.skipped else "error" if report.failed else None
    if outcome is not None and _outcomes.get(report.nodeid) not in ("failed", "error"):
        _outcomes[report.nodeid] = outcome


def pytest_collection_modifyitems(config, items):
    path = os.environ.get(DESELECT_VARIABLE)
    if not path or not Path(path).exists():
        return
    leave_out = set(Path(path).read_text(encoding="utf-8").splitlines())
    kept = [item for item in items if item.nodeid not in leave_out]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in leave_out])
        items[:] = kept


_stacks = None  # where this process's watchdog writes the stacks (opened once)


def _stacks_file():
    global _stacks
    path = os.environ.get(PROGRESS_VARIABLE)
    if _stacks is None and path:
        _stacks = open(f"{path}.stacks", "a", encoding="utf-8")
    return _stacks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    seconds = _watchdog_seconds()
    _note("started", item.nodeid)
    if seconds > 0:
        stacks = _stacks_file()
        if stacks is not None:
            stacks.write(f"watchdog armed for {item.nodeid} ({seconds:g} s)\n")
            stacks.flush()
            faulthandler.dump_traceback_later(seconds, exit=True, file=stacks)
        else:
            faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        if seconds > 0:
            faulthandler.cancel_dump_traceback_later()
    _note("finished", f"{_outcomes.pop(item.nodeid, 'passed')} {item.nodeid}")
