"""pytest in rounds under tests/run_guard.py's watchdog, for gpu_check's tests step: a
test that hangs past the watchdog (a kernel spinning on a grid barrier) or crashes the
process ends that round; it is recorded as an error, and the next round runs the tests
the earlier ones did not finish. The rounds' junit files are merged into one."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def _load_run_guard():
    """tests/run_guard.py, the plugin's side of the protocol (by path: putting tests/ on
    sys.path would let its helper modules shadow others)."""
    spec = importlib.util.spec_from_file_location("seqops_tests_run_guard", ROOT / "tests" / "run_guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_guard = _load_run_guard()

# Seconds pytest gets to write its junit after the round is interrupted (SIGINT to the group).
INTERRUPT_GRACE_S = 8


@dataclass
class Stopped:
    """A test that ended its round: `how` is "hung" (ran past the watchdog) or "crashed"
    (the process died in it otherwise); `stack`, faulthandler's lines for it."""

    test: str
    how: str
    stack: list[str] = field(default_factory=list)

    def message(self, watchdog_s: float) -> str:
        if self.how == "hung":
            return f"hung: ran past the {watchdog_s:g} s watchdog, which ended pytest (stacks in the log)"
        return "crashed pytest (the process died in this test)"


@dataclass
class Rounds:
    """What the rounds left: the last round's return code; the junit files written (by
    rounds that ran to their end); the tests that stopped a round; {node id: outcome} of
    the tests finished in rounds that wrote no junit; whether the rounds were interrupted."""

    code: int = 0
    junits: list[Path] = field(default_factory=list)
    stopped: list[Stopped] = field(default_factory=list)
    unreported: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False


def run_rounds(command: Callable[[Path], list[str]], work: Path, watchdog_s: float, max_rounds: int,
               env: dict | None = None) -> Rounds:
    """Run `command(junit)` (a pytest command line writing that junit file) in rounds."""
    progress, deselect = work / "tests-progress.txt", work / "tests-deselect.txt"
    env = {**(env or os.environ), run_guard.WATCHDOG_VARIABLE: str(watchdog_s),
           run_guard.PROGRESS_VARIABLE: str(progress), run_guard.DESELECT_VARIABLE: str(deselect)}
    rounds = Rounds()
    reported: set[str] = set()  # finished in a round whose junit says how
    for round_index in range(max_rounds):
        junit = work / f"junit-round-{round_index}.xml"
        stacks_before = _stacks_length(progress)
        _, finished_before = run_guard.read_progress(progress)
        process = subprocess.Popen(command(junit), cwd=ROOT, env=env)
        try:
            rounds.code = process.wait()
        except KeyboardInterrupt:  # the step's time is up: pytest got the SIGINT too
            try:
                process.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
            rounds.code, rounds.interrupted = process.returncode, True
        started, finished = run_guard.read_progress(progress)
        if junit.exists():  # pytest ran to its end, or wrote its junit when interrupted
            rounds.junits.append(junit)
            reported |= finished.keys() - finished_before.keys()
        if junit.exists() or rounds.interrupted:
            break
        stopped_tests = {s.test for s in rounds.stopped}
        unfinished = [test for test in dict.fromkeys(started) if test not in finished and test not in stopped_tests]
        if not unfinished:  # died outside any test (collection, start-up): nothing to skip
            break
        stack = _stacks_since(progress, stacks_before)
        how = "hung" if any(line.startswith("Timeout (") for line in stack) else "crashed"
        rounds.stopped += [Stopped(test, how, stack) for test in unfinished]
        done = finished.keys() | stopped_tests | set(unfinished)
        print(f"[guarded_pytest] round {round_index} ended in {', '.join(unfinished)} ({how}); "
              f"starting again without the {len(done)} tests done", flush=True)
        print("".join(f"  {line}\n" for line in stack[:60]), end="", flush=True)
        deselect.write_text("".join(f"{test}\n" for test in sorted(done)))
    _, finished = run_guard.read_progress(progress)
    rounds.unreported = {test: outcome for test, outcome in finished.items() if test not in reported}
    return rounds


def _stacks_length(progress: Path) -> int:
    stacks = Path(f"{progress}.stacks")
    return stacks.stat().st_size if stacks.exists() else 0


def _stacks_since(progress: Path, offset: int) -> list[str]:
    stacks = Path(f"{progress}.stacks")
    if not stacks.exists():
        return []
    with stacks.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    # The watchdog notes each test it arms for; what follows the last note is the dump.
    last_armed = max((i for i, line in enumerate(lines) if line.startswith("watchdog armed for ")), default=-1)
    return lines[last_armed + 1:]


# How a test finished in a round that wrote no junit is known from the progress file
# alone: its message and traceback went to the log.
_UNREPORTED = {"failed": ("failure", "failed (its round wrote no junit: the traceback is in the log)"),
               "error": ("error", "its set-up or tear-down failed (its round wrote no junit: see the log)"),
               "skipped": ("skipped", "skipped (its round wrote no junit: the reason is in the log)")}


def _case(suite: ElementTree.Element, nodeid: str) -> ElementTree.Element:
    path, _, name = nodeid.partition("::")
    classname = path.removesuffix(".py").replace("/", ".")
    return ElementTree.SubElement(suite, "testcase", classname=classname, name=name, time="0")


def merge_junit(rounds: Rounds, watchdog_s: float, out: Path) -> None:
    """One junit file: every round's test cases, those finished in rounds that wrote no
    junit, and an error case for each stopped test."""
    suite = ElementTree.Element("testsuite", name="pytest")
    for junit in rounds.junits:
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            suite.append(case)
    for nodeid, outcome in rounds.unreported.items():
        case = _case(suite, nodeid)
        if outcome in _UNREPORTED:
            tag, message = _UNREPORTED[outcome]
            ElementTree.SubElement(case, tag, message=message)
    for test in rounds.stopped:
        error = ElementTree.SubElement(_case(suite, test.test), "error", message=test.message(watchdog_s))
        error.text = "\n".join(test.stack[:200])
    suite.set("tests", str(len(suite)))
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)


def write_stopped(stopped: list[Stopped], watchdog_s: float, path: Path) -> None:
    path.write_text(json.dumps([{"test": s.test, "how": s.how, "message": s.message(watchdog_s)} for s in stopped]))
