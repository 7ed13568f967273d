"""Compile every Triton kernel launch the launchers make, for real GPU targets, on a machine
without a GPU, and report registers and spills: the GPU-only code paths (libdevice, the
real bf16 casts) are compiled in CI even though they only run on a GPU.

The launchers are driven with CPU tensors over representative inputs; each `*_kernel`
launch is intercepted, specialised exactly as Triton's JIT would (dtypes, alignment,
integers equal to 1, save those marked do_not_specialize), compiled for sm_80 and sm_90
and passed through `ptxas -v`.
Run it without TRITON_INTERPRET: `python tests/compile_triton_kernels.py`. Exits
non-zero when a kernel fails to compile, or when a launch with fixed tiles spills
registers. Of an autotuned kernel's tiles it compiles the one with the most tile elements
per thread (`--all-tiles`: every tile the autotuner would try; slow) and lists it as
"spills" if it does: the tile table was calibrated on sm_90 at each class's
representative launch, and the autotuner times and drops a tile that a variant makes
spill. With `--calibrate [jobs]` it instead measures every candidate attention tile and
prints the table of those that do not spill (seqops.kernels.attention.TILES).
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend, get_ptxas
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction, create_function_from_signature

import seqops.kernels.attention as attention_kernels
import seqops.kernels.attention.backward as attention_backward
import seqops.kernels.attention.forward as attention_forward
import seqops.kernels.recurrent as recurrent_kernels
import seqops.kernels.recurrent.step as recurrent_step
import seqops.kernels.softmax as softmax_kernels
import seqops.kernels.softmax.backward as softmax_backward
import seqops.kernels.softmax.forward as softmax_forward
from seqops.kernels import runtime
from seqops.kernels.attention import tuning as attention_tuning
from seqops.kernels.recurrent.step import StepState, bias_grad_blocks, lstm_step_backward, lstm_step_forward

TARGETS = [GPUTarget("cuda", 80, 32), GPUTarget("cuda", 90, 32)]


class RecordedLaunch:
    """A launch `kernel[grid](*args, **kwargs)`, recorded instead of run, with the
    signature, constants and attributes Triton's JIT would compile it with: its own binder
    specialises the arguments, so do_not_specialize, do_not_specialize_on_alignment and
    annotations act here as they do in a real launch."""

    def __init__(self, kernel: JITFunction, args: tuple, kwargs: dict, module_name: str, name: str,
                 autotuned: bool = False):
        self.kernel, self.module_name, self.name, self.autotuned = kernel, module_name, name, autotuned
        self.options = {k: v for k, v in kwargs.items() if k in ("num_warps", "num_stages")}
        binder = create_function_from_signature(kernel.signature, kernel.params, CUDABackend)
        bound, specialization, _ = binder(*args, **kwargs)
        self.signature, self.constexprs, self.attrs = {}, {}, {}
        for index, (param, (kind, attr)) in enumerate(zip(kernel.params, specialization)):
            self.signature[param.name] = kind
            if kind == "constexpr":  # declared tl.constexpr, or an integer equal to 1
                self.constexprs[(index,)] = bound[param.name]
            elif isinstance(attr, str):
                self.attrs[(index,)] = CUDABackend.parse_attr(attr)
        self.key = (kernel.fn.__name__, tuple(self.signature.items()), tuple(sorted(self.constexprs.items())),
                    tuple(sorted((k, str(v)) for k, v in self.attrs.items())), tuple(sorted(self.options.items())))

    def describe(self) -> str:
        named = {self.kernel.arg_names[i[0]]: v for i, v in self.constexprs.items()}
        dtypes = ",".join(v for k, v in self.signature.items() if k.endswith("_ptr"))
        return f"{self.kernel.fn.__name__}[{dtypes}] {named} {self.options}"


def hungriest_config(configs: list) -> list:
    """Of the configs an autotuner would try, the one most likely to spill: the most tile
    elements per thread (then the largest tile), at the deepest pipeline."""
    def pressure(config):
        tile = config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"]
        return tile / config.num_warps, tile, config.num_stages
    return [max(configs, key=pressure)]


def every_config(configs: list) -> list:
    return list(configs)


class Recorder:
    """Stands in for a module's kernel: `kernel[grid](...)` records the launch, or, for an
    autotuned kernel, a launch for each config `choose` keeps of those its autotuner would
    try for these arguments."""

    def __init__(self, kernel, launches: list, choose, module_name: str, name: str):
        self.kernel, self.launches, self.choose = kernel, launches, choose
        self.where = (module_name, name)

    def __getitem__(self, grid):
        return self._record

    def _record(self, *args, **kwargs):
        if not isinstance(self.kernel, Autotuner):
            self.launches.append(RecordedLaunch(self.kernel, args, kwargs, *self.where))
            return
        self.kernel.nargs = dict(zip(self.kernel.arg_names, args))
        for config in self.choose(self.kernel.prune_configs(kwargs)):
            tuned = {k: v for k, v in config.all_kwargs().items() if k not in ("num_ctas", "maxnreg")}
            self.launches.append(RecordedLaunch(self.kernel.fn, args, {**kwargs, **tuned}, *self.where, autotuned=True))


def record_launches(modules, drive, choose=every_config) -> list[RecordedLaunch]:
    """The kernel launches `drive()` makes through the launchers of `modules` (of an
    autotuned kernel's configs, those `choose` keeps)."""
    launches: list[RecordedLaunch] = []
    originals = {(module, name): value for module in modules for name, value in vars(module).items()
                 if isinstance(value, (JITFunction, Autotuner)) and name.endswith("_kernel")}
    for (module, name), kernel in originals.items():
        setattr(module, name, Recorder(kernel, launches, choose, module.__name__, name))
    try:
        drive()
    finally:
        for (module, name), kernel in originals.items():
            setattr(module, name, kernel)
    return list({launch.key: launch for launch in launches}.values())


def drive_softmax():
    """Every tiling `plan` chooses, in each dtype, with and without mask and causal; and
    the int64 row indices of a launch of 2**31 rows or more (meta tensors: launches are
    recorded, not run)."""
    for n_cols in (1, 7, 100, 1000, 2049, 8192, 16384, 32768, 70000):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = torch.randn(2, 3, n_cols, dtype=dtype)
            for mask, causal in ((None, False), (torch.ones(n_cols, dtype=torch.bool), True)):
                y = softmax_kernels.softmax_forward(x, mask, 2, 1.0, causal, dtype)
                softmax_kernels.softmax_backward(torch.randn_like(y), y, mask, 2, 1.0, causal, dtype)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.empty(2**31 + 5, 3, dtype=dtype, device="meta")
        for mask, causal in ((None, False), (torch.ones(3, dtype=torch.bool, device="meta"), True)):
            y = softmax_kernels.softmax_forward(x, mask, 1, 1.0, causal, dtype)
            softmax_kernels.softmax_backward(torch.empty_like(y), y, mask, 1, 1.0, causal, dtype)


def run_attention(dtype: torch.dtype, head_dim: int, mask_kind: str, causal: bool, dropout: float,
                  query_row_stride: int = 0):
    """One forward and backward through the attention launchers, on contiguous
    [B, H, L, E] tensors as a model passes them; with query_row_stride, q's rows are that
    many elements apart instead (a meta tensor: launches are recorded, not run)."""
    B, H, L, S = 1, 2, 64, 64
    q, k, v = (torch.randn(B, H, n, head_dim, dtype=dtype) for n in (L, S, S))
    if query_row_stride:
        q = torch.empty_strided((B, H, L, head_dim), (0, head_dim, query_row_stride, 1), dtype=dtype, device="meta")
    mask = {"none": None, "bool": torch.ones(B, 1, L, S, dtype=torch.bool),
            "float": torch.zeros(1, H, 1, S, dtype=dtype)}[mask_kind]
    out, lse = attention_kernels.attention_forward(q, k, v, mask, dropout, causal, 0, 0.1, 1)
    attention_kernels.attention_backward(torch.randn_like(out), q, k, v, out, lse, mask, dropout, causal, 0, 0.1, 1,
                                         mask_kind == "float")


def drive_attention():
    """Each dtype through every feature path (a head dim that is not a power of two; no
    mask; a bool mask with causal and dropout; a float mask with its gradient), and each
    class of the tile table (dtype class, head-dim class, plain or heavy)."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for mask_kind, causal, dropout in (("none", False, 0.0), ("bool", True, 0.1), ("float", False, 0.0)):
            run_attention(dtype, 40, mask_kind, causal, dropout)
    for dtype, head_dims in ((torch.float32, (64, 128)), (torch.bfloat16, (64, 128, 256))):
        for head_dim in head_dims:
            for mask_kind, dropout in (("none", 0.0), ("float", 0.1)):
                run_attention(dtype, head_dim, mask_kind, True, dropout)
    # The kernels' int64-offset variants, which launches only take past 2**31 elements: q
    # rows 2**23 elements apart (a slice of 64 rows then spans 2**29; padded to the
    # longest tile, more than 2**31), for the plain path and the heaviest one.
    for dtype in (torch.float32, torch.bfloat16):
        for mask_kind, dropout in (("none", 0.0), ("float", 0.1)):
            run_attention(dtype, 128, mask_kind, True, dropout, query_row_stride=2**23)


def drive_lstm():
    """The cell (input GEMM, biases, bias gradients) and the layer's steps (projected
    input, carried state, both carries in the backward), per dtype and hidden size, at
    the batch sizes that change the tiling."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for hidden in (64, 1024):
            for batch in (1, 64):
                w_ih, w_hh = torch.randn(4 * hidden, 32, dtype=dtype), torch.randn(4 * hidden, hidden, dtype=dtype)
                x, h, c = torch.randn(batch, 32, dtype=dtype), torch.randn(batch, hidden, dtype=dtype), torch.randn(batch, hidden, dtype=dtype)
                bias = torch.randn(4 * hidden, dtype=dtype)
                h1, c1 = torch.empty_like(h), torch.empty_like(c)
                gates = torch.empty(batch, 4 * hidden)
                fresh = StepState(None, h, 0)
                lstm_step_forward(fresh, StepState(None, c, 0), w_hh, batch, h1, c1, gates,
                                  x=x, w_ih=w_ih, b_ih=bias, b_hh=bias)
                dbias = torch.empty(bias_grad_blocks(batch, hidden, hidden), 4 * hidden)
                lstm_step_backward(h1, None, StepState(None, c.float(), 0), gates, c1, StepState(None, c, 0), w_hh,
                                   batch, gates, StepState(None, c.float(), 0), StepState(None, h.float(), 0), dbias)
                xw = torch.randn(2 * batch, 4 * hidden, dtype=dtype)
                out, h_n, c_n, gates, cells, _ = recurrent_kernels.lstm_layer_forward(xw, [batch, batch], h, c, w_hh,
                                                                                      None, False)
                recurrent_kernels.lstm_layer_backward(torch.randn_like(out), torch.randn_like(h_n),
                                                      torch.randn_like(c_n), out, gates, cells, None, h, c, w_hh, None,
                                                      [batch, batch], False)


