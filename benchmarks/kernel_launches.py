"""Record the Triton kernel launches a launcher makes, without running them, and compile
each for a GPU target through ptxas: registers, spilled bytes and shared memory, on a
machine without a GPU.

A launcher is driven with CPU (or meta) tensors while each `*_kernel` of its module is
replaced by a recorder. A recorded launch is specialised exactly as Triton's JIT would
specialise it, by Triton's own binder: dtypes, alignment, integers equal to 1, each
element of a tuple argument (a tensor's strides) on its own, save the arguments marked
do_not_specialize. Used by benchmarks/static_report (the CI compile check) and
benchmarks/tiles (the measurement the attention tile table is generated from).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Optional

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend, get_ptxas
from triton.compiler import ASTSource
from triton.compiler.compiler import get_cache_invalidating_env_vars, get_cache_key, make_backend
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction, create_function_from_signature

ARCHS = (80, 90)


def _specialise(path: tuple, kind, attr, value, constexprs: dict, attrs: dict):
    """File one bound argument (or, recursively, each element of a tuple argument) under
    its path, as Triton's JIT does: constants into `constexprs`, alignment and
    divisibility hints into `attrs`."""
    if isinstance(kind, tuple):
        for index, element in enumerate(zip(kind, attr, value)):
            _specialise(path + (index,), *element, constexprs, attrs)
    elif kind == "constexpr":  # declared tl.constexpr, or an integer equal to 1
        constexprs[path] = value
    elif isinstance(attr, str):
        attrs[path] = CUDABackend.parse_attr(attr)


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
            _specialise((index,), kind, attr, bound[param.name], self.constexprs, self.attrs)
        self.key = (kernel.fn.__name__, tuple(self.signature.items()), tuple(sorted(self.constexprs.items())),
                    tuple(sorted((k, str(v)) for k, v in self.attrs.items())), tuple(sorted(self.options.items())))

    def constants(self) -> dict:
        """{argument name: value} of the compile-time constants, a tuple's elements named
        `name[i]`."""
        return {self.kernel.arg_names[path[0]] + "".join(f"[{i}]" for i in path[1:]): value
                for path, value in self.constexprs.items()}

    def describe(self) -> str:
        dtypes = ",".join(v for k, v in self.signature.items() if k.endswith("_ptr"))
        return f"{self.kernel.fn.__name__}[{dtypes}] {self.constants()} {self.options}"

    def build(self, arch: int) -> "BuildTask":
        return BuildTask(self.module_name, self.name, self.signature, self.constexprs, self.attrs, self.options, arch)


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
    try for these arguments (after its prune, or of all its configs when not `pruned`)."""

    def __init__(self, kernel, launches: list, choose, module_name: str, name: str, pruned: bool):
        self.kernel, self.launches, self.choose, self.pruned = kernel, launches, choose, pruned
        self.where = (module_name, name)

    def __getitem__(self, grid):
        return self._record

    def _record(self, *args, **kwargs):
        if not isinstance(self.kernel, Autotuner):
            self.launches.append(RecordedLaunch(self.kernel, args, kwargs, *self.where))
            return
        self.kernel.nargs = dict(zip(self.kernel.arg_names, args))
        configs = self.kernel.prune_configs(kwargs) if self.pruned else self.kernel.configs
        for config in self.choose(configs):
            tuned = {k: v for k, v in config.all_kwargs().items() if k not in ("num_ctas", "maxnreg")}
            self.launches.append(RecordedLaunch(self.kernel.fn, args, {**kwargs, **tuned}, *self.where, autotuned=True))


def record_launches(modules, drive: Callable[[], None], choose=every_config,
                    pruned: bool = True) -> list[RecordedLaunch]:
    """The distinct kernel launches `drive()` makes through the launchers of `modules` (of
    an autotuned kernel's configs, those `choose` keeps; of all of them, its prune and so
    its tile table bypassed, when not `pruned`)."""
    launches: list[RecordedLaunch] = []
    originals = {(module, name): value for module in modules for name, value in vars(module).items()
                 if isinstance(value, (JITFunction, Autotuner)) and name.endswith("_kernel")}
    for (module, name), kernel in originals.items():
        setattr(module, name, Recorder(kernel, launches, choose, module.__name__, name, pruned))
    try:
        drive()
    finally:
        for (module, name), kernel in originals.items():
            setattr(module, name, kernel)
    return list({launch.key: launch for launch in launches}.values())


