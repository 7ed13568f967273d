"""benchmarks/gpu_check keeps working between the rare GPU sessions: its dry run (every
step, at its smallest size, on this machine) writes the files a GPU run writes, its
summary lists every step, and a step that fails or overruns is recorded while the others
still run."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The plots need matplotlib (the test extra installs it; a bare checkout may not have it).
PLOTS = {"softmax.png", "attention.png", "lstm.png", "additive.png"}
OUTPUT_FILES = {"results.json", "summary.md", "log.txt", "junit.xml"} | (
    PLOTS if importlib.util.find_spec("matplotlib") else set())


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import gpu_check

    return gpu_check


def test_dry_run_writes_every_file_and_reports_every_step(gpu_check, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check"), "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - start
    print(done.stdout[-3000:], done.stderr[-3000:], f"\ndry run: {seconds:.0f} s", sep="\n")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # What the device returns: at most 8 plain files, nothing in subfolders.
    written = {p.name for p in tmp_path.iterdir()}
    assert written == OUTPUT_FILES and all(p.is_file() for p in tmp_path.iterdir())
    assert all(p.stat().st_size < 16 * 2**20 for p in tmp_path.iterdir())

    results = json.loads((tmp_path / "results.json").read_text())
    names = [step.name for step in gpu_check.steps()]
    steps = results["gpu_check"]["steps"]
    assert results["gpu_check"]["mode"] == "dry-run" and [s["name"] for s in steps] == names
    assert all(s["status"] == "passed" for s in steps), steps
    summary = (tmp_path / "summary.md").read_text()
    for name in names:
        assert f"| {name} | passed |" in summary
    assert "## Examples, torch vs seqops" in summary and "| gpt | seqops | small |" in summary
    log = (tmp_path / "log.txt").read_text()
    assert all(f"===== {name}: passed" in log for name in names)

    environment = results["environment"]
    for key in ("device", "torch", "triton", "cuda", "seqops", "commit", "source_digest", "device_slug"):
        assert key in environment
    assert results["ceilings"]["copy_gb_per_s"] > 0 and results["ceilings"]["matmul_tflop_per_s"] > 0
    tests = results["tests"]
    assert tests["total"] > 0 and tests["failed"] == tests["errors"] == 0
    sanitizer = results["sanitizer"]
    assert "--tool memcheck" in sanitizer["command"] and "--kernel-calls" in sanitizer["command"]
    # One call per case on the CPU: Triton's, interpreted (the CUDA C++ ones need a GPU).
    cases = gpu_check._kernel_call_cases(torch.device("cpu"))
    assert sanitizer["calls_ok"] == len(sanitizer["calls"]) == len(cases) and sanitizer["calls_failed"] == 0
    assert all(call.split(": ")[0].endswith("[triton]") for call in sanitizer["calls"])
    # racecheck looks at the CUDA C++ kernels alone, both attention forwards and the
    # ordered-dQ backward among them: without a GPU none runs.
    racecheck = results["racecheck"]
    assert "--tool racecheck" in racecheck["command"]
    assert "--kernel-call-backends cuda,cuda:sm80,cuda:ordered_dq" in racecheck["command"]
    assert racecheck["calls"] == [] and racecheck["calls_failed"] == 0
    assert set(results["peers"]["peers"]) == set(gpu_check.PEERS) | set(gpu_check.CARRIED_BUILD_DEPENDENCIES)
    for op in gpu_check.BENCH_OPS + gpu_check.TABLE_ONLY_OPS:
        rows = results["benchmarks"][op]["results"]
        assert any(r["median_ms"] for r in rows) and all(r["median_ms"] or r["skipped"] for r in rows)
        assert f"## {op}" in summary
    from benchmarks import overhead  # importable once the gpu_check fixture put the repository on the path

    # Three rows (torch, seqops, their difference) per public op the overhead suite pairs.
    assert len(results["overhead"]["results"]) == 3 * len(overhead.PAIRS) and "Per-call overhead" in summary
    # Every small call of the host profile, on each backend a CPU runs (the torch one).
    profiled = results["host_profile"]
    assert [r["backend"] for r in profiled] == ["torch"] * 3 and all(r["host_us"] > 0 for r in profiled)
    assert "## Host time per small call" in summary and "| softmax 256x256 fp32 | torch |" in summary


def _step(gpu_check, name, code, budget=60):
    return gpu_check.Step(name, f"{name} step", budget, budget, lambda ctx: [sys.executable, "-c", code])


def _context(gpu_check, tmp_path, deadline=None):
    work = tmp_path / "work"
    work.mkdir()
    return gpu_check.Context(quick=True, dry_run=True, work=work, peers=tmp_path, out=tmp_path / "out",
                             deadline=deadline, env=dict(os.environ))


def test_a_failing_or_overrunning_step_is_recorded_and_the_rest_still_run(gpu_check, tmp_path):
    steps = [_step(gpu_check, "overruns", "import time; time.sleep(60)", budget=1),
             _step(gpu_check, "fails", "raise SystemExit('broken on purpose')"),
             _step(gpu_check, "passes", "print('fine')")]
    ctx = _context(gpu_check, tmp_path)
    start = time.monotonic()
    records = gpu_check.run_steps(steps, ctx, steps)
    assert time.monotonic() - start < 30  # SIGINT ended the sleeper well before its 60 s
    assert [r.status for r in records] == ["timed out", "failed", "passed"]
    assert records[1].detail == "broken on purpose"
    summary = (ctx.out / "summary.md").read_text()
    for row in ("| overruns | timed out |", "| fails | failed |", "| passes | passed |"):
        assert row in summary
    assert "fine" in (ctx.out / "log.txt").read_text()


def test_steps_past_the_time_limit_are_recorded_as_not_run(gpu_check, tmp_path):
    steps = [_step(gpu_check, "late", "print('never')")]
    ctx = _context(gpu_check, tmp_path, deadline=time.monotonic())
    records = gpu_check.run_steps(steps, ctx, steps)
    assert records[0].status == "not run" and "time limit" in records[0].detail


def test_junit_summary(gpu_check, tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_softmax" name="test_a[cuda-triton]" time="0.1"/>
<testcase classname="tests.test_softmax" name="test_b[cuda-triton]" time="0.1">
  <failure message="AssertionError: error 3e-2 &gt; 2e-3&#10;more">traceback</failure></testcase>
<testcase classname="tests.test_lstm" name="test_c[cuda-cuda]" time="0.0">
  <skipped type="pytest.skip" message="backend cuda cannot run on cuda">skip</skipped></testcase>
<testcase classname="tests.test_lstm" name="test_d" time="0.0"><error message="fixture broke">tb</error></testcase>
</testsuite></testsuites>""")
    summary = gpu_check.parse_junit(junit)
    counts = [summary[key] for key in ("total", "passed", "failed", "errors", "skipped")]
    assert counts == [4, 1, 1, 1, 1]
    assert summary["failures"][0] == {"test": "tests.test_softmax::test_b[cuda-triton]", "kind": "failed",
                                      "message": "AssertionError: error 3e-2 > 2e-3"}
    assert summary["skip_reasons"] == {"backend cuda cannot run on cuda": 1}


