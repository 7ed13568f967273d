"""A first-order model of the Triton attention forward's time on a Hopper GPU, from what
the static report knows of a compiled launch (tile, warps, registers, shared memory) and
the ceilings measured on the GPU (benchmarks/results/<device>/results.json): a
prediction written down before the GPU measures it, and checked against it afterwards.

Per block of BLOCK_M queries x BLOCK_N keys, one SM spends
  - matrix time: the block's 4 * BLOCK_M * BLOCK_N * head_dim FLOPs (QK^T and PV) at the
    SM's share of the measured bf16 matmul rate (wgmma; the rate a GEMM reaches);
  - exponential time: BLOCK_M * BLOCK_N exp2 at EXP_PER_CLOCK per SM (the special-function
    units: 16 a clock an SM on sm_80 and sm_90);
  - other float time: FP32_OPS_PER_SCORE float ops per score at FP32_PER_CLOCK per SM.
`serial`: the three one after another, as a kernel whose warps all wait on their own matrix
products before their softmax (Triton's loop, without warp specialisation). `overlapped`:
the softmax of one warpgroup hidden behind the other's matrix products (FA3's ping-pong),
the larger of matrix time and the rest: what warp specialisation could reach.
Programs (one per query block) fill CTAS_PER_SM slots of each SM, as many as registers,
shared memory and threads allow, in launch order, each slot running at its share of the
SM; a causal program walks only the key blocks up to its diagonal. Device memory: each
operand read and the output written once at the measured copy rate, overlapped with the
arithmetic (the forward is far from memory bound at these lengths).

Not modelled: masks, dropout, pipeline bubbles, instruction issue limits, the overlap
that asynchronous wgmma gives even without warp specialisation, L2 misses on the re-read
keys and values, and clocks below the maximum under load. So it tells the order of things
and what a change could gain, not the time to the percent: the one measurement there is
(H200, commit 4ba51df, 2x16x8192x128 bf16 non-causal: 454 TFLOP/s, summary.md) came out
4% above `serial`'s 438."""
from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]

EXP_PER_CLOCK = 16
FP32_PER_CLOCK = 128
# Per score, besides the exp2: the scale and max subtraction (one FMA), the row max, the
# row sum, the rounding of P to 16 bits, and the rescale of the accumulator amortised
# over the row (about one op a score at head dims of 64-256 over BLOCK_N columns).
FP32_OPS_PER_SCORE = 5


@dataclass(frozen=True)
class Device:
    name: str
    multiprocessors: int
    clock_ghz: float
    matmul_tflops: float  # measured bf16 GEMM
    copy_gb_per_s: float  # measured, read + write
    registers_per_sm: int = 65536
    shared_bytes_per_sm: int = 227 * 1024
    threads_per_sm: int = 2048
    source: str = ""


def measured_device(slug: str = "nvidia-h200") -> Device:
    """The device and the ceilings gpu_check measured on it (results.json)."""
    path = ROOT / "benchmarks" / "results" / slug / "results.json"
    results = json.loads(path.read_text())
    environment, ceilings = results["environment"], results["ceilings"]
    # nvidia-smi's "max SM clock, max memory clock, power limit", as gpu_check records it.
    clock_mhz = float(environment["nvidia_smi"].split(",")[1].split()[0])
    return Device(environment["device"], int(environment["multiprocessors"]), clock_mhz / 1000,
                  ceilings["matmul_tflop_per_s"], ceilings["copy_gb_per_s"],
                  source=f"{path.relative_to(ROOT)} (commit {environment['commit']})")


@dataclass(frozen=True)
class Shape:
    batch: int
    heads: int
    queries: int
    keys: int
    head_dim: int
    causal: bool
    element_bytes: int = 2

    def flops(self) -> float:
        """The FLOP count TFLOP/s figures use (shared/ANCHORS.md): 4 B H L S D, halved when causal."""
        total = 4.0 * self.batch * self.heads * self.queries * self.keys * self.head_dim
        return total / 2 if self.causal else total

    def label(self) -> str:
        return (f"{self.batch}x{self.heads}x{self.queries}x{self.head_dim}"
                f"{' causal' if self.causal else ''}")


def fa3_shape(head_dim: int, causal: bool, length: int = 8192) -> Shape:
    """The FA3 paper's shapes: 16k tokens a batch, a model width of 2048."""
    return Shape(16384 // length, 2048 // head_dim, length, length, head_dim, causal)


@dataclass(frozen=True)
class Prediction:
    seconds: float
    tflops: float
    roofline_ratio: float  # modelled time over the FLOP roofline's (matrix rate only)
    ctas_per_sm: int
    block_us: tuple  # (matrix, exp, other float) microseconds per block on one SM


def ctas_per_sm(device: Device, warps: int, registers: int, shared_bytes: int) -> int:
    threads = 32 * warps
    by_registers = device.registers_per_sm // max(1, registers * threads)
    by_shared = device.shared_bytes_per_sm // shared_bytes if shared_bytes else device.threads_per_sm // threads
    return min(by_registers, by_shared, device.threads_per_sm // threads)


def key_blocks(shape: Shape, block_m: int, block_n: int) -> list[int]:
    """Key blocks each program of one (batch, head) walks, in launch order."""
    programs = -(-shape.queries // block_m)
    if not shape.causal:
        return [-(-shape.keys // block_n)] * programs
    offset = shape.keys - shape.queries if shape.queries < shape.keys else 0
    return [-(-min(shape.keys, (i + 1) * block_m + offset) // block_n) for i in range(programs)]


def predict(device: Device, shape: Shape, block_m: int, block_n: int, warps: int, registers: int,
            shared_bytes: int, overlapped: bool = False) -> Optional[Prediction]:
    """The modelled time of one forward launch; None when a program does not fit an SM."""
    slots_per_sm = ctas_per_sm(device, warps, registers, shared_bytes)
    if slots_per_sm < 1:
        return None
    clock = device.clock_ghz * 1e9
    scores = block_m * block_n
    matrix = 4.0 * scores * shape.head_dim / (device.matmul_tflops * 1e12 / device.multiprocessors)
    exp = scores / (EXP_PER_CLOCK * clock)
    other = scores * FP32_OPS_PER_SCORE / (FP32_PER_CLOCK * clock)
    block = max(matrix, exp + other) if overlapped else matrix + exp + other
    # Each of the SM's slots runs its program at 1/slots of the SM's rate; programs start in
    # launch order on the slot that frees first.
    program_blocks = key_blocks(shape, block_m, block_n) * (shape.batch * shape.heads)
    slots = [0.0] * (device.multiprocessors * slots_per_sm)
    for blocks in program_blocks:
        heapq.heappush(slots, heapq.heappop(slots) + blocks * block * slots_per_sm)
    compute = max(slots)
    operands = shape.batch * shape.heads * (2 * shape.queries + 2 * shape.keys) * shape.head_dim
    memory = operands * shape.element_bytes / (device.copy_gb_per_s * 1e9)
    seconds = max(compute, memory)
    roofline = shape.flops() / (device.matmul_tflops * 1e12)
    return Prediction(seconds, shape.flops() / seconds / 1e12, seconds / roofline, slots_per_sm,
                      tuple(round(t * 1e6, 3) for t in (matrix, exp, other)))
