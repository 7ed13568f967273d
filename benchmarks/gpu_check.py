"""Every GPU check of seqops in one call, for a GPU lent rarely and briefly.

    python3 -m pip install --no-deps --no-build-isolation -e . && python3 benchmarks/gpu_check --quick

Steps, in this order, each in a process of its own under a time budget, so that a step
that fails, hangs or runs long is recorded and the others still run:

  environment      device, driver, versions, commit; measured copy GB/s and bf16 GEMM TFLOP/s
  peers            installs the wheels found in .peers/ (pip --no-deps), says which peers import
                   (carry nvidia-cutlass's wheel there too: the CUDA extension's CuTe
                   instances need its headers, and the GPU machine has no network)
  cuda-build       builds the CUDA C++ extension (seqops/_ext.py) into its cache, so that a
                   compile error shows as this step's and the tests' time goes to tests;
                   objects compiled beforehand without a GPU and carried in SEQOPS_CACHE_DIR
                   are reused (README, "GPU checks"), and a build cut short keeps its objects
  tests            python -m pytest tests on the GPU (--quick: the `cuda`-marked tests only,
                   the CUDA C++ kernels' files first: QUICK_TESTS_FIRST);
                   a test that hangs past its watchdog or crashes pytest is recorded, and
                   pytest starts again on the tests not yet run (tests/run_guard.py)
  sanitizer        compute-sanitizer memcheck over one small call of each Triton kernel and
                   of each CUDA C++ kernel (none of which has run on a GPU yet)
  racecheck        compute-sanitizer racecheck over the CUDA C++ kernel calls: shared-memory
                   hazards in the kernels that order their own (barriers, mbarriers, TMA)
  bench-softmax    the benchmark sweeps (python -m benchmarks' cases and providers, peers
  bench-attention    included where installed)
  bench-lstm
  bench-additive
  bench-gru_rnn    (its table in summary.md only: no PNG, to stay within 8 files)
  overhead         per-call dispatch overhead of each public op (benchmarks/overhead.py)
  host-profile     small calls per backend: host time against device time, and the Python
                   in front of each launch (benchmarks/host_profile.py)
  examples         the GPT and char-LSTM examples (examples/) at full size, torch vs seqops:
                   median ms a step and the most memory a step allocated, bf16 autocast

Output: one folder ($OUT when set, else benchmarks/results/<device>/; --out overrides
both) with at most 8 files, rewritten while the steps run so that a run cut short
leaves what it had: results.json (everything), summary.md (a table per op, pass/fail
counts), log.txt (each step's output), junit.xml (the tests) and a PNG per benchmarked op.

--quick fits in 8 minutes on an H100 (fewer sizes, one dtype; a total time limit shares
out what the steps leave unused). The full run takes longer than one device call may:
split it with --steps. --dry-run runs the same steps in the same order on a machine
without a GPU, each at its smallest size or, where it needs a GPU, built and described
instead of run (the sanitizer's command line is built and its kernel calls run under
TRITON_INTERPRET=1), and writes the same files; tests/test_gpu_check.py runs it in CI
so that this script does not rot between GPU sessions.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import hashlib
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCH_OPS = ("softmax", "attention", "lstm", "additive")  # each with its PNG
# Swept too, its table in summary.md but no PNG: the folder that comes back holds 8 files.
TABLE_ONLY_OPS = ("gru_rnn",)
# Peers measured where importable: distribution name -> module.
PEERS = {"liger-kernel": "liger_kernel", "flash-attn": "flash_attn"}
# Not a peer, carried the same way (a wheel in .peers/): the CUTLASS/CuTe headers without
# which the CUDA extension builds without its CuTe instance files (the attention forward).
CARRIED_BUILD_DEPENDENCIES = {"nvidia-cutlass": "cutlass_library"}
QUICK_TIME_LIMIT_S = 470  # 8 minutes less the start of the processes around it
# After a step's time is up it gets SIGINT (pytest then still writes its junit xml), and
# this long to finish before it is killed.
GRACE_S = 10
MIN_STEP_S = 5  # a step left less time than this is not started
REFRESH_S = 30  # how often the output files are rewritten while a step runs
LOG_CAP_BYTES = 1_500_000  # per step in log.txt: the device returns files up to 16 MiB
JUNIT_CAP_BYTES = 12_000_000
MAX_LISTED = 40  # failed tests, sanitizer errors listed in the summary


# --------------------------------------------------------------------------- steps

class StepUnavailable(Exception):
    """The step cannot run here; the message says why (recorded, not an error of seqops)."""


@dataclass
class Context:
    """What the steps share: the mode, the folders, what has been measured so far."""

    quick: bool
    dry_run: bool
    work: Path
    peers: Path
    out: Optional[Path] = None  # known once the environment step has named the device
    deadline: Optional[float] = None  # time.monotonic() at which the time limit runs out
    time_limit_s: Optional[float] = None
    env: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    records: list = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "dry-run" if self.dry_run else "quick" if self.quick else "full"

    def child(self, step: str) -> list[str]:
        """The command line of a step run by this module in a child process."""
        flags = ["--quick"] * self.quick + ["--dry-run"] * self.dry_run
        return [sys.executable, "-m", "benchmarks.gpu_check", "--step", step, "--work", str(self.work),
                "--peers", str(self.peers), *flags]


@dataclass(frozen=True)
class Step:
    """name; what it does (one line); budget in seconds (quick or dry run, full);
    command(ctx) -> argv (raises StepUnavailable); collect(ctx, record) reads what the
    step left in ctx.work into ctx.results and record.detail (also while it runs);
    extra_env(ctx) -> variables set for it."""

    name: str
    what: str
    quick_s: float
    full_s: float
    command: Callable[[Context], list[str]]
    collect: Callable[[Context, "Record"], None] = lambda ctx, record: None
    extra_env: Callable[[Context], dict] = lambda ctx: {}

    def budget(self, ctx: Context) -> float:
        return self.full_s if not (ctx.quick or ctx.dry_run) else self.quick_s


@dataclass
class Record:
    """How a step went. status: passed, failed, timed out, not run, error, running."""

    name: str
    what: str
    status: str = "not run"
    seconds: float = 0.0
    timeout_s: Optional[float] = None
    returncode: Optional[int] = None
    command: str = ""
    detail: str = ""
    log: str = ""  # path of the step's output in ctx.work


# Seconds one test may run before tests/run_guard.py's watchdog ends pytest (quick or dry
# run, full): a kernel spinning on a grid barrier holds the host in a CUDA call forever.
TEST_WATCHDOG_S = (60, 300)
# Test files the quick tests step runs before the rest, which its budget may not reach:
# the CUDA C++ kernels' (none has run on a GPU yet; no JIT compile, so they go fast), then
# the Triton layers in one launch (their grid barrier needs many programs, which the
# interpreter never runs).
QUICK_TESTS_FIRST = ("test_cuda_*.py", "test_lstm_sequence.py", "test_gru_rnn_sequence.py")
# Rounds of pytest the tests step starts at most, each on the tests the last did not reach.
MAX_TEST_ROUNDS = 12


def _pytest_selection(ctx: Context) -> list[str]:
    if ctx.dry_run:  # one file's cuda tests: collected, skipped here, reported as on a GPU
        return ["tests/test_nn_softmax.py", "-m", "cuda"]
    # Quick: the cuda tests but torch.compile's (inductor takes minutes to compile them).
    return ["tests", "-m", "cuda", "-k", "not compile"] if ctx.quick else ["tests"]


def _tests_step_command(ctx: Context) -> list[str]:
    ctx.results["tests"] = {"selection": shlex.join(_pytest_selection(ctx)),
                            "watchdog_s": TEST_WATCHDOG_S[not (ctx.quick or ctx.dry_run)]}
    return ctx.child("tests")


def _pytest_command(ctx: Context, junit: Path) -> list[str]:
    # -v: a line per test with its name, so that a step cut short by its budget (junit is
    # written only at the end) still says which tests passed and which failed; quick: stop
    # at the first failure, which prints its traceback (2026-11-30 on an H200 a quick run
    # ended in its budget with one F and a cascade of errors, and nothing said which test).
    command = [sys.executable, "-m", "pytest", *_pytest_selection(ctx), "-v", "-rfE", "--tb=short",
               "-p", "no:cacheprovider", f"--junitxml={junit}", "--ignore=tests/test_gpu_check.py"]
    if ctx.quick:
        command.append("-x")
    if ctx.quick or ctx.dry_run:  # what a short budget reaches first (tests/conftest.py)
        command += ["--tests-first", ",".join(QUICK_TESTS_FIRST)]
    if not ctx.dry_run and importlib.util.find_spec("xdist") is not None:
        # Triton compiles on the CPU: workers compile in parallel, the GPU has room for all.
        command += ["-n", str(max(1, min(8, (os.cpu_count() or 2) // 2)))]
    return command


def find_compute_sanitizer() -> Optional[str]:
    """compute-sanitizer on PATH, in the CUDA toolkit, or in NVIDIA's pip packages."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    patterns = [f"{home}/bin/compute-sanitizer" for home in homes if home]
    patterns += [f"{home}/compute-sanitizer/compute-sanitizer" for home in homes if home]
    patterns += ["/usr/local/cuda-*/bin/compute-sanitizer", "/opt/nvidia/*/compute-sanitizer",
                 f"{sysconfig.get_paths()['purelib']}/nvidia/*/bin/compute-sanitizer"]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if os.access(path, os.X_OK):
                return path
    return None