def ptxas_report(ptx: str, arch: int) -> tuple[int, int]:
    """(registers, spilled bytes) of the one kernel in `ptx`, from `ptxas -v`."""
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as source:
        source.write(ptx)
        source.flush()
        result = subprocess.run([get_ptxas(arch).path, f"-arch={target}", "-v", source.name, "-o", "/dev/null"],
                                capture_output=True, text=True, check=True)
    registers = int(re.search(r"Used (\d+) registers", result.stderr).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", result.stderr))
    return registers, spills


def compile_launch(task) -> tuple[int, int, str]:
    """Worker: a recorded launch's fields and a target index -> (registers, spilled bytes,
    error or "")."""
    module_name, name, signature, constexprs, attrs, options, target_index, _, _ = task
    kernel = getattr(sys.modules.get(module_name) or __import__(module_name, fromlist=["_"]), name)
    kernel = kernel.fn if isinstance(kernel, Autotuner) else kernel
    target = TARGETS[target_index]
    try:
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options)
        return (*ptxas_report(compiled.asm["ptx"], target.arch), "")
    except Exception as error:
        return 0, 0, f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def _compile_for_calibration(task):
    """Worker: (class, kernel name, tile, launch fields) -> (class, kernel, tile, spilled bytes or None)."""
    key, kernel_name, tile, signature, constexprs, attrs, options = task
    module_name, name = kernel_name
    kernel = getattr(sys.modules.get(module_name) or __import__(module_name, fromlist=["_"]), name).fn
    try:
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=TARGETS[1], options=options)
        return key, kernel_name, tile, ptxas_report(compiled.asm["ptx"], TARGETS[1].arch)[1]
    except Exception:  # a tile that does not compile is as unusable as one that spills
        return key, kernel_name, tile, None


