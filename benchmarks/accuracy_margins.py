"""How close the test suite's accuracy checks come to the error rule, over the logs of one
or more runs (SEQOPS_ACCURACY_LOG, tests/accuracy.py): for each check (test and result),
the largest share of the allowed error it used and in how many runs. A share near 1 is a
check that some seed could fail; the sweep of issue 14 looks for those.

    python -m benchmarks.accuracy_margins LOG [LOG ...] [--top 25] [--above 0.8]

Each LOG holds the lines of one run (one seed); this reads them, nothing is run. CPU
figures of the interpreter and torch's CPU ops: they say nothing of a GPU's rounding."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Check:
    """One check over the runs: its largest share, in which run, and every run's largest."""

    worst: float = 0.0
    worst_run: str = ""
    per_run: dict[str, float] = field(default_factory=dict)


def read_logs(paths: list[Path]) -> dict[tuple[str, str], Check]:
    """(test, result) -> Check, over the logs; a run is named by its log's file name. A
    check repeated within one run (pooled trials, loops) counts by its largest share."""
    checks: dict[tuple[str, str], Check] = {}
    for path in paths:
        run = path.name
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            test, result, share = parts[0], parts[1], float(parts[2])
            check = checks.setdefault((test, result), Check())
            check.per_run[run] = max(share, check.per_run.get(run, 0.0))
            if share > check.worst:
                check.worst, check.worst_run = share, run
    return checks


def summary(checks: dict[tuple[str, str], Check], top: int, above: float) -> str:
    runs = {run for check in checks.values() for run in check.per_run}
    ranked = sorted(checks.items(), key=lambda item: -item[1].worst)
    lines = [f"{len(checks)} checks over {len(runs)} runs; share = error / (2 x torch's error + floor), fails above 1",
             f"checks whose largest share is above {above}: {sum(c.worst > above for c in checks.values())}",
             f"checks above 1 (failed): {sum(c.worst > 1 for c in checks.values())}", "",
             "| largest share | runs | in run | test | result |", "|---|---|---|---|---|"]
    for (test, result), check in ranked[:top]:
        lines.append(f"| {check.worst:.3f} | {len(check.per_run)} | {check.worst_run} | {test} | {result} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25, help="how many checks to list, closest to the rule first")
    parser.add_argument("--above", type=float, default=0.8, help="count the checks whose largest share passes this")
    args = parser.parse_args(argv)
    print(summary(read_logs(args.logs), args.top, args.above))


if __name__ == "__main__":
    main()