# The kernels racecheck looks at: the CUDA C++ ones, whose shared-memory traffic is ordered
# by hand (barriers, mbarriers, TMA, named barriers between warpgroups); Triton's compiler
# places its own, and racecheck over them would take the step's time. memcheck looks at all.
RACECHECK_BACKENDS = ("cuda", "cuda:sm80", "cuda:ordered_dq")
# Where each tool's findings go in results.json.
_SANITIZER_RESULTS = {"memcheck": "sanitizer", "racecheck": "racecheck"}


def _kernel_calls_command(backends: Optional[tuple[str, ...]]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.gpu_check", "--kernel-calls",
            *(["--kernel-call-backends", ",".join(backends)] if backends else [])]


def sanitizer_command(sanitizer: str, tool: str = "memcheck",
                      backends: Optional[tuple[str, ...]] = None) -> list[str]:
    """compute-sanitizer's `tool` (memcheck, racecheck) over the kernel calls (on `backends`
    only, when given). API errors are not reported: PyTorch makes failing CUDA calls on
    purpose (probing), and those would drown the kernels' own errors."""
    return [sanitizer, "--tool", tool, "--error-exitcode", "3", "--report-api-errors", "no",
            "--print-limit", "50", *_kernel_calls_command(backends)]


def _sanitizer_step_command(tool: str, backends: Optional[tuple[str, ...]] = None) -> Callable[[Context], list[str]]:
    """The step running `tool` over the kernel calls; in a dry run the calls alone (Triton's
    interpreted on the CPU; without a GPU no CUDA C++ one runs)."""
    def command(ctx: Context) -> list[str]:
        sanitizer = find_compute_sanitizer()
        ctx.results.setdefault(_SANITIZER_RESULTS[tool], {})["command"] = shlex.join(
            sanitizer_command(sanitizer or "compute-sanitizer", tool, backends))
        if ctx.dry_run:
            return _kernel_calls_command(backends)
        if sanitizer is None:
            raise StepUnavailable("compute-sanitizer not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, NVIDIA's "
                                  "pip packages)")
        return sanitizer_command(sanitizer, tool, backends)

    return command


def _sanitizer_env(ctx: Context) -> dict:
    if ctx.dry_run:
        return {"TRITON_INTERPRET": "1"}
    # Without PyTorch's caching allocator every tensor is its own allocation, so an access
    # past a tensor's end leaves it and memcheck sees it.
    return {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}


def steps() -> list[Step]:
    return [
        Step("environment", "device, driver, versions, commit; measured copy GB/s and bf16 GEMM TFLOP/s", 40, 90,
             lambda ctx: ctx.child("environment"), _collect_environment),
        Step("peers", "install the peer wheels in .peers/ (pip --no-deps); which peers import", 20, 60,
             lambda ctx: ctx.child("peers"), _collect_peers),
        Step("cuda-build", "build the CUDA C++ extension into seqops's cache once, before the tests load it", 180, 300,
             lambda ctx: ctx.child("cuda-build")),
        Step("tests", "python -m pytest tests with CUDA (quick: the cuda-marked tests)", 120, 1800,
             _tests_step_command, _collect_tests),
        Step("sanitizer", "compute-sanitizer memcheck over one small call of each Triton and CUDA C++ kernel",
             75, 300, _sanitizer_step_command("memcheck"), _sanitizer_collector("memcheck"), _sanitizer_env),
        Step("racecheck", "compute-sanitizer racecheck over the CUDA C++ kernel calls (shared-memory hazards)",
             45, 300, _sanitizer_step_command("racecheck", RACECHECK_BACKENDS), _sanitizer_collector("racecheck"),
             _sanitizer_env),
        *[Step(f"bench-{op}", f"python -m benchmarks {op} sweep (torch, peers)", budget, full, _bench_command(op),
               _bench_collector(op)) for op, budget, full in [("softmax", 40, 300), ("attention", 90, 900),
                                                                ("lstm", 60, 900), ("additive", 30, 600),
                                                                ("gru_rnn", 40, 600)]],
        Step("overhead", "per-call overhead of each public op over the torch call it wraps", 20, 120,
             lambda ctx: ctx.child("overhead"), _collect_overhead),
        Step("host-profile", "small calls per backend: host us against device us, and cProfile of the host side",
             20, 90, lambda ctx: ctx.child("host-profile"), _collect_host_profile),
        Step("examples", "the GPT and char-LSTM examples at full size, torch vs seqops: ms a step, memory a step",
             60, 300, lambda ctx: ctx.child("examples"), _collect_examples),
    ]


def _bench_command(op: str) -> Callable[[Context], list[str]]:
    return lambda ctx: ctx.child(f"bench-{op}")


# --------------------------------------------------------------------------- running

