"""Compile every Triton kernel launch the launchers make, for real GPU targets, on a machine
without a GPU, and report registers and spills: the GPU-only code paths (libdevice, the
real bf16 casts) are compiled in CI even though they only run on a GPU.

The launchers are driven with CPU tensors over representative inputs; each `*_kernel`
launch is intercepted, specialised exactly as Triton's JIT would (dtypes, alignment,
integers equal to 1), compiled for sm_80 and sm_90 and passed through `ptxas -v`.
Run it without TRITON_INTERPRET: `python tests/compile_triton_kernels.py`. Exits
non-zero when a kernel fails to compile or spills registers.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend, get_ptxas
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

import seqops.kernels.attention as attention_kernels
import seqops.kernels.softmax as softmax_kernels
from seqops.kernels import runtime

TARGETS = [GPUTarget("cuda", 80, 32), GPUTarget("cuda", 90, 32)]


class RecordedLaunch:
    """A launch `kernel[grid](*args, **kwargs)`, recorded instead of run."""

    def __init__(self, kernel: JITFunction, args: tuple, kwargs: dict):
        self.kernel = kernel
        options = {k: v for k, v in kwargs.items() if k in ("num_warps", "num_stages")}
        constexprs = {k: v for k, v in kwargs.items() if k not in options}
        bound = dict(zip(kernel.arg_names, args))
        bound.update(constexprs)
        self.signature, self.constexprs, self.attrs = {}, {}, {}
        for index, name in enumerate(kernel.arg_names):
            value = bound[name]
            if name in constexprs:
                self.signature[name], self.constexprs[(index,)] = "constexpr", value
                continue
            kind, attr = native_specialize_impl(CUDABackend, value, False, True, True)
            self.signature[name] = kind
            if kind == "constexpr":  # an integer equal to 1
                self.constexprs[(index,)] = value
            elif attr:
                self.attrs[(index,)] = CUDABackend.parse_attr(attr)
        self.options = options
        self.key = (kernel.fn.__name__, tuple(self.signature.items()), tuple(sorted(self.constexprs.items())),
                    tuple(sorted((k, str(v)) for k, v in self.attrs.items())), tuple(sorted(options.items())))

    def describe(self) -> str:
        named = {self.kernel.arg_names[i[0]]: v for i, v in self.constexprs.items()}
        dtypes = ",".join(v for k, v in self.signature.items() if k.endswith("_ptr"))
        return f"{self.kernel.fn.__name__}[{dtypes}] {named} {self.options}"


class Recorder:
    """Stands in for a module's kernel: `kernel[grid](...)` records the launch, or, for an
    autotuned kernel, one launch per config its autotuner would try for these arguments."""

    def __init__(self, kernel, launches: list):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        return self._record

    def _record(self, *args, **kwargs):
        if not isinstance(self.kernel, Autotuner):
            self.launches.append(RecordedLaunch(self.kernel, args, kwargs))
            return
        self.kernel.nargs = dict(zip(self.kernel.arg_names, args))
        for config in self.kernel.prune_configs(kwargs):
            tuned = {k: v for k, v in config.all_kwargs().items() if k not in ("num_ctas", "maxnreg")}
            self.launches.append(RecordedLaunch(self.kernel.fn, args, {**kwargs, **tuned}))


def record_launches(module, drive) -> list[RecordedLaunch]:
    """The kernel launches `drive()` makes through the launchers of `module`."""
    launches: list[RecordedLaunch] = []
    originals = {name: value for name, value in vars(module).items()
                 if isinstance(value, (JITFunction, Autotuner)) and name.endswith("_kernel")}
    for name, kernel in originals.items():
        setattr(module, name, Recorder(kernel, launches))
    try:
        drive()
    finally:
        for name, kernel in originals.items():
            setattr(module, name, kernel)
    return list({launch.key: launch for launch in launches}.values())


def drive_softmax():
    """Every tiling `plan` chooses, in each dtype, with and without mask and causal."""
    for n_cols in (1, 7, 100, 1000, 2049, 8192, 16384, 32768, 70000):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = torch.randn(2, 3, n_cols, dtype=dtype)
            for mask, causal in ((None, False), (torch.ones(n_cols, dtype=torch.bool), True)):
                y = softmax_kernels.softmax_forward(x, mask, 2, 1.0, causal, dtype)
                softmax_kernels.softmax_backward(torch.randn_like(y), y, mask, 2, 1.0, causal, dtype)


def drive_attention():
    """Each dtype and head dim class, with every mask kind, causal, dropout and a float
    mask's gradient; contiguous [B, H, L, E] tensors, as a model passes them."""
    B, H, L, S = 1, 2, 64, 64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for head_dim in (16, 40, 64, 128, 256):
            q, k, v = (torch.randn(B, H, n, head_dim, dtype=dtype) for n in (L, S, S))
            masks = (None, torch.ones(B, 1, L, S, dtype=torch.bool), torch.zeros(1, H, 1, S, dtype=dtype))
            for mask in masks:
                for causal, dropout in ((False, 0.0), (True, 0.1)):
                    out, lse = attention_kernels.attention_forward(q, k, v, mask, dropout, causal, 0.1, 1)
                    attention_kernels.attention_backward(torch.randn_like(out), q, k, v, out, lse, mask, dropout,
                                                         causal, 0.1, 1, mask is not None and mask.is_floating_point())


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


def main() -> int:
    if runtime.INTERPRETED:
        print("compile_triton_kernels: run without TRITON_INTERPRET (kernels are interpreted here)", file=sys.stderr)
        return 2
    failures = 0
    for module, drive in ((softmax_kernels, drive_softmax), (attention_kernels, drive_attention)):
        for launch in record_launches(module, drive):
            for target in TARGETS:
                label = f"sm_{target.arch} {launch.describe()}"
                try:
                    compiled = triton.compile(ASTSource(launch.kernel, launch.signature, launch.constexprs, launch.attrs),
                                              target=target, options=launch.options)
                    registers, spills = ptxas_report(compiled.asm["ptx"], target.arch)
                except Exception as error:  # report every failure, not just the first
                    failures += 1
                    print(f"FAILED {label}: {type(error).__name__}: {str(error).splitlines()[0]}")
                    continue
                verdict = "ok" if spills == 0 else "SPILLS"
                failures += spills > 0
                print(f"{verdict:6} {label}: {registers} registers, {spills} bytes spilled")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