def test_sanitizer_report(gpu_check):
    log = """========= COMPUTE-SANITIZER
kernel calls on cuda (TRITON_INTERPRET=)
kernel call softmax online forward+backward (fp32, bool mask): ok (relative difference to torch 1.0e-07)
========= Invalid __global__ read of size 4 bytes
=========     at softmax_online_fwd_kernel+0x1a0
=========     by thread (5,0,0) in block (1,0,0)
=========     Address 0x7f00 is out of bounds
kernel call lstm_cell forward+backward (fp32): FAILED RuntimeError: CUDA error: unspecified launch failure
========= ERROR SUMMARY: 1 error
"""
    report = gpu_check.parse_sanitizer_log(log)
    assert report["errors"] == 1 and report["calls_ok"] == 1 and report["calls_failed"] == 1
    assert report["error_lines"] == ["Invalid __global__ read of size 4 bytes (at softmax_online_fwd_kernel+0x1a0)"]


def test_a_tests_step_cut_short_still_names_its_failures(gpu_check):
    """Without junit (written only when pytest ends), the counts and the failed tests come
    from pytest -v's lines."""
    log = ("[gw0] [  1%] PASSED tests/test_softmax.py::test_a[cuda-triton]\n"
           "[gw1] [  2%] FAILED tests/test_attention.py::test_b[cuda-cuda-fp16]\n"
           "[gw1] [  3%] ERROR tests/test_attention.py::test_c[cuda-triton] \n"
           "[gw0] [  4%] SKIPPED tests/test_lstm.py::test_d[cuda-cuda]\n")
    assert gpu_check.outcomes_in_log(log) == (
        "1 error, 1 failed, 1 passed, 1 skipped; failed or errored: tests/test_attention.py::test_b[cuda-cuda-fp16], "
        "tests/test_attention.py::test_c[cuda-triton]")
    assert gpu_check.outcomes_in_log("") == "no test reported"