def run_command(command: list[str], timeout: float, log: Path, env: dict, on_tick: Callable[[], None] = lambda: None
                ) -> tuple[int, bool, float]:
    """Run `command` (cwd: the repository), its output to `log`, for at most `timeout`
    seconds: then SIGINT to its process group, and SIGKILL GRACE_S later.
    Returns (returncode, timed_out, seconds); calls on_tick every REFRESH_S meanwhile."""
    start = time.monotonic()
    with log.open("wb") as sink:
        # A process group of its own, to signal the step with all its children (pytest's
        # workers, the sanitized program); not a session of its own, so that whatever
        # ends this command ends them too.
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   preexec_fn=os.setpgrp)
        timed_out = False
        try:
            while True:
                left = timeout - (time.monotonic() - start)
                if left <= 0:
                    timed_out = True
                    break
                try:
                    process.wait(timeout=min(REFRESH_S, left))
                    break
                except subprocess.TimeoutExpired:
                    on_tick()
            if timed_out:
                _signal_group(process, signal.SIGINT)
                try:
                    process.wait(timeout=GRACE_S)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the step goes down with us
            _signal_group(process, signal.SIGKILL)
            raise
        process.wait()
    return process.returncode, timed_out, time.monotonic() - start


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def run_steps(selected: list[Step], ctx: Context, every: list[Step]) -> list[Record]:
    """Run the selected steps in order, recording each one of `every` (those not selected
    as such), and rewrite the output files after each."""
    names = {step.name for step in selected}
    ctx.records = [Record(step.name, step.what, detail="" if step.name in names else "not selected")
                   for step in every]
    for step, record in zip(every, ctx.records):
        if step.name not in names:
            continue
        timeout = step.budget(ctx)
        if ctx.deadline is not None and ctx.deadline - time.monotonic() - GRACE_S < timeout:
            timeout = ctx.deadline - time.monotonic() - GRACE_S
            if timeout < MIN_STEP_S:
                record.detail = "not run: the time limit was reached"
                write_outputs(ctx)
                continue
        try:
            command = step.command(ctx)
        except StepUnavailable as why:
            record.detail = f"not run: {why}"
            write_outputs(ctx)
            continue
        record.timeout_s = round(timeout)
        record.command = shlex.join(command)
        record.log = str(ctx.work / f"{step.name}.log")
        env = {**ctx.env, **step.extra_env(ctx)}
        record.status = "running"
        print(f"[gpu_check] {step.name}: running (up to {timeout:.0f} s)", flush=True)

        def refresh(step=step, record=record):
            _collect(step, ctx, record)
            write_outputs(ctx)

        code, timed_out, seconds = run_command(command, timeout, Path(record.log), env, refresh)
        record.returncode, record.seconds = code, round(seconds, 1)
        record.status = "timed out" if timed_out else "passed" if code == 0 else "failed"
        _collect(step, ctx, record)
        if record.status == "failed" and not record.detail:
            record.detail = _last_line(Path(record.log))
        print(f"[gpu_check] {step.name}: {record.status} in {seconds:.0f} s"
              + (f"; {record.detail}" if record.detail else ""), flush=True)
        write_outputs(ctx)
    return ctx.records


def _collect(step: Step, ctx: Context, record: Record) -> None:
    try:
        step.collect(ctx, record)
    except Exception as error:  # a report that cannot be read must not stop the other steps
        record.detail = f"could not read its output: {type(error).__name__}: {error}"
        if record.status in ("passed", "running"):
            record.status = "error"


def _last_line(log: Path) -> str:
    lines = [line for line in _tail(log, 4000).splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _tail(path: Path, count: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - count))
        return f.read().decode(errors="replace")


# --------------------------------------------------------------------------- collecting

def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a step killed while writing it
            pass
    return rows


def _collect_environment(ctx: Context, record: Record) -> None:
    """Also names the default output folder, after the device (unknown if the step failed)."""
    data = _read_json(ctx.work / "environment.json")
    if ctx.out is None and record.status != "running":
        slug = data["environment"]["device_slug"] if data else "unknown-device"
        on_gpu = bool(data) and data["environment"]["device_type"] == "cuda"
        ctx.out = RESULTS / slug if on_gpu and not ctx.dry_run else RESULTS / "local" / slug
    if data is None:
        return
    ctx.results["environment"], ctx.results["ceilings"] = data["environment"], data["ceilings"]
    env, ceilings = data["environment"], data["ceilings"]
    parts = [env["device"]] + ([f"driver {env['driver']}"] if env.get("driver") else [])
    parts += [f"copy {ceilings['copy_gb_per_s']:.0f} GB/s", f"bf16 GEMM {ceilings['matmul_tflop_per_s']:.1f} TFLOP/s"]
    parts += data["problems"]
    record.detail = "; ".join(parts)


def _collect_peers(ctx: Context, record: Record) -> None:
    data = _read_json(ctx.work / "peers.json")
    if data is None:
        return
    ctx.results["peers"] = data
    record.detail = "; ".join(f"{name} {peer['version']}" if peer["version"] else f"{name}: {peer['reason']}"
                              for name, peer in data["peers"].items())


def parse_junit(path: Path) -> dict:
    """Counts, failed tests with the first line of their message, skip reasons by count."""
    root = ElementTree.parse(path).getroot()
    counts = Counter()
    failed, skip_reasons = [], Counter()
    for case in root.iter("testcase"):
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        kind = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(getattr(outcome, "tag", None),
                                                                                 "passed")
        counts[kind] += 1
        if kind in ("failed", "errors"):
            message = (outcome.get("message") or outcome.text or "").strip().splitlines()
            failed.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": kind,
                           "message": message[0][:300] if message else ""})
        elif kind == "skipped":
            skip_reasons[(outcome.get("message") or "").strip()[:200]] += 1
    return {"total": sum(counts.values()), **{k: counts[k] for k in ("passed", "failed", "errors", "skipped")},
            "failures": failed, "skip_reasons": dict(skip_reasons.most_common(10))}


def _collect_tests(ctx: Context, record: Record) -> None:
    junit = ctx.work / "junit.xml"
    if not junit.exists():
        if record.status != "running":
            record.detail = "no junit xml was written; " + outcomes_in_log(Path(record.log).read_text(errors="replace")
                                                                          if record.log else "")
        return
    summary = parse_junit(junit)
    ctx.results["tests"].update(summary)
    record.detail = (f"{summary['passed']} passed, {summary['failed']} failed, {summary['errors']} errors, "
                     f"{summary['skipped']} skipped")
    stopped = _read_json(ctx.work / "tests-stopped.json") or []
    ctx.results["tests"]["stopped_pytest"] = stopped
    if stopped:
        record.detail += "; stopped pytest (hung or crashed): " + ", ".join(s["test"] for s in stopped[:MAX_LISTED])
    if record.status == "timed out":
        record.detail += " (before the time ran out)"


def outcomes_in_log(text: str) -> str:
    """What pytest -v printed of each test (`PASSED tests/...`), counted, with the names of
    those that failed or errored: the tests step's result when it was cut short."""
    outcomes = {name: outcome for outcome, name in re.findall(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (tests/\S+)",
                                                               text)}
    counts = Counter(outcomes.values())
    bad = [name for name, outcome in outcomes.items() if outcome in ("FAILED", "ERROR")]
    summary = ", ".join(f"{n} {outcome.lower()}" for outcome, n in sorted(counts.items())) or "no test reported"
    return summary + (f"; failed or errored: {', '.join(bad[:MAX_LISTED])}" if bad else "")


def parse_sanitizer_log(text: str) -> dict:
    """The kernel calls' own lines and compute-sanitizer's error summary."""
    calls = [line.split("kernel call ", 1)[1] for line in text.splitlines() if line.startswith("kernel call ")]
    lines = text.splitlines()
    errors = []
    for index, line in enumerate(lines):
        if line.startswith("=========") and "ERROR SUMMARY" not in line and any(
                word in line for word in ("Invalid", "Program hit", "Race", "Uninitialized", "Error")):
            where = lines[index + 1].strip("= ") if index + 1 < len(lines) and " at " in lines[index + 1] else ""
            errors.append(line.strip("= ") + (f" ({where})" if where else ""))
    summary = [line for line in lines if "ERROR SUMMARY:" in line]
    error_count = int(summary[-1].split("ERROR SUMMARY:")[1].split()[0]) if summary else None
    return {"calls": calls, "calls_ok": sum(": ok" in c for c in calls),
            "calls_failed": sum("FAILED" in c for c in calls), "errors": error_count, "error_lines": errors[:MAX_LISTED]}


def _sanitizer_collector(tool: str) -> Callable[[Context, Record], None]:
    """The kernel calls' outcomes and `tool`'s error count into results.json; the step fails
    on any error the tool reports."""
    def collect(ctx: Context, record: Record) -> None:
        if not record.log:
            return
        data = ctx.results.setdefault(_SANITIZER_RESULTS[tool], {})
        data.update(parse_sanitizer_log(_tail(Path(record.log), 2_000_000)))
        data["ran_under_sanitizer"] = not ctx.dry_run
        found = (f"{tool} not run (dry run: the calls ran without it, Triton's interpreted on the CPU)" if ctx.dry_run
                 else f"{data['errors']} {tool} errors" if data["errors"] is not None
                 else f"no {tool} summary")
        record.detail = f"{data['calls_ok']} kernel calls ok, {data['calls_failed']} failed; {found}"
        if not ctx.dry_run and data["errors"] and record.status == "passed":
            record.status = "failed"

    return collect


