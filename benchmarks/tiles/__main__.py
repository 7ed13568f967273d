"""python -m benchmarks.tiles {measure,generate}: see benchmarks/tiles/__init__.py."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __doc__ as usage
from .generate import MEASUREMENT, TABLE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiles", description=usage.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    measure = steps.add_parser("measure", help="compile every candidate tile and record the outcome (slow)")
    measure.add_argument("--jobs", type=int, default=2, help="compiling processes (default: 2)")
    measure.add_argument("--archs", type=int, nargs="+", default=[90, 80], help="SM archs (default: 90 80)")
    measure.add_argument("--all-stages", action="store_true",
                         help="every num_stages a kernel is tried at, not only its deepest")
    measure.add_argument("--out", type=Path, default=MEASUREMENT, help=f"default: {MEASUREMENT}")
    measure.add_argument("--kernels", nargs="+", metavar="KERNEL",
                         help="measure only these kernels (tuning names, e.g. backward_fused) and replace their "
                              "builds in the measurement at --out, keeping the others'")
    generate = steps.add_parser("generate", help="write the tile table from the recorded measurement")
    generate.add_argument("--measurement", type=Path, default=MEASUREMENT, help=f"default: {MEASUREMENT}")
    generate.add_argument("--out", type=Path, default=TABLE, help=f"default: {TABLE}")
    args = parser.parse_args(argv)
    if args.step == "measure":
        from . import measure as measuring  # imports triton's compiler: only this step needs it

        if 90 not in args.archs:
            parser.error("--archs must include 90: the table's rule reads sm_90")
        return measuring.main(args.archs, args.jobs, args.all_stages, args.out, args.kernels)
    from . import generate as generating

    return generating.main(args.measurement, args.out)


if __name__ == "__main__":
    sys.exit(main())