HANGING_AND_CRASHING_TESTS = '''
import os, time
def test_first(): pass
def test_hangs(): time.sleep(120)
def test_middle(): pass
def test_crashes(): os._exit(3)
def test_last(): assert False
'''


def test_a_test_that_hangs_or_crashes_pytest_costs_that_test_not_the_rest(gpu_check, tmp_path):
    """tests/run_guard.py's watchdog ends the round a test hangs in (a kernel spinning on
    a grid barrier: nothing in the process can interrupt it), a crash ends it as well, and
    benchmarks/guarded_pytest.py runs the tests not yet done in the next round; the merged
    junit has every test, the stopped ones as errors saying how they stopped."""
    from benchmarks import guarded_pytest

    (tmp_path / "test_rounds.py").write_text(HANGING_AND_CRASHING_TESTS)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}

    def command(junit):
        return [sys.executable, "-m", "pytest", str(tmp_path / "test_rounds.py"), "-p", "run_guard", "-q",
                "-p", "no:cacheprovider", "--rootdir", str(tmp_path), f"--junitxml={junit}"]

    start = time.monotonic()
    rounds = guarded_pytest.run_rounds(command, work, 2, 5, env)
    assert time.monotonic() - start < 60  # the sleeper's 120 s never ran out
    assert rounds.code == 1 and not rounds.interrupted and len(rounds.junits) == 1  # the last round ran to its end
    assert [(s.test, s.how) for s in rounds.stopped] == [("test_rounds.py::test_hangs", "hung"),
                                                        ("test_rounds.py::test_crashes", "crashed")]
    assert any("test_hangs" in line for line in rounds.stopped[0].stack)  # where it hung
    # Passed in the rounds that died, so written in no junit: known from the progress file.
    assert rounds.unreported == {"test_rounds.py::test_first": "passed", "test_rounds.py::test_middle": "passed"}
    guarded_pytest.merge_junit(rounds, 2, work / "junit.xml")
    summary = gpu_check.parse_junit(work / "junit.xml")
    counts = [summary[key] for key in ("total", "passed", "failed", "errors")]
    assert counts == [5, 2, 1, 2], summary
    messages = {failure["test"]: failure["message"] for failure in summary["failures"]}
    assert messages["test_rounds::test_hangs"].startswith("hung: ran past the 2 s watchdog")
    assert messages["test_rounds::test_crashes"].startswith("crashed pytest")


def test_the_quick_tests_step_runs_the_kernels_never_run_on_a_gpu_first(gpu_check, tmp_path):
    """Its budget reaches a fraction of the cuda tests (13% on 2026-11-30): the CUDA C++
    kernels' files go first, then the Triton layers in one launch (tests/conftest.py's
    --tests-first, a stable sort by the first glob a file matches)."""
    ctx = gpu_check.Context(quick=True, dry_run=False, work=tmp_path, peers=tmp_path)
    command = gpu_check._pytest_command(ctx, tmp_path / "junit.xml")
    globs = command[command.index("--tests-first") + 1]
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "tests/test_nn_softmax.py", "tests/test_lstm_sequence.py", "tests/test_cuda_softmax.py",
                                "--tests-first", globs], cwd=ROOT, capture_output=True, text=True, timeout=300)
    files = [line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line]
    assert list(dict.fromkeys(files)) == ["tests/test_cuda_softmax.py", "tests/test_lstm_sequence.py",
                                          "tests/test_nn_softmax.py"], collected.stdout[-2000:]