def _collect_examples(ctx: Context, record: Record) -> None:
    rows = _read_jsonl(ctx.work / "examples.jsonl")
    if not rows:
        return
    ctx.results["examples"] = rows
    record.detail = "; ".join(f"{r['example']} {r['provider']} {r['median_ms']:.1f} ms" for r in rows)


def _bench_collector(op: str) -> Callable[[Context, Record], None]:
    def collect(ctx: Context, record: Record) -> None:
        rows = _read_jsonl(ctx.work / f"bench-{op}.jsonl")
        if not rows:
            return
        meta = {k: v for row in rows if "provider" not in row for k, v in row.items()}
        results = [row for row in rows if "provider" in row]
        ctx.results.setdefault("benchmarks", {})[op] = {**meta, "results": results}
        measured = sum(r["median_ms"] is not None for r in results)
        record.detail = f"{measured} measured, {len(results) - measured} not measured, of {meta.get('planned', '?')}"
        if op in BENCH_OPS:
            write_plot(ctx, op)

    return collect


def _collect_overhead(ctx: Context, record: Record) -> None:
    rows = _read_jsonl(ctx.work / "overhead.jsonl")
    if not rows:
        return
    meta = {k: v for row in rows if "provider" not in row for k, v in row.items()}
    results = [row for row in rows if "provider" in row]
    ctx.results["overhead"] = {**meta, "results": results}
    worst = max((r for r in results if r["provider"] == meta["overhead_provider"] and r["median_ms"] is not None),
                key=lambda r: r["median_ms"], default=None)
    if worst:
        record.detail = f"largest: {worst['panel']} {worst['median_ms'] * 1e3:.1f} us (target {meta['target_us']:g} us)"


def _collect_host_profile(ctx: Context, record: Record) -> None:
    rows = _read_jsonl(ctx.work / "host_profile.jsonl")
    if not rows:
        return
    ctx.results["host_profile"] = rows
    bound = [r for r in rows if r["host_us"] and r["device_us"] and r["host_us"] > 2 * r["device_us"]]
    record.detail = f"{len(rows)} calls profiled; host-bound (host > 2x device): {len(bound)}"


# --------------------------------------------------------------------------- writing

