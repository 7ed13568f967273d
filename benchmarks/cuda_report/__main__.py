"""python -m benchmarks.cuda_report [--write] [--fresh] [--jobs N]: see __init__.py."""
from __future__ import annotations

import argparse
import concurrent.futures
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seqops import _ext

from . import __doc__ as usage
from .ptxas_log import ptxas_reports
from .report import COMMAND, RESULTS, ROOT, ObjectBuild, load, write
from .sass import object_instructions

ARCHS = ("80", "90a")


def compile_instance(source: Path, arch: str, nvcc: str, root: Path = _ext.CSRC) -> ObjectBuild:
    """nvcc -c for one arch with ptxas's per-kernel report and the SASS's instruction
    counts; the object is thrown away."""
    relative = source.relative_to(root).as_posix()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        obj = Path(folder) / "instance.o"
        command = [nvcc, "-c", str(source), "-o", str(obj),
                   *_ext.cuda_compile_flags([arch], ptxas_verbose=True, root=root)]
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        instructions = object_instructions(obj) if result.returncode == 0 else None
    log = result.stdout + result.stderr
    if result.returncode != 0:
        return ObjectBuild(relative, arch, seconds, error="\n".join(log.strip().splitlines()[-30:]))
    warnings = [line.strip() for line in log.splitlines() if "ptxas warning" in line]
    return ObjectBuild(relative, arch, seconds, ptxas_reports(log), warnings, instructions=instructions)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cuda_report", description=usage.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {RESULTS.name} and its markdown table")
    parser.add_argument("--fresh", action="store_true", help="compile every instance, ignoring the committed report")
    parser.add_argument("--jobs", type=int, default=None, help="nvcc processes (default: MAX_JOBS, else the CPUs)")
    args = parser.parse_args(argv)
    nvcc = _ext.find_nvcc()
    if nvcc is None:
        print("cuda_report: nvcc is not installed", file=sys.stderr)
        return 2
    instances = [s for s in _ext.compiled_sources() if _ext.is_instance(s)]
    if instances and _ext.cutlass_include() is None:
        print("cuda_report: the CUTLASS headers are not installed (pip install nvidia-cutlass)", file=sys.stderr)
        return 2
    tasks = [(source, arch) for source in instances for arch in ARCHS]
    keys = [_ext.object_key(source, arch, nvcc) for source, arch in tasks]
    known = {} if args.fresh else load()
    missing = [index for index, key in enumerate(keys) if key not in known]
    print(f"{len(tasks)} objects of {len(instances)} instance files: {len(tasks) - len(missing)} in the committed "
          f"report, {len(missing)} to compile", flush=True)
    builds = {key: known[key] for key in keys if key in known}
    with concurrent.futures.ThreadPoolExecutor(args.jobs or _ext.jobs()) as pool:
        compiled = pool.map(lambda index: compile_instance(*tasks[index], nvcc), missing)
        for index, build in zip(missing, compiled):
            builds[keys[index]] = build
    failures = 0
    for key in keys:
        build = builds[key]
        where = "report" if key in known else "compiled"
        problems = build.problems()
        failures += bool(problems)
        kernels = "; ".join(f"{k.name.split('(')[0]} {k.registers} regs {k.shared_bytes} B smem"
                            for k in build.kernels)
        print(f"{'FAILED' if problems else 'ok':6} [{where}] sm_{build.arch} {build.source} "
              f"({build.seconds:.0f} s): {'; '.join(problems) or kernels}")
    if args.write:
        toolchain = {"nvcc": _ext.nvcc_version(nvcc), "nvidia-cutlass": _ext.cutlass_version()}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip() or None
        write(builds, toolchain, commit)
        print(f"wrote {RESULTS} and {RESULTS.with_suffix('.md').name}")
    elif missing:
        print(f"the committed report lacks {len(missing)} objects (instance files changed since it was written): "
              f"`{COMMAND}` and commit {RESULTS.parent.relative_to(ROOT)}/{RESULTS.stem}.*")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
