"""python -m benchmarks.static_report [--write] [--fresh] [--all-tiles]: see __init__.py."""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys

from seqops.kernels import runtime

from ..kernel_launches import ARCHS, build_key, compile_build, every_config, hungriest_config, record_launches
from . import __doc__ as usage
from .drivers import DRIVERS
from .report import COMMAND, RESULTS, ROOT, Entry, load_builds, write


def _source_commit() -> str | None:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=RESULTS.parent)
    return result.stdout.strip() or None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.static_report", description=usage.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {RESULTS.name} and its markdown table")
    parser.add_argument("--fresh", action="store_true", help="compile every launch, ignoring the committed report")
    parser.add_argument("--all-tiles", action="store_true",
                        help="every tile an autotuner would try, not only the hungriest (slow; implies no --write)")
    parser.add_argument("--jobs", type=int, default=min(len(os.sched_getaffinity(0)), 8), help="compiling processes")
    args = parser.parse_args(argv)
    if runtime.INTERPRETED:
        print("static_report: run without TRITON_INTERPRET (kernels are interpreted here)", file=sys.stderr)
        return 2
    choose = every_config if args.all_tiles else hungriest_config
    launches = [launch for modules, drive in DRIVERS for launch in record_launches(modules, drive, choose)]
    tasks = [launch.build(arch) for launch in launches for arch in ARCHS]
    keys = [build_key(task) for task in tasks]
    known = {} if args.fresh else load_builds()
    missing = [index for index, key in enumerate(keys) if key not in known]
    print(f"{len(tasks)} builds of {len(launches)} launches: {len(tasks) - len(missing)} in the committed report, "
          f"{len(missing)} to compile", flush=True)
    builds = dict(known)
    with concurrent.futures.ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for index, build in zip(missing, pool.map(compile_build, [tasks[i] for i in missing], chunksize=2)):
            builds[keys[index]] = build
    entries = [Entry(launches[index // len(ARCHS)], task.arch, key, builds[key], key in known)
               for index, (task, key) in enumerate(zip(tasks, keys))]
    failures = 0
    for entry in entries:
        failures += entry.failed()
        build = entry.build
        where = "report" if entry.recorded else "compiled"
        detail = build.error or (f"{build.registers} registers, {build.spilled_bytes} bytes spilled, "
                                 f"{build.shared_bytes} B shared, {build.instructions}")
        print(f"{entry.verdict():8} [{where}] {entry.label()}: {detail}")
    if args.write and not args.all_tiles:
        write(entries, _source_commit())
        print(f"wrote {RESULTS} and {RESULTS.with_suffix('.md').name}")
    elif missing:
        print(f"the committed report lacks {len(missing)} builds (kernels changed since it was written): "
              f"`{COMMAND}` and commit {RESULTS.parent.relative_to(ROOT)}/{RESULTS.stem}.*")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