def write_outputs(ctx: Context) -> None:
    """results.json, summary.md and log.txt (junit.xml and the plots are written as their
    steps finish). Before the device is known there is no folder to write to."""
    if ctx.out is None:
        return
    ctx.out.mkdir(parents=True, exist_ok=True)
    document = {"gpu_check": {"mode": ctx.mode, "time_limit_s": ctx.time_limit_s,
                              "steps": [dataclasses.asdict(r) for r in ctx.records]}, **ctx.results}
    (ctx.out / "results.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    (ctx.out / "summary.md").write_text(summary_markdown(ctx))
    with (ctx.out / "log.txt").open("w") as log:
        for record in ctx.records:
            log.write(f"===== {record.name}: {record.status}" + (f" ({record.detail})" if record.detail else "")
                      + (f"\n$ {record.command}" if record.command else "") + "\n")
            if record.log and Path(record.log).exists():
                log.write(_capped(Path(record.log)) + "\n")
    junit = ctx.work / "junit.xml"
    if junit.exists() and junit.stat().st_size <= JUNIT_CAP_BYTES:
        shutil.copyfile(junit, ctx.out / "junit.xml")


def _capped(path: Path) -> str:
    size = path.stat().st_size
    if size <= LOG_CAP_BYTES:
        return path.read_text(errors="replace")
    with path.open("rb") as f:
        head = f.read(LOG_CAP_BYTES // 5).decode(errors="replace")
    return f"{head}\n[... {size - LOG_CAP_BYTES} bytes left out ...]\n{_tail(path, LOG_CAP_BYTES * 4 // 5)}"


def _us(ms: Optional[float]) -> str:
    return "" if ms is None else f"{ms * 1e3:.1f}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def benchmark_table(op_data: dict, ceilings: dict) -> list[str]:
    """Measured rows of one op: time, throughput against the measured ceilings, speed
    against the op's baseline, peak extra memory; then why the others were not measured."""
    results, baseline = op_data["results"], op_data.get("baseline")
    key = lambda r: (r["panel"], r["direction"], r["dtype"], tuple(r["shape"]))
    base = {key(r): r["median_ms"] for r in results if r["provider"] == baseline and r["median_ms"]}
    copy, gemm = ceilings.get("copy_gb_per_s"), ceilings.get("matmul_tflop_per_s")
    rows = []
    for r in results:
        if r["median_ms"] is None:
            continue
        gb, tf = r.get("gb_per_s"), r.get("tflop_per_s")
        rows.append([r["panel"], "x".join(map(str, r["shape"])), r["provider"], _us(r["median_ms"]),
                     f"{_us(r['p20_ms'])}-{_us(r['p80_ms'])}",
                     f"{gb:.0f}" + (f" ({100 * gb / copy:.0f}%)" if copy else "") if gb else "",
                     f"{tf:.1f}" + (f" ({100 * tf / gemm:.0f}%)" if gemm else "") if tf else "",
                     f"{base[key(r)] / r['median_ms']:.2f}" if key(r) in base else "",
                     f"{r['peak_extra_bytes'] / 2**20:.1f}" if r.get("peak_extra_bytes") is not None else "n/a"])
    lines = _markdown_table(["case", "shape", "provider", "median us", "p20-p80 us", "GB/s (% copy)",
                             "TFLOP/s (% bf16 GEMM)", f"x {baseline}", "peak extra MiB"], rows)
    skipped = sorted({f"{r['provider']}: {r['skipped']}" for r in results if r["skipped"]})
    if skipped:
        lines += ["", "Not measured: " + "; ".join(skipped)]
    if op_data.get("memory_exponents"):
        lines += ["", f"Peak extra memory ~ {op_data.get('sweep_name', 'size')}^k ({op_data.get('memory_panel')}): "
                  + ", ".join(f"{p} k={k:.2f}" for p, k in op_data["memory_exponents"].items())]
    return lines


def overhead_table(data: dict) -> list[str]:
    by_panel = defaultdict(dict)
    for r in data["results"]:
        by_panel[r["panel"]][r["provider"]] = r
    rows = []
    for panel, row in by_panel.items():
        over = row.get(data["overhead_provider"], {})
        if over.get("median_ms") is None:
            rows.append([panel, "", "", over.get("skipped") or "not measured", ""])
            continue
        rows.append([panel, _us(row[data["baseline"]]["median_ms"]), _us(row[data["seqops_provider"]]["median_ms"]),
                     f"{_us(over['median_ms'])} ({_us(over['p20_ms'])} to {_us(over['p80_ms'])})",
                     "yes" if over["median_ms"] * 1e3 <= data["target_us"] else "no"])
    return _markdown_table(["op (device)", "torch us", "seqops[torch] us", "overhead us (p20 to p80)",
                            f"<= {data['target_us']:g} us"], rows)


def host_profile_table(rows: list[dict]) -> list[str]:
    cell = lambda us: "" if us is None else f"{us:.1f}"
    return _markdown_table(["call", "backend", "host us", "wall us", "device us"], [
        [r["case"], r["backend"], *([r["skipped"], "", ""] if r["skipped"] else
                                    [cell(r["host_us"]), cell(r["wall_us"]), cell(r["device_us"])])] for r in rows])


def summary_markdown(ctx: Context) -> str:
    env, ceilings = ctx.results.get("environment", {}), ctx.results.get("ceilings", {})
    lines = [f"# seqops GPU check: {env.get('device', 'device unknown')} ({ctx.mode})", ""]
    if env:
        commit = (env.get("commit") or "unknown") + (" with uncommitted changes" if env.get("dirty") else "")
        versions = ", ".join(f"{name} {env.get(key)}" for name, key in (
            ("torch", "torch"), ("triton", "triton"), ("CUDA", "cuda"), ("seqops", "seqops"), ("Python", "python"),
            ("driver", "driver")) if env.get(key))
        lines += [f"{env.get('date')}; commit {commit}, sources {env.get('source_digest')}; {versions}", ""]
    if ceilings:
        lines += [f"Measured ceilings: device copy {ceilings['copy_gb_per_s']:.0f} GB/s (read + write), bf16 GEMM "
                  f"{ceilings['matmul_tflop_per_s']:.1f} TFLOP/s.", ""]
    if ctx.dry_run:
        lines += ["Dry run on a machine without a GPU: each step at its smallest size, the GPU-only parts described. "
                  "CPU timings say nothing about the GPU kernels.", ""]
    lines += ["## Steps", ""] + _markdown_table(
        ["step", "status", "seconds", "budget s", "what", "result"],
        [[r.name, r.status, f"{r.seconds:.0f}", f"{r.timeout_s}" if r.timeout_s is not None else "", r.what,
          r.detail.replace("|", "/")] for r in ctx.records])
    tests = ctx.results.get("tests")
    if tests and "total" in tests:
        lines += ["", "## Tests", "", f"`pytest {tests['selection']}`: {tests['total']} tests, {tests['passed']} "
                  f"passed, {tests['failed']} failed, {tests['errors']} errors, {tests['skipped']} skipped."]
        lines += [f"- FAILED `{f['test']}`: {f['message']}" for f in tests["failures"][:MAX_LISTED]]
        if tests["skip_reasons"]:
            lines += ["", "Skipped, by reason: " + "; ".join(f"{n} x {reason or '(no reason)'}"
                                                            for reason, n in tests["skip_reasons"].items())]
    sanitizer = ctx.results.get("sanitizer")
    if sanitizer and "calls" in sanitizer:
        lines += ["", "## Sanitizer", "", f"`{sanitizer['command']}`", ""]
        lines += [f"- {call}" for call in sanitizer["calls"]]
        if sanitizer["ran_under_sanitizer"]:
            lines += ["", f"memcheck: {sanitizer['errors']} errors"] + [f"- {e}" for e in sanitizer["error_lines"]]
    peers = ctx.results.get("peers")
    if peers:
        lines += ["", "## Peers", ""] + [f"- {name}: " + (f"{p['version']}" if p["version"] else p["reason"])
                                        for name, p in peers["peers"].items()]
    for op, data in ctx.results.get("benchmarks", {}).items():
        lines += ["", f"## {op}", ""] + benchmark_table(data, ceilings)
    if ctx.results.get("overhead"):
        lines += ["", "## Per-call overhead (torch backend, tiny inputs, no_grad)", ""]
        lines += overhead_table(ctx.results["overhead"])
    if ctx.results.get("host_profile"):
        lines += ["", "## Host time per small call (no_grad): host against device", ""]
        lines += host_profile_table(ctx.results["host_profile"])
        for row in ctx.results["host_profile"]:
            if row["top_functions"]:
                lines += ["", f"cProfile of {row['case']} [{row['backend']}], by own time:", "```",
                          row["top_functions"], "```"]
    if ctx.results.get("examples"):
        lines += ["", "## Examples, torch vs seqops (examples/, one model each, alternating steps)", ""]
        lines += _markdown_table(
            ["example", "provider", "size", "steps", "ms a step (median)", "MiB a step (most)", "loss first -> last"],
            [[r["example"], r["provider"], r["size"], str(r["steps"]), f"{r['median_ms']:.1f}",
              "" if r["step_peak_mib"] is None else f"{r['step_peak_mib']:.0f}",
              f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}"] for r in ctx.results["examples"]])
    return "\n".join(lines) + "\n"


def write_plot(ctx: Context, op: str) -> Optional[Path]:
    """<op>.png: a grid with one panel per case group (throughput against the swept size,
    a line per provider, the measured ceiling dashed; the memory panel log-log)."""
    if ctx.out is None:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    data = ctx.results["benchmarks"][op]
    ceilings = ctx.results.get("ceilings", {})
    panels = defaultdict(lambda: defaultdict(list))
    for r in data["results"]:
        is_memory = r["panel"] == data.get("memory_panel")
        value = (r["peak_extra_bytes"] / 2**20 if r.get("peak_extra_bytes") else None) if is_memory else (
            r.get("tflop_per_s") or r.get("gb_per_s"))
        if value:
            panels[r["panel"]][r["provider"]].append((r["sweep"], value, bool(r.get("tflop_per_s"))))
    if not panels:
        return None
    columns = min(3 if len(panels) <= 24 else 4, len(panels))
    rows = math.ceil(len(panels) / columns)
    height = 3.4 * rows + 0.5
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, height), squeeze=False)
    # One colour per provider across every panel of the figure.
    providers = sorted({provider for lines in panels.values() for provider in lines})
    colours = dict(zip(providers, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    exponents = data.get("memory_exponents") or {}
    for ax, (panel, lines) in zip(axes.flat, sorted(panels.items())):
        is_memory = panel == data.get("memory_panel")
        in_flops = any(flops for points in lines.values() for _, _, flops in points)
        for provider, points in sorted(lines.items()):
            xs, ys, _ = zip(*sorted(points))
            label = f"{provider} (k={exponents[provider]:.2f})" if is_memory and provider in exponents else provider
            ax.plot(xs, ys, marker="o", markersize=3, color=colours[provider], label=label)
        if is_memory:
            ax.set_yscale("log")
            ax.set_ylabel("peak extra MiB")
        else:
            ceiling = ceilings.get("matmul_tflop_per_s" if in_flops else "copy_gb_per_s")
            if ceiling:
                ax.axhline(ceiling, color="grey", linestyle="--", linewidth=1)
            ax.set_ylabel("TFLOP/s" if in_flops else "GB/s")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(data.get("sweep_name", ""))
        ax.set_title(panel, fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    device = ctx.results.get("environment", {}).get("device", "")
    fig.suptitle(f"{op} ({device}; dashed: measured ceiling)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))
    path = ctx.out / f"{op}.png"
    fig.savefig(path, dpi=80 if len(panels) > 12 else 100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- step bodies (child processes)

def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def source_digest() -> str:
    """sha256 over the sources (paths and contents): names the code that ran where git
    does not travel (the device machine gets the working tree without .git)."""
    digest = hashlib.sha256()
    for folder in ("seqops", "kernels", "csrc", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".cu", ".cuh", ".h", ".cpp") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _first_line_of(command: list[str]) -> Optional[str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return lines[-1] if done.returncode == 0 and lines else None


def step_environment(ctx: Context) -> int:
    import torch

    from benchmarks import environment
    from benchmarks.measure import copy_bandwidth_gb_per_s, matmul_tflop_per_s

    device = _device()
    env = environment.describe(device)
    env["device_slug"] = environment.device_slug(device)
    env["source_digest"] = source_digest()
    dirty = _first_line_of(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    env["dirty"] = bool(dirty) if env["commit"] else None
    env["nvcc"] = _first_line_of(["nvcc", "--version"])
    env["compute_sanitizer"] = find_compute_sanitizer()
    env["cpus"] = os.cpu_count()
    problems = []
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1))
        smi = _first_line_of(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem,power.limit",
                              "--format=csv,noheader"])
        env["driver"], env["nvidia_smi"] = (smi.split(",")[0].strip() if smi else None), smi
    elif not ctx.dry_run:
        problems.append("no CUDA device: the GPU steps will fail (--dry-run checks this script without one)")
    spec = importlib.util.find_spec("seqops.kernels")
    env["kernels_from"] = spec.origin if spec else None
    if spec is None or not Path(spec.origin).resolve().is_relative_to(ROOT / "kernels"):
        found = "missing" if spec is None else f"imported from {spec.origin}"
        problems.append(f"seqops.kernels is {found}, not this tree's kernels/: run `python3 -m pip install --no-deps "
                        "--no-build-isolation -e .` first")
    print(json.dumps(env, indent=1))
    # Sizes: several times the L2 for the copy, a GEMM that fills the chip; tiny in a dry run.
    on_gpu = device.type == "cuda"
    ceilings = {"copy_gb_per_s": copy_bandwidth_gb_per_s(device, 2**30 if on_gpu else 2**22),
                "matmul_tflop_per_s": matmul_tflop_per_s(device, 8192 if on_gpu else 128)}
    print(f"measured ceilings: copy {ceilings['copy_gb_per_s']:.0f} GB/s, bf16 GEMM "
          f"{ceilings['matmul_tflop_per_s']:.2f} TFLOP/s")
    (ctx.work / "environment.json").write_text(json.dumps({"environment": env, "ceilings": ceilings,
                                                           "problems": problems}))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems and not ctx.dry_run else 0


def step_tests(ctx: Context) -> int:
    """pytest in rounds (benchmarks/guarded_pytest.py): junit.xml gathers every round's
    tests and an error for each test that hung or crashed one; tests-stopped.json names those."""
    from benchmarks import guarded_pytest

    watchdog_s = TEST_WATCHDOG_S[not (ctx.quick or ctx.dry_run)]
    rounds = guarded_pytest.run_rounds(lambda junit: _pytest_command(ctx, junit), ctx.work, watchdog_s,
                                       MAX_TEST_ROUNDS)
    guarded_pytest.write_stopped(rounds.stopped, watchdog_s, ctx.work / "tests-stopped.json")
    if rounds.junits or rounds.stopped:
        guarded_pytest.merge_junit(rounds, watchdog_s, ctx.work / "junit.xml")
    if rounds.interrupted:
        return 130
    return 1 if rounds.stopped else rounds.code


def step_peers(ctx: Context) -> int:
    site = ctx.work / "site"
    wheels = sorted(ctx.peers.glob("*.whl")) if ctx.peers.is_dir() else []
    installed = None
    if wheels:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                               "--disable-pip-version-check", "--target", str(site), *map(str, wheels)])
        installed = done.returncode == 0
        print(f"pip install --no-deps {' '.join(w.name for w in wheels)}: {'ok' if installed else 'failed'}")
    else:
        print(f"no wheels in {ctx.peers}: peers are measured only where already installed")
    import importlib.metadata

    importlib.invalidate_caches()  # site/ was empty when this process started
    peers = {}
    for distribution, module in {**PEERS, **CARRIED_BUILD_DEPENDENCIES}.items():
        try:
            importlib.import_module(module)
            peers[distribution] = {"version": importlib.metadata.version(distribution), "reason": None}
        except Exception as error:  # ImportError, or a peer that breaks on import
            peers[distribution] = {"version": None, "reason": f"not importable ({type(error).__name__}: {error})"}
        print(f"{distribution}: {peers[distribution]['version'] or peers[distribution]['reason']}")
    (ctx.work / "peers.json").write_text(json.dumps({"wheels": [w.name for w in wheels], "installed": installed,
                                                     "peers": peers}))
    return 0 if installed in (None, True) else 1


def _smallest_per_direction(cases: list) -> list:
    smallest = {}
    for case in cases:
        if case.direction not in smallest or case.sweep < smallest[case.direction].sweep:
            smallest[case.direction] = case
    return list(smallest.values())


def step_benchmark(ctx: Context, op: str) -> int:
    """The op's sweep, each result appended to bench-<op>.jsonl as it is measured."""
    from benchmarks import report, suite
    from benchmarks.__main__ import OPS

    module, device = OPS[op], _device()
    cases = module.cases(device, ctx.quick or ctx.dry_run)
    if ctx.dry_run:  # the machinery end to end, not numbers: the least that exercises it
        cases = _smallest_per_direction(cases)
        suite.time_call = functools.partial(suite.time_call, budget_ms=10)
    providers = module.providers(device)
    results = []
    with (ctx.work / f"bench-{op}.jsonl").open("w") as sink:
        meta = {"baseline": module.BASELINE, "sweep_name": module.SWEEP_NAME, "memory_panel": module.MEMORY_PANEL,
                "planned": len(cases) * len(providers), "device": str(device)}
        sink.write(json.dumps(meta) + "\n")
        for case in cases:
            for provider in providers:
                try:
                    result = suite.measure_case(case, provider, device)
                except Exception as error:  # a peer failing its own way must not end the sweep
                    dtype = str(case.dtype).removeprefix("torch.")
                    result = suite.Result(case.op, case.direction, dtype, case.shape, case.sweep,
                                          case.panel or f"{case.direction}, {dtype}", provider.name,
                                          skipped=f"failed: {type(error).__name__}: {str(error)[:160]}")
                results.append(result)
                sink.write(json.dumps(result.as_json()) + "\n")
                sink.flush()
                print(f"  {case.panel} {case.shape} {provider.name}: "
                      + (f"skipped ({result.skipped})" if result.skipped else f"{result.median_ms * 1e3:.1f} us"),
                      flush=True)
        exponents = report.memory_exponents(results, module.MEMORY_PANEL) if module.MEMORY_PANEL else {}
        sink.write(json.dumps({"memory_exponents": exponents}) + "\n")
    print(report.table(results, module.BASELINE, None))
    return 0


def step_cuda_build(ctx: Context) -> int:
    from seqops import _ext

    sources = [path.relative_to(_ext.CSRC).as_posix() for path in _ext.compiled_sources()]
    print(f"{len(sources)} translation units; CUTLASS headers: {_ext.cutlass_include() or 'not installed'}")
    if ctx.dry_run:  # no GPU to run it on, and CI builds it in tests/test_cuda_build.py
        print("dry run: not built; it would be, for", ", ".join(_ext.target_archs()), "from", ", ".join(sources))
        return 0
    store = _ext.object_store()

    def stored() -> int:
        return len(list(store.glob("*.o"))) if store.is_dir() else 0

    before = stored()
    print(f"object store {store}: {before} objects before the build")
    start = time.monotonic()
    try:
        module = _ext.load()
    except _ext.ExtensionUnavailable as error:
        print(error)
        return 1
    print(f"loaded in {time.monotonic() - start:.0f} s, {stored() - before} objects compiled (the rest of those "
          "linked came from the store); attention instances:",
          [(i["head_dim"], i["dtype"], i["arch"]) for i in module.attention_forward_instances()])
    problem = _ext.runtime_problem(module)
    print(problem or "its CUDA runtime sees the GPU")
    return 1 if problem else 0


def step_host_profile(ctx: Context) -> int:
    from benchmarks import host_profile

    results = host_profile.run(_device(), small=ctx.quick or ctx.dry_run)
    with (ctx.work / "host_profile.jsonl").open("w") as sink:
        for result in results:
            sink.write(json.dumps(result.as_json()) + "\n")
    return 0


def step_overhead(ctx: Context) -> int:
    from benchmarks import overhead

    results = overhead.run(_device(), ctx.quick or ctx.dry_run, seconds=0.05 if ctx.dry_run else None)
    with (ctx.work / "overhead.jsonl").open("w") as sink:
        sink.write(json.dumps({"baseline": overhead.BASELINE, "seqops_provider": overhead.SEQOPS,
                               "overhead_provider": overhead.OVERHEAD, "target_us": overhead.TARGET_US}) + "\n")
        for result in results:
            sink.write(json.dumps(result.as_json()) + "\n")
    return 0


# The examples the step trains (examples/<name>.py), and its steps: a full-size step takes
# seconds on a GPU; the quick check times a few.
EXAMPLE_RUNS = ("gpt", "char_lstm")
EXAMPLE_STEPS = {"full": 60, "quick": 8, "dry-run": 2}


def step_examples(ctx: Context) -> int:
    """Each example's torch model and seqops twin, alternating steps: median time of a step
    and the most memory a step allocated (bf16 autocast on a GPU), and the losses."""
    import torch

    sys.path.insert(0, str(ROOT / "examples"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with (ctx.work / "examples.jsonl").open("w") as sink:
        for name in EXAMPLE_RUNS:
            argv = ["--device", device, "--quiet", "--steps", str(EXAMPLE_STEPS[ctx.mode])]
            argv += ["--full", "--dtype", "bfloat16"] if not ctx.dry_run else []
            # The Triton kernels, which `auto` ranks below torch's on CUDA until they are faster.
            argv += ["--backend", "triton"] if device == "cuda" else []
            runs = dict(zip(("torch", "seqops"), importlib.import_module(name).main(argv)))
            for provider, run in runs.items():
                sink.write(json.dumps({
                    "example": name, "provider": provider, "device": device, "size": "small" if ctx.dry_run else "full",
                    "steps": len(run.losses), "median_ms": run.seconds_per_step * 1e3,
                    "step_peak_mib": None if run.step_peak_bytes is None else run.step_peak_bytes / 2**20,
                    "first_loss": run.losses[0], "last_loss": run.losses[-1]}) + "\n")
                sink.flush()
    return 0


# --------------------------------------------------------------------------- kernel calls (under the sanitizer)

# The kernel backends each call runs on: Triton always; the CUDA C++ kernels (none of
# which had run on a GPU when this was written) for the calls they take, on a GPU only.
TRITON_AND_CUDA = ("triton", "cuda")
# The attention calls run on the CUDA backend's forward kernels both: its default one (the
# wgmma/TMA kernel on compute capability 9.0) and its sm80 variant (backend:variant); and
# on its ordered-dQ backward (the five-product one, whose key blocks take turns).
ATTENTION_BACKENDS = ("triton", "cuda", "cuda:sm80", "cuda:ordered_dq")


def _kernel_call_cases(device) -> list[tuple[str, Callable, bool, tuple[str, ...]]]:
    """(name, make, compare, backends): make() -> (inputs, run() -> outputs), differentiated
    where an input requires grad; compare: whether each backend's results must match the
    torch backend's (not with dropout, whose random mask differs between backends).
    Lengths are no multiple of any block; smaller where the kernels are interpreted on
    the CPU, which is slow."""
    import torch

    import seqops
    from seqops.kernels.softmax import MAX_ONE_PASS_COLS

    L, S, D = (37, 53, 64) if device.type == "cuda" else (9, 13, 16)
    steps = 6 if device.type == "cuda" else 3

    def leaf(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    def softmax_one_pass():
        x = leaf(2, 40, 300, dtype=torch.float16)
        return [x], lambda: [seqops.softmax(x, -1, scale=0.5, causal=True)]

    def softmax_online():
        x = leaf(2, MAX_ONE_PASS_COLS + 5)
        keep = torch.rand(MAX_ONE_PASS_COLS + 5, device=device) > 0.3
        keep[0] = True
        return [x], lambda: [seqops.softmax(x, -1, mask=keep)]

    def attention_causal():
        q, k, v = (leaf(1, 2, length, D, dtype=torch.bfloat16) for length in (L, S, S))
        return [q, k, v], lambda: [seqops.scaled_dot_product_attention(q, k, v, is_causal=True)]

    def attention_float_mask_dropout():
        q, k, v = (leaf(1, 2, length, D, dtype=torch.bfloat16) for length in (L, S, S))
        mask = leaf(1, 1, L, S, dtype=torch.bfloat16)
        return [q, k, v, mask], lambda: [seqops.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.1)]

    def attention_bool_mask_gqa():
        q, k, v = (leaf(1, heads, length, D, dtype=torch.bfloat16) for heads, length in ((4, L), (2, S), (2, S)))
        keep = torch.rand(L, S, device=device) > 0.3
        keep[:, 0] = True
        return [q, k, v], lambda: [seqops.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)]

    def attention_decode_gqa():
        # At most 16 queries a head against a longer cache: Triton's decode variant (split
        # keys, a GQA group's heads packed), the CUDA backend's split-KV forward.
        q = leaf(1, 4, 3, D, dtype=torch.bfloat16)
        k, v = (leaf(1, 2, 8 * S, D, dtype=torch.bfloat16) for _ in range(2))
        return [q, k, v], lambda: [seqops.scaled_dot_product_attention(q, k, v, enable_gqa=True)]

    def additive_attention():
        query, keys, values = leaf(2, 5, 12), leaf(2, S, 10), leaf(2, S, 14)
        weights = [leaf(16, 12), leaf(16, 10), leaf(16), leaf(16), leaf(16)]
        return [query, keys, values, *weights], lambda: [
            seqops.additive_attention(query, keys, values, *weights, need_weights=True)[0]]

    def lstm_cell():
        x, h, c = leaf(3, 10), leaf(3, 20), leaf(3, 20)
        weights = [leaf(80, 10), leaf(80, 20), leaf(80), leaf(80)]
        return [x, h, c, *weights], lambda: list(seqops.lstm_cell(x, (h, c), *weights))

    def attention_forward_only():
        q, k, v = (torch.randn(1, 2, length, D, device=device, dtype=torch.bfloat16) for length in (L, S, S))
        return [q, k, v], lambda: [seqops.scaled_dot_product_attention(q, k, v, is_causal=True)]

    def gru_cell():
        x, h = leaf(3, 10), leaf(3, 20)
        weights = [leaf(60, 10), leaf(60, 20), leaf(60), leaf(60)]
        return [x, h, *weights], lambda: [seqops.gru_cell(x, h, *weights)]

    def lstm_layer(proj_size=0):
        lstm = seqops.nn.LSTM(10, 20, bidirectional=True, proj_size=proj_size).to(device)
        x = leaf(steps, 3, 10)

        def run():
            output, (h_n, c_n) = lstm(x)
            return [output, h_n, c_n]

        return [x, *lstm.parameters()], run

    def hidden_layer(module):
        module = module.to(device)
        x = leaf(steps, 3, 10)

        def run():
            output, h_n = module(x)
            return [output, h_n]

        return [x, *module.parameters()], run

    return [
        ("softmax one-pass forward+backward (fp16, scale, causal)", softmax_one_pass, True, TRITON_AND_CUDA),
        ("softmax online forward+backward (fp32, bool mask)", softmax_online, True, TRITON_AND_CUDA),
        ("attention forward+backward (bf16, causal, L != S)", attention_causal, True, ATTENTION_BACKENDS),
        ("attention forward (bf16, causal, L != S, no grad)", attention_forward_only, True, ATTENTION_BACKENDS),
        ("attention forward+backward (bf16, float mask with gradient, dropout 0.1)", attention_float_mask_dropout,
         False, ATTENTION_BACKENDS),
        ("attention forward+backward (bf16, bool mask, grouped-query heads)", attention_bool_mask_gqa, True,
         ATTENTION_BACKENDS),
        ("lstm_cell forward+backward (fp32)", lstm_cell, True, TRITON_AND_CUDA),
        ("gru_cell forward+backward (fp32)", gru_cell, True, TRITON_AND_CUDA),
        ("LSTM layer forward+backward (fp32, bidirectional; each backend's sequence kernels)", lstm_layer, True,
         TRITON_AND_CUDA),
        ("LSTM layer forward+backward (fp32, bidirectional, proj_size 7; each backend's sequence kernels)",
         lambda: lstm_layer(proj_size=7), True, TRITON_AND_CUDA),
        ("GRU layer forward+backward (fp32, bidirectional; each backend's sequence kernels)",
         lambda: hidden_layer(seqops.nn.GRU(10, 20, bidirectional=True)), True, TRITON_AND_CUDA),
        ("RNN layer forward+backward (fp32, tanh, bidirectional; each backend's sequence kernels)",
         lambda: hidden_layer(seqops.nn.RNN(10, 20, bidirectional=True)), True, TRITON_AND_CUDA),
        ("attention decode forward+backward (bf16, 3 queries, 8x the keys, grouped-query heads)",
         attention_decode_gqa, True, ATTENTION_BACKENDS),
        ("additive attention forward+backward (fp32, need_weights)", additive_attention, True, ("triton",)),
    ]


def kernel_calls(only_backends: Optional[tuple[str, ...]] = None) -> int:
    """One small call of each kernel, forward and backward, on the GPU (or, Triton's only,
    under TRITON_INTERPRET=1 on the CPU), each checked loosely against the torch backend;
    only on `only_backends` (names as in the cases, e.g. "cuda:sm80") when given.
    Prints `kernel call <name> [<backend>]: ok ...` or `... FAILED ...`; returns the failures."""
    import torch

    import seqops

    device = _device()
    print(f"kernel calls on {device} (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')})", flush=True)
    failures = 0
    for index, (name, make, compare, backends) in enumerate(_kernel_call_cases(device)):
        backends = [b for b in backends if (not b.startswith("cuda") or device.type == "cuda")
                    and (only_backends is None or b in only_backends)]
        if not backends:
            continue
        torch.manual_seed(index)
        inputs, run = make()
        outputs = {}
        for backend in (*backends, "torch") if compare else backends:
            try:
                torch.manual_seed(1000 + index)
                backend_name, _, variant = backend.partition(":")  # "cuda:sm80": that backend's variant
                with seqops.backend(backend_name, variant=variant or None):
                    produced = run()
                    wanted = [t for t in inputs if t.requires_grad]
                    cotangents = [torch.randn_like(t) for t in produced]
                    grads = torch.autograd.grad(produced, wanted, cotangents, allow_unused=True) if wanted else ()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                outputs[backend] = [t for t in (*produced, *grads) if t is not None]
            except Exception as error:
                outputs[backend] = error
        for backend in backends:
            label = f"kernel call {name} [{backend}]"
            try:
                if isinstance(outputs[backend], Exception):
                    raise outputs[backend]
                worst = 0.0
                if compare:
                    if isinstance(outputs["torch"], Exception):
                        raise outputs["torch"]
                    for got, want in zip(outputs[backend], outputs["torch"]):
                        got, want = got.double().nan_to_num(), want.double().nan_to_num()
                        worst = max(worst, ((got - want).norm() / want.norm().clamp_min(1e-30)).item())
                tolerance = 5e-2 if any(t.dtype in (torch.float16, torch.bfloat16) for t in inputs) else 1e-2
                if worst > tolerance:
                    raise AssertionError(f"relative difference to the torch backend {worst:.2e} > {tolerance:g}")
                print(f"{label}: ok" + (f" (relative difference to torch {worst:.1e})" if compare else ""), flush=True)
            except Exception as error:
                failures += 1
                print(f"{label}: FAILED {type(error).__name__}: {str(error).splitlines()[0][:300]}", flush=True)
    return failures


# --------------------------------------------------------------------------- main

def _select(every: list[Step], only: Optional[str], skip: Optional[str], parser) -> list[Step]:
    names = [step.name for step in every]
    wanted = only.split(",") if only else names
    unwanted = skip.split(",") if skip else []
    unknown = [name for name in wanted + unwanted if name not in names]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; the steps are {', '.join(names)}")
    return [step for step in every if step.name in wanted and step.name not in unwanted]


def _child_env(ctx: Context) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if ctx.dry_run:  # CI's few shared cores: intra-op threads would only fight each other
        env["OMP_NUM_THREADS"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)  # on a GPU the kernels are compiled, never interpreted
    # Peers installed by the peers step land in work/site, made now: a folder missing when
    # a process starts stays invisible to its imports.
    (ctx.work / "site").mkdir(exist_ok=True)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ctx.work / "site"), env.get("PYTHONPATH")]))
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes, one dtype, the cuda tests: under 8 minutes on an H100")
    parser.add_argument("--dry-run", action="store_true", help="no GPU needed: every step at its smallest size")
    parser.add_argument("--out", type=Path, help="output folder (default: $OUT, else benchmarks/results/<device>/)")
    parser.add_argument("--steps", help="comma-separated steps to run (default: all)")
    parser.add_argument("--skip", help="comma-separated steps to leave out")
    parser.add_argument("--time-limit", type=float,
                        help=f"seconds for all steps (default {QUICK_TIME_LIMIT_S} with --quick, else none)")
    parser.add_argument("--peers", type=Path, default=ROOT / ".peers",
                        help="folder of peer wheels to install first (default .peers/)")
    parser.add_argument("--list", action="store_true", help="list the steps and their budgets, and stop")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--kernel-calls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kernel-call-backends", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.kernel_calls:
        only = tuple(args.kernel_call_backends.split(",")) if args.kernel_call_backends else None
        return 1 if kernel_calls(only) else 0
    if args.step:
        ctx = Context(args.quick, args.dry_run, args.work, args.peers)
        if args.step.startswith("bench-"):
            return step_benchmark(ctx, args.step.removeprefix("bench-"))
        return {"environment": step_environment, "peers": step_peers, "tests": step_tests, "overhead": step_overhead,
                "host-profile": step_host_profile, "cuda-build": step_cuda_build,
                "examples": step_examples}[args.step](ctx)

    every = steps()
    if args.list:
        for step in every:
            print(f"{step.name:16s} {step.quick_s:5.0f} s quick, {step.full_s:5.0f} s full  {step.what}")
        return 0
    selected = _select(every, args.steps, args.skip, parser)
    work = Path(tempfile.mkdtemp(prefix="seqops-gpu-check-"))
    ctx = Context(args.quick, args.dry_run, work, args.peers.resolve())
    ctx.env = _child_env(ctx)
    limit = args.time_limit if args.time_limit is not None else QUICK_TIME_LIMIT_S if args.quick else None
    ctx.deadline, ctx.time_limit_s = (time.monotonic() + limit if limit else None), limit
    explicit_out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    ctx.out = explicit_out.resolve() if explicit_out else None
    if ctx.out is None and "environment" not in {step.name for step in selected}:
        ctx.out = RESULTS / "local" / "unknown-device"
    started = time.monotonic()
    print(f"[gpu_check] {ctx.mode}: {', '.join(s.name for s in selected)}"
          + (f"; time limit {limit:.0f} s" if limit else ""), flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        records = run_steps(selected, ctx, every)
    except KeyboardInterrupt:
        records = ctx.records
        for record in records:
            if record.status == "running":
                record.status, record.detail = "interrupted", "gpu_check was interrupted during this step"
        ctx.out = ctx.out or RESULTS / "local" / "unknown-device"
        write_outputs(ctx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n[gpu_check] {ctx.mode} done in {time.monotonic() - started:.0f} s; wrote {ctx.out}: "
          + ", ".join(sorted(p.name for p in ctx.out.iterdir() if p.name in _output_names())))
    print("\n".join(_markdown_table(["step", "status", "seconds", "result"],
                                    [[r.name, r.status, f"{r.seconds:.0f}", r.detail] for r in records])))
    if ctx.results.get("overhead"):
        print("\n" + "\n".join(overhead_table(ctx.results["overhead"])))
    ran = [r for r in records if r.name in {s.name for s in selected}]
    return 0 if all(r.status == "passed" for r in ran) else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _output_names() -> set[str]:
    return {"results.json", "summary.md", "log.txt", "junit.xml", *(f"{op}.png" for op in BENCH_OPS)}


if __name__ == "__main__":
    sys.exit(main())