def calibrate_attention(jobs: int) -> dict:
    """The attention tile table: for each kernel and class, the candidate tiles that
    compile for sm_90 without spilling, each at its kernel's deepest pipeline (the most
    shared memory; registers barely change with depth). fp32 tiles above 64 x 64 are left
    out: every one measured spilled kilobytes."""
    attention_tuning.CALIBRATING = True
    tasks = []
    for dtype_class, dtype in (("16-bit", torch.bfloat16), ("fp32", torch.float32)):
        for head_class in (64, 128, 256) if dtype_class == "16-bit" else (64, attention_kernels.FP32_MAX_HEAD_DIM):
            for weight, (mask_kind, dropout) in (("plain", ("none", 0.0)), ("heavy", ("float", 0.1))):
                key = (dtype_class, head_class, weight)
                launches = record_launches((attention_forward, attention_backward),
                                           lambda: run_attention(dtype, head_class, mask_kind, True, dropout))
                for launch in launches:
                    name = launch.kernel.fn.__name__
                    kernel = name.removeprefix("attention_").removesuffix("_kernel")
                    if kernel not in attention_tuning.STAGES:
                        continue
                    named = {launch.kernel.arg_names[i[0]]: v for i, v in launch.constexprs.items()}
                    tile = (named["BLOCK_M"], named["BLOCK_N"], launch.options["num_warps"])
                    if launch.options["num_stages"] != max(attention_tuning.STAGES[kernel]):
                        continue
                    if dtype_class == "fp32" and tile[0] * tile[1] > 64 * 64:
                        continue
                    tasks.append(((key, (launch.module_name, launch.name), tile, launch.signature, launch.constexprs,
                                   launch.attrs, launch.options)))
    table: dict = {k: {} for k in attention_tuning.STAGES}
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        for key, (_, name), tile, spilled in pool.map(_compile_for_calibration, tasks):
            kernel = name.removeprefix("attention_").removesuffix("_kernel")
            print(f"{kernel:14} {key}: tile {tile}: " + ("failed" if spilled is None else f"{spilled} bytes spilled"),
                  flush=True)
            if spilled == 0:
                table[kernel].setdefault(key, []).append(tile)
    return table


