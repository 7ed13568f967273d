"""python -m benchmarks [op ...] [--quick] [--out DIR]

Sweeps sizes for each op over its providers, prints a table, and writes JSON and PNG
plots to benchmarks/results/<device>/ (on the CPU: benchmarks/results/local/<device>/,
which git ignores: CPU timings say nothing about the GPU kernels).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import additive, attention, environment, gru_rnn, lstm, overhead, report, softmax, suite
from .measure import copy_bandwidth_gb_per_s, matmul_tflop_per_s

OPS = {"softmax": softmax, "attention": attention, "lstm": lstm, "gru_rnn": gru_rnn, "additive": additive,
       "overhead": overhead}
RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("ops", nargs="*", default=list(OPS), help=f"ops to benchmark: {', '.join(OPS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a few sizes and one dtype per op")
    parser.add_argument("--out", type=Path, help="where to write JSON and plots (default: by device, see above)")
    args = parser.parse_args(argv)
    unknown = [op for op in args.ops if op not in OPS]
    if unknown:
        parser.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(OPS)}")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = environment.describe(device)
    out = args.out or (RESULTS / environment.device_slug(device) if device.type == "cuda"
                       else RESULTS / "local" / environment.device_slug(device))
    out.mkdir(parents=True, exist_ok=True)
    print(f"device: {env['device']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, "
          f"seqops {env['seqops']} ({env['commit']})")
    if device.type == "cpu":
        print("No GPU here: this is a small CPU sweep of the non-GPU providers. GPU numbers (the fused "
              "kernels) need a GPU; CPU timings say nothing about them.")
    copy_bytes = 2**30 if device.type == "cuda" else 2**27
    ceilings = {"copy_gb_per_s": copy_bandwidth_gb_per_s(device, copy_bytes)}
    if device.type == "cuda":
        ceilings["matmul_tflop_per_s"] = matmul_tflop_per_s(device, 8192)
    print("measured ceilings: " + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items()))

    for name in args.ops:
        module = OPS[name]
        print(f"\n{name}:")
        # An op with its own `run` measures its own way (overhead: paired differences).
        measure = getattr(module, "run", None)
        results = (measure(device, args.quick) if measure else
                   suite.run(module.cases(device, args.quick), module.providers(device), device))
        print()
        print(report.table(results, module.BASELINE, ceilings["copy_gb_per_s"]))
        exponents = {}
        plots = report.plot_throughput(out, name, env["device"], results, module.SWEEP_NAME, ceilings)
        if module.MEMORY_PANEL:
            exponents = report.memory_exponents(results, module.MEMORY_PANEL)
            print(f"\npeak extra memory ~ {module.SWEEP_NAME}^k ({module.MEMORY_PANEL}): "
                  + (", ".join(f"{p} k={k:.2f}" for p, k in exponents.items()) or "not measured here"))
            plots += report.plot_memory(out, name, env["device"], results, module.MEMORY_PANEL, module.SWEEP_NAME,
                                        exponents)
        json_path = out / f"{name}.json"
        report.write_json(json_path, name, env, ceilings, module.BASELINE, results, exponents)
        no_plots = " (no plots: matplotlib is missing)" if any(r.tflop_per_s or r.gb_per_s for r in results) else ""
        print(f"\nwrote {json_path}" + (f" and {len(plots)} plots" if plots else no_plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
