"""The committed static report (benchmarks/results/static/triton_kernels.{json,md}): what
each recorded launch compiled to for each arch, filed under Triton's own compile-cache
key, and the rules a build must pass."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from ..kernel_launches import Build, RecordedLaunch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "static" / "triton_kernels.json"
MARKDOWN = RESULTS.with_suffix(".md")
COMMAND = "python -m benchmarks.static_report --write"

# Attention kernels whose dots must run on Hopper's warpgroup MMA: 16-bit operands and a
# tile of at least one warpgroup's 64 rows (Triton issues wgmma only from BLOCK_M = 64,
# over 4 warps or a multiple; fp32 dots run on FMA units on every arch).
WGMMA_KERNELS = ("attention_forward_kernel", "attention_backward_dkdv_kernel", "attention_backward_dq_kernel",
                 "attention_backward_fused_kernel")
WGMMA_MIN_BLOCK_M = 64

# Recurrent kernels whose gate products must run on tensor cores (mma.sync, or wgmma):
# with 16-bit weights, and with fp32 ones when TF32 is on (torch's fp32 matmul precision
# "high"); exact fp32 products run on FMA units.
TENSOR_CORE_KERNELS = ("lstm_step_forward_kernel", "lstm_step_backward_kernel", "lstm_sequence_forward_kernel",
                       "lstm_sequence_backward_kernel", "gru_step_forward_kernel", "gru_step_backward_kernel",
                       "rnn_step_forward_kernel", "rnn_step_backward_kernel", "hidden_sequence_forward_kernel",
                       "hidden_sequence_backward_kernel")

# Fixed launches known to spill, by kernel: (which launches, why they are let through).
# Each is listed as KNOWN-SPILL in the report, never as ok; a spill of any other fixed
# launch fails the check.
KNOWN_SPILLS: dict = {
    # None today. The additive attention backward's (fp32 values wider than 64 columns in
    # the query-block kernel, 3.8-5 KB; the weights' gradient in the key-block kernel,
    # ~0.9 KB) went with chunked dO . values and the wide tiles (kernels/additive/tiles.py).
}


class Entry:
    """One launch compiled for one arch: the launch, its build and where the build came
    from (the committed report, or compiled now)."""

    def __init__(self, launch: RecordedLaunch, arch: int, key: str, build: Build, recorded: bool):
        self.launch, self.arch, self.key, self.build, self.recorded = launch, arch, key, build, recorded

    def label(self) -> str:
        return f"sm_{self.arch} {self.launch.describe()}"

    def verdict(self) -> str:
        """ok; spills (an autotuned kernel's tile: one its autotuner may time and drop);
        SPILLS (a fixed launch: slow on every call); KNOWN-SPILL (one of KNOWN_SPILLS);
        NO-WGMMA; FAILED."""
        build = self.build
        if build.error:
            return "FAILED"
        if build.spilled_bytes:
            return "spills" if self.launch.autotuned else "KNOWN-SPILL" if self.known_spill() else "SPILLS"
        if self.needs_wgmma() and not build.instructions.get("wgmma"):
            return "NO-WGMMA"
        if self.needs_tma() and not build.instructions.get("tma"):
            return "NO-TMA"
        if self.needs_tensor_cores() and not (build.instructions.get("mma_sync") or build.instructions.get("wgmma")):
            return "NO-MMA"
        return "ok"

    def known_spill(self) -> Optional[str]:
        """Why this launch is let spill (KNOWN_SPILLS), or None."""
        name = self.launch.kernel.fn.__name__
        if name not in KNOWN_SPILLS:
            return None
        applies, reason = KNOWN_SPILLS[name]
        return reason if applies(self.launch.constants(), list(self.launch.signature.values())) else None

    def needs_wgmma(self) -> bool:
        launch = self.launch
        constants = launch.constants()
        return (self.arch == 90 and launch.kernel.fn.__name__ in WGMMA_KERNELS and self.sixteen_bit()
                and constants.get("BLOCK_M", 0) >= WGMMA_MIN_BLOCK_M and launch.options.get("num_warps", 4) % 4 == 0)

    def sixteen_bit(self) -> bool:
        """Whether an attention launch's q is fp16 or bf16 (its dots on tensor cores)."""
        return self.launch.signature.get("q_ptr") in ("*fp16", "*bf16")

    def needs_tensor_cores(self) -> bool:
        """A recurrent launch with 16-bit weights, or fp32 ones and TF32 on."""
        launch = self.launch
        if launch.kernel.fn.__name__ not in TENSOR_CORE_KERNELS:
            return False
        return launch.signature.get("w_hh_ptr") in ("*fp16", "*bf16") or launch.constants().get("TF32") is True

    def needs_tma(self) -> bool:
        """A launch with TENSOR_DESCRIPTORS on must load through TMA on sm_90
        (cp.async.bulk.tensor): without it, the compiler fell back to ordinary loads."""
        return self.arch == 90 and self.launch.constants().get("TENSOR_DESCRIPTORS") is True

    def failed(self) -> bool:
        return self.verdict() in ("FAILED", "SPILLS", "NO-WGMMA", "NO-TMA", "NO-MMA")

    def record(self) -> dict:
        launch, build = self.launch, self.build
        return {"key": self.key, "arch": self.arch, "kernel": launch.kernel.fn.__name__,
                "module": launch.module_name, "dtypes": [v for k, v in launch.signature.items() if k.endswith("_ptr")],
                "constants": {k: v for k, v in launch.constants().items() if isinstance(v, (bool, int, float, str))},
                "options": launch.options, "autotuned": launch.autotuned, "registers": build.registers,
                "spilled_bytes": build.spilled_bytes, "shared_bytes": build.shared_bytes,
                "instructions": build.instructions, "error": build.error}


def load_builds(path: Path = RESULTS) -> dict[str, Build]:
    """{key: build} of the committed report (empty when there is none)."""
    if not path.exists():
        return {}
    return {record["key"]: Build(record["registers"], record["spilled_bytes"], record["shared_bytes"],
                                 record["instructions"], record["error"])
            for record in json.loads(path.read_text())["builds"]}


def write(entries: list[Entry], source_commit: Optional[str], path: Path = RESULTS, markdown: Path = MARKDOWN):
    import triton

    meta = {"command": COMMAND, "triton": triton.__version__, "source_commit": source_commit}
    path.write_text(json.dumps({**meta, "builds": [entry.record() for entry in entries]}, indent=1) + "\n")
    markdown.write_text(render_markdown(entries, meta))


def _tile(entry: Entry) -> str:
    """The tile sizes and the flags that are on, e.g. `CAUSAL BLOCK_M=64 BLOCK_N=64`."""
    constants = entry.launch.constants()
    flags = [name for name, value in constants.items() if name.isupper() and value is True]
    return " ".join(flags + [f"{name}={value}" for name, value in constants.items() if name.startswith("BLOCK")])


def render_markdown(entries: Iterable[Entry], meta: dict) -> str:
    lines = [
        "# Static report: every Triton launch seqops makes, compiled without a GPU",
        "",
        f"Generated by `{meta['command']}` (Triton {meta['triton']}, from commit {meta['source_commit'] or 'unknown'}). "
        "Each launch the launchers make over benchmarks/static_report/drivers.py's inputs (of an autotuned kernel, "
        "its tile with the most elements a thread), compiled for sm_80 and sm_90 and passed through ptxas. "
        "Instruction counts are static counts in the PTX. CI (tests/test_triton_compile.py) fails on a build that "
        "does not compile, a fixed launch that spills, a 16-bit attention tile of 64+ rows without wgmma on sm_90, "
        "a launch reading through tensor descriptors (TENSOR_DESCRIPTORS) without TMA loads on sm_90, "
        "or a recurrent launch whose gate products should run on tensor cores (16-bit weights, or fp32 ones with "
        "TF32 on) without mma.sync or wgmma.",
        "",
        "| kernel | arch | dtypes | tile and flags | warps | stages | registers | spilled B | shared KiB "
        "| wgmma | mma.sync | TMA | cp.async | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in sorted(entries, key=lambda e: (e.launch.kernel.fn.__name__, e.launch.describe(), e.arch)):
        build, options = entry.build, entry.launch.options
        counts = [build.instructions.get(name, 0) for name in ("wgmma", "mma_sync", "tma", "cp_async")]
        dtypes = ",".join(sorted({v.lstrip("*") for k, v in entry.launch.signature.items() if k.endswith("_ptr")}))
        lines.append(f"| {entry.launch.kernel.fn.__name__} | sm_{entry.arch} | {dtypes} | {_tile(entry)} "
                     f"| {options.get('num_warps', 4)} | {options.get('num_stages', '')} | {build.registers} "
                     f"| {build.spilled_bytes} | {build.shared_bytes / 1024:.1f} | " + " | ".join(map(str, counts))
                     + f" | {entry.verdict()} |")
    lines += modelled_forward(entries)
    lines += modelled_dq_turns(entries)
    lines += modelled_softmax_traffic()
    if KNOWN_SPILLS:
        lines += ["", "Fixed launches let spill (KNOWN-SPILL above; report.KNOWN_SPILLS):", ""]
        lines += [f"- `{name}`: {reason}" for name, (_, reason) in KNOWN_SPILLS.items()]
    else:
        lines += ["", "No fixed launch is let spill (report.KNOWN_SPILLS is empty)."]
    return "\n".join(lines) + "\n"


def modelled_forward(entries: Iterable[Entry]) -> list[str]:
    """The markdown section of the attention forward's modelled time (model.py) on the GPU
    whose ceilings are committed, for each sm_90 16-bit plain launch (no mask, no dropout)
    whose head dim fills its tile, at the FA3 paper's shapes (L = S = 8192)."""
    from .model import fa3_shape, measured_device, predict

    device = measured_device()
    lines = [
        "", f"## Modelled attention forward on an {device.name} (benchmarks/static_report/model.py)", "",
        f"Ceilings measured there ({device.source}): bf16 matmul {device.matmul_tflops:.1f} TFLOP/s, copy "
        f"{device.copy_gb_per_s:.0f} GB/s; {device.multiprocessors} SMs at {device.clock_ghz:.2f} GHz. `serial`: the "
        "block's matrix products, exp2 and other float work one after another (this kernel); `overlapped`: softmax "
        "hidden behind the other warpgroup's matrix products (FA3's ping-pong, not written). x roofline: modelled "
        "time over the matrix-rate floor. A model, not a measurement: GPU figures are in benchmarks/results/<device>/.",
        "",
        "| dtype | tile and flags | warps | registers | shared KiB | CTAs/SM | shape | block us (mma, exp, other) "
        "| serial TFLOP/s | x roofline | overlapped TFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in sorted(entries, key=lambda e: e.launch.describe()):
        constants, build = entry.launch.constants(), entry.build
        if (entry.arch != 90 or entry.launch.kernel.fn.__name__ != "attention_forward_kernel" or build.error
                or not entry.sixteen_bit()
                or constants.get("MASK_KIND") or constants.get("DROPOUT") or constants.get("INT64_OFFSETS")
                or constants.get("HEAD_DIM") != constants.get("BLOCK_D")):
            continue
        shape = fa3_shape(constants["HEAD_DIM"], bool(constants.get("CAUSAL")))
        warps = entry.launch.options.get("num_warps", 4)
        args = (device, shape, constants["BLOCK_M"], constants["BLOCK_N"], warps, build.registers, build.shared_bytes)
        serial, overlapped = predict(*args), predict(*args, overlapped=True)
        if serial is None:
            continue
        dtype = entry.launch.signature["q_ptr"].lstrip("*")
        lines.append(f"| {dtype} | {_tile(entry)} | {warps} | {build.registers} | {build.shared_bytes / 1024:.1f} "
                     f"| {serial.ctas_per_sm} | {shape.label()} | {', '.join(f'{t:.2f}' for t in serial.block_us)} "
                     f"| {serial.tflops:.0f} | {serial.roofline_ratio:.2f} | {overlapped.tflops:.0f} |")
    return lines


# The shapes the dQ turns are modelled at: FA3's 2 x 16 heads, at two lengths.
TURNS_HEADS, TURNS_LENGTHS = 32, (1024, 4096)


def modelled_dq_turns(entries: Iterable[Entry]) -> list[str]:
    """The markdown section of what the fused backward's dQ turns cost (turns_model.py),
    for each sm_90 16-bit plain launch of it whose head dim fills its tile, on as many
    slots as the committed GPU's SMs and the build's CTAs an SM give."""
    from .model import ctas_per_sm, measured_device
    from .turns_model import predict_turns

    device = measured_device()
    lines = [
        "", "## Modelled cost of the fused attention backward's dQ turns (benchmarks/static_report/turns_model.py)",
        "",
        f"Programs in ticket order on {device.multiprocessors} SMs x CTAs an SM, one time unit a tile; efficiency: "
        "the time of the same programs running free (as with atomic dQ adds, not deterministic) over the time with "
        f"turns. {TURNS_HEADS} (batch x heads) at L = S. A model, not a measurement.",
        "",
        "| dtype | tile and flags | warps | CTAs/SM | " + " | ".join(f"efficiency at L = {length}"
                                                            for length in TURNS_LENGTHS) + " |",
        "|---|---|---|---|" + "---|" * len(TURNS_LENGTHS),
    ]
    for entry in sorted(entries, key=lambda e: e.launch.describe()):
        constants, build = entry.launch.constants(), entry.build
        if (entry.arch != 90 or entry.launch.kernel.fn.__name__ != "attention_backward_fused_kernel" or build.error
                or not entry.sixteen_bit() or constants.get("MASK_KIND") or constants.get("DROPOUT")
                or constants.get("INT64_OFFSETS") or constants.get("HEAD_DIM") != constants.get("BLOCK_D")):
            continue
        warps = entry.launch.options.get("num_warps", 4)
        ctas = ctas_per_sm(device, warps, build.registers, build.shared_bytes)
        if not ctas:
            continue
        efficiencies = [predict_turns(TURNS_HEADS, length, constants["BLOCK_M"], constants["BLOCK_N"],
                                      device.multiprocessors * ctas, bool(constants.get("CAUSAL"))).efficiency
                        for length in TURNS_LENGTHS]
        dtype = entry.launch.signature["q_ptr"].lstrip("*")
        lines.append(f"| {dtype} | {_tile(entry)} | {warps} | {ctas} | "
                     + " | ".join(f"{e:.2f}" for e in efficiencies) + " |")
    return lines


# The softmax widths the traffic is modelled at, on as many rows as an H100 has SMs x 8.
SOFTMAX_WIDTHS, SOFTMAX_ROWS = (1024, 16384, 16385, 65536, 131072, 262144, 1 << 20, 1 << 23), 1056


def modelled_softmax_traffic() -> list[str]:
    """The markdown section of the softmax forward's and backward's device-memory traffic
    by width (softmax_model.py), on the L2 the launchers assume without a GPU."""
    from seqops.kernels.softmax import rows
    from .model import measured_device
    from .softmax_model import backward_traffic, forward_traffic

    device = measured_device()
    lines = [
        "", "## Modelled device-memory traffic of the softmax (benchmarks/static_report/softmax_model.py)", "",
        f"{SOFTMAX_ROWS} rows, no mask, on an L2 of {rows.DEFAULT_GPU_SIZE[0] >> 20} MiB and "
        f"{rows.DEFAULT_GPU_SIZE[1]} SMs (an H100's or H200's); per "
        "element of each tensor read (forward: x; backward: dy and y): reads from device memory, re-reads served "
        "by L2; writes per element of the output. Programs: at once. A model, not a measurement.",
        "",
        "| pass | dtype | width | plan | programs | DRAM reads | L2 re-reads | writes | programs >= SMs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for direction, traffic in (("forward", forward_traffic), ("backward", backward_traffic)):
        for dtype, size in (("fp32", 4), ("bf16", 2)):
            for width in SOFTMAX_WIDTHS:
                t = traffic(SOFTMAX_ROWS, width, size, size)
                kind = "one pass" if t.one_pass else f"online, {t.splits} parts a row" if t.splits > 1 else "online"
                lines.append(f"| {direction} | {dtype} | {width} | {kind} | {t.programs} "
                             f"| {t.dram_reads:g} | {t.l2_reads:g} | {t.writes:g} "
                             f"| {'yes' if t.programs >= device.multiprocessors else 'no'} |")
    return lines