@dataclass(frozen=True)
class BuildTask:
    """What a worker process needs to compile one recorded launch for one arch (picklable:
    the kernel travels as its module and attribute name)."""

    module_name: str
    name: str
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    arch: int


@dataclass(frozen=True)
class Build:
    """What a launch compiled to: registers a thread, bytes spilled (stores plus loads),
    shared memory a program (bytes, as Triton allocates it), and how many of the PTX's
    instructions are tensor-core or asynchronous-copy ones (INSTRUCTIONS); error: why it
    did not compile, else None."""

    registers: int = 0
    spilled_bytes: int = 0
    shared_bytes: int = 0
    instructions: dict = field(default_factory=dict)
    error: Optional[str] = None


# PTX instruction families that say whether a kernel uses the hardware it was tiled for:
# Hopper's warpgroup MMA and tensor-memory (TMA) copies, Ampere's warp MMA and cp.async.
# An instruction may carry a predicate (`@%p3 cp.async.bulk.tensor...`: Triton predicates
# its TMA copies on the issuing thread).
_PREDICATE = r"^\s*(?:@!?%\w+\s+)?"
INSTRUCTIONS = {
    "wgmma": re.compile(_PREDICATE + r"wgmma\.mma_async", re.M),
    "mma_sync": re.compile(_PREDICATE + r"mma\.sync", re.M),
    "tma": re.compile(_PREDICATE + r"cp\.async\.bulk\.tensor", re.M),
    "cp_async": re.compile(_PREDICATE + r"cp\.async\.c[ag]", re.M),
}


def _kernel_of(task: BuildTask) -> JITFunction:
    module = sys.modules.get(task.module_name) or __import__(task.module_name, fromlist=["_"])
    kernel = getattr(module, task.name)
    return kernel.fn if isinstance(kernel, Autotuner) else kernel


def build_key(task: BuildTask) -> str:
    """The key Triton's own compile cache files this build under: the kernel's source and
    that of every function it calls, the globals it reads, the signature, constants and
    attributes, the options, the Triton version and the ptxas version and arch. Equal keys
    compile to the same binary, so a build recorded under a key need not be compiled
    again to be known."""
    source = ASTSource(_kernel_of(task), task.signature, task.constexprs, task.attrs)
    backend = make_backend(GPUTarget("cuda", task.arch, 32))
    options = backend.parse_options(dict(task.options, **source.parse_options()))
    key = get_cache_key(source, backend, options, env_vars=get_cache_invalidating_env_vars())
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def ptxas_report(ptx: str, arch: int) -> tuple[int, int]:
    """(registers, spilled bytes) of the one kernel in `ptx`, from `ptxas -v`."""
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as source:
        source.write(ptx)
        source.flush()
        result = subprocess.run([get_ptxas(arch).path, f"-arch={target}", "-v", source.name, "-o", "/dev/null"],
                                capture_output=True, text=True, check=True)
    return _registers_and_spills(result.stderr)


def _registers_and_spills(ptxas_log: str) -> tuple[int, int]:
    registers = int(re.search(r"Used (\d+) registers", ptxas_log).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", ptxas_log))
    return registers, spills


def compile_build(task: BuildTask) -> Build:
    """Worker: compile a recorded launch for its arch and read what ptxas reports. Triton
    runs `ptxas -v` itself to make the binary; its log is read from there rather than by a
    second run (a compile found in Triton's cache prints none, and ptxas runs again)."""
    target = GPUTarget("cuda", task.arch, 32)
    printed = io.StringIO()
    try:
        with knobs.nvidia.scope(), contextlib.redirect_stdout(printed):
            knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(ASTSource(_kernel_of(task), task.signature, task.constexprs, task.attrs),
                                      target=target, options=task.options)
        ptx = compiled.asm["ptx"]
        log = printed.getvalue()
        registers, spilled = _registers_and_spills(log) if "Used " in log else ptxas_report(ptx, task.arch)
        counts = {name: len(pattern.findall(ptx)) for name, pattern in INSTRUCTIONS.items()}
        return Build(registers, spilled, compiled.metadata.shared, counts)
    except Exception as error:  # reported per launch, so that one failure hides no other
        return Build(error=f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