def main() -> int:
    if "--calibrate" in sys.argv:
        jobs = int(sys.argv[sys.argv.index("--calibrate") + 1]) if len(sys.argv) > sys.argv.index("--calibrate") + 1 else 2
        table = calibrate_attention(jobs)
        print("TILES = {")
        for kernel, classes in table.items():
            print(f"    {kernel!r}: {{")
            for key in sorted(classes):
                print(f"        {key!r}: {sorted(classes[key])},")
            print("    },")
        print("}")
        return 0
    if runtime.INTERPRETED:
        print("compile_triton_kernels: run without TRITON_INTERPRET (kernels are interpreted here)", file=sys.stderr)
        return 2
    choose = every_config if "--all-tiles" in sys.argv else hungriest_config
    tasks = [(launch.module_name, launch.name, launch.signature, launch.constexprs, launch.attrs, launch.options,
              index, launch.describe(), launch.autotuned)
             for modules, drive in (((softmax_forward, softmax_backward), drive_softmax),
                                    ((attention_forward, attention_backward), drive_attention),
                                    ((recurrent_step,), drive_lstm))
             for launch in record_launches(modules, drive, choose) for index in range(len(TARGETS))]
    failures = 0
    with concurrent.futures.ProcessPoolExecutor(min(len(os.sched_getaffinity(0)), 8)) as pool:
        for task, (registers, spills, error) in zip(tasks, pool.map(compile_launch, tasks, chunksize=4)):
            label = f"sm_{TARGETS[task[6]].arch} {task[7]}"
            if error:  # report every failure, not just the first
                failures += 1
                print(f"FAILED {label}: {error}", flush=True)
                continue
            # An autotuned kernel's tile that spills is one its autotuner may time and
            # drop; a fixed launch that spills is slow on every call.
            verdict = "ok" if spills == 0 else "spills" if task[8] else "SPILLS"
            failures += verdict == "SPILLS"
            print(f"{verdict:6} {label}: {registers} registers, {spills} bytes spilled", flush=True)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
