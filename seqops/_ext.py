"""The compiled CUDA C++ extension (csrc/): find a prebuilt one, or build it with nvcc on
first CUDA use, and say plainly what failed when neither works.

Where `load()` looks, in order:
  1. $SEQOPS_CUDA_EXT_DIR: a folder built by `python -m seqops._ext build DIR` (on any
     machine with nvcc; copy it to a GPU machine that has no compiler).
  2. Installed beside this file by `SEQOPS_BUILD_EXT=1 pip install --no-build-isolation -e .`
  3. The cache, $SEQOPS_CACHE_DIR (default ~/.cache/seqops) / cuda_ext / <key>, the key a
     hash of the sources, the nvcc version, the target archs, the Python ABI and pybind11.
  4. Else it builds into that cache: nvcc straight (no torch: the extension takes plain
     pointers and sizes), MAX_JOBS parallel jobs, the CUDA runtime linked statically so the
     `.so` needs no CUDA toolkit where it runs. Each compiled .cu object is kept in the
     cache's object store (object_store()) and reused by later builds: only the Python
     bindings depend on the Python version, so objects compiled on a machine without a
     GPU, carried with SEQOPS_CACHE_DIR, leave a GPU machine only those to compile.
A prebuilt module built from other sources than the csrc/ beside it (a checkout edited
since) is skipped, not trusted.

Target archs: $SEQOPS_CUDA_ARCHS ("80;90a"), else $TORCH_CUDA_ARCH_LIST ("8.0;9.0a",
"8.6+PTX"), else the visible GPUs' own, else sm_80 and sm_90a.

Instance files (csrc/<family>/instances/*.cu): one template instantiation each (head dim,
dtype, ...) of a CuTe kernel, each a minute or so of nvcc. Each registers itself in its
family's table when the module loads, so a build may leave any of them out (a call that
needs one then says so): without the CUTLASS headers they are left out, and CI's link
check builds without them, their compiles being checked through a committed report
(benchmarks/cuda_report).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, Optional, Sequence

MODULE = "_cuda_ext"
PACKAGE_DIR = Path(__file__).resolve().parent
CSRC = PACKAGE_DIR.parent / "csrc"
DEFAULT_ARCHS = ("80", "90a")
SOURCE_SUFFIXES = (".cu", ".cpp", ".h", ".cuh")
INSTANCES = "instances"
# nvcc options of every translation unit (include paths and the source-hash define aside).
# --expt-relaxed-constexpr: CuTe's TMA descriptor code (the sm90a attention forward) calls
# constexpr host functions from host-device ones, which nvcc warns of without it.
OPTIONS = ("-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden")


class ExtensionUnavailable(RuntimeError):
    """The CUDA extension could not be found or built; the message says why."""


def source_files(root: Path = CSRC) -> list[Path]:
    """Every file the extension is built from (compiled sources and headers), sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES)


def source_hash(root: Path = CSRC) -> str:
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def compiled_sources(root: Path = CSRC) -> list[Path]:
    """The translation units: every .cu, then every .cpp."""
    return sorted(root.rglob("*.cu")) + sorted(root.rglob("*.cpp"))


def is_instance(source: Path, root: Path = CSRC) -> bool:
    """Whether `source` is an instance file (csrc/<family>/instances/*.cu): optional in a build."""
    return source.suffix == ".cu" and INSTANCES in Path(source).relative_to(root).parts[:-1]


def local_includes(source: Path, root: Path = CSRC) -> list[Path]:
    """The files of `root` that `source` includes, directly or not (`#include "..."`, resolved
    against the including file's folder, then `root`), sorted: what its object depends on
    of seqops's own sources. Angle-bracket includes (CUDA, CuTe) are not followed."""
    found: set[Path] = set()
    pending = [Path(source).resolve()]
    while pending:
        current = pending.pop()
        for name in re.findall(r'^\s*#\s*include\s*"([^"]+)"', current.read_text(errors="replace"), re.M):
            for folder in (current.parent, Path(root)):
                candidate = folder / name
                if candidate.is_file():
                    candidate = candidate.resolve()
                    if candidate not in found:
                        found.add(candidate)
                        pending.append(candidate)
                    break
    return sorted(found)


def object_key(source: Path, arch: str | Sequence[str], nvcc: str, root: Path = CSRC,
               extra_flags: Sequence[str] = ()) -> str:
    """What one .cu compiled for an arch (or several, in one fat object) depends on: its
    text and that of every file of `root` it includes, the CUTLASS and nvcc versions and
    the options (`extra_flags` beyond OPTIONS). Equal keys, equal objects and ptxas reports.
    Include paths are not part of it (they differ between machines; what they hold is)."""
    digest = hashlib.sha256()
    for path in [Path(source), *local_includes(source, root)]:
        digest.update(path.resolve().relative_to(root.resolve()).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    archs = [arch] if isinstance(arch, str) else list(arch)
    parts = [digest.hexdigest(), cutlass_version(), nvcc_version(nvcc), " ".join(OPTIONS), " ".join(gencode_flags(archs))]
    if extra_flags:
        parts.append(" ".join(extra_flags))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def find_nvcc() -> Optional[str]:
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def nvcc_version(nvcc: str) -> str:
    """The release line of `nvcc --version`, e.g. 'Cuda compilation tools, release 13.0, V13.0.88'."""
    lines = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout.strip().splitlines()
    return next((line for line in lines if "release" in line), lines[-1] if lines else "unknown")


def parse_archs(text: str) -> list[str]:
    """Archs as nvcc numbers ('80', '90a', '86+PTX') from either spelling: '8.0;9.0a',
    '8.6+PTX 9.0', 'sm_80,sm_90a'."""
    archs = []
    for item in re.split(r"[;,\s]+", text.strip()):
        if not item:
            continue
        match = re.fullmatch(r"(?:sm_|compute_)?(\d+)(?:\.(\d))?([a-z]?)(\+PTX)?", item, re.IGNORECASE)
        if match is None:
            raise ExtensionUnavailable(f"cannot read CUDA arch {item!r} in {text!r} (expected e.g. '8.0;9.0a' or '80;90a')")
        major, minor, suffix, ptx = match.groups()
        number = major + minor if minor is not None else major
        if minor is None and len(major) == 1:
            number = major + "0"
        archs.append(number + suffix.lower() + ("+PTX" if ptx else ""))
    if not archs:
        raise ExtensionUnavailable(f"no CUDA arch in {text!r}")
    return archs


def target_archs() -> list[str]:
    for variable in ("SEQOPS_CUDA_ARCHS", "TORCH_CUDA_ARCH_LIST"):
        if os.environ.get(variable):
            return parse_archs(os.environ[variable])
    try:
        import torch

        if torch.cuda.is_available():
            # sm_90 devices get sm_90a, the arch-specific target (wgmma, TMA) the kernels are written for.
            found = {f"{major}{minor}" + ("a" if (major, minor) == (9, 0) else "")
                     for major, minor in (torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))}
            return sorted(found)
    except Exception:  # no usable torch.cuda: build for the default targets
        pass
    return list(DEFAULT_ARCHS)


def gencode_flags(archs: Sequence[str]) -> list[str]:
    flags = []
    for arch in archs:
        number = arch.replace("+PTX", "")
        flags += ["-gencode", f"arch=compute_{number},code=sm_{number}"]
        if arch.endswith("+PTX"):
            flags += ["-gencode", f"arch=compute_{number},code=compute_{number}"]
    return flags


def cutlass_include() -> Optional[Path]:
    """CUTLASS/CuTe headers of the nvidia-cutlass wheel (`pip install seqops[cuda]`), if installed."""
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or spec.origin is None:
        return None
    include = Path(spec.origin).parent / "source" / "include"
    return include if include.is_dir() else None


def cutlass_version() -> str:
    """The nvidia-cutlass wheel's version, or "none"."""
    import importlib.metadata

    try:
        return importlib.metadata.version("nvidia-cutlass")
    except importlib.metadata.PackageNotFoundError:
        return "none" if cutlass_include() is None else "unknown"


def pybind11_include() -> str:
    try:
        import pybind11
    except ImportError:
        raise ExtensionUnavailable("cannot build the seqops CUDA extension: pybind11 is not installed "
                                   "(pip install 'seqops[cuda]' or pip install pybind11)") from None
    return pybind11.get_include()


def build_key(archs: Sequence[str], nvcc: str) -> str:
    try:
        import pybind11
        pybind_version = pybind11.__version__
    except ImportError:
        pybind_version = "none"
    parts = [source_hash(), nvcc_version(nvcc), ";".join(archs), sysconfig.get_config_var("EXT_SUFFIX") or "",
             pybind_version, cutlass_version()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_root() -> Path:
    if os.environ.get("SEQOPS_CACHE_DIR"):
        return Path(os.environ["SEQOPS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seqops"


def object_store() -> Path:
    """Where build() keeps each compiled .cu object (and what nvcc printed for it) under its
    object_key, so that a build reuses what an earlier one compiled: a build cut short
    keeps what it finished, an edit recompiles only the objects it touches, and objects
    compiled on another machine with the same nvcc and CUTLASS can be carried to a GPU
    machine (SEQOPS_CACHE_DIR) so that only the Python bindings compile there."""
    return cache_root() / "cuda_objects"


# Objects not used by a build for this long are deleted from the store by the next build.
OBJECT_STORE_DAYS = 30


def module_file(folder: Path) -> Optional[Path]:
    found = sorted(folder.glob(f"{MODULE}*.so")) + sorted(folder.glob(f"{MODULE}*.pyd"))
    return found[0] if found else None


def jobs() -> int:
    value = os.environ.get("MAX_JOBS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ExtensionUnavailable(f"MAX_JOBS must be a whole number, got {value!r}") from None
    return os.cpu_count() or 1


@dataclass(frozen=True)
class BuildResult:
    path: Path        # the built module
    log: str          # everything nvcc printed (ptxas's per-kernel report with ptxas_verbose)
    seconds: float
    reused: tuple[str, ...] = ()  # the sources whose objects came from the object store
    objects: tuple[Path, ...] = ()  # the .cu objects linked, in the object store


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-40:])
        raise ExtensionUnavailable(f"building the seqops CUDA extension failed at {what}:\n  {' '.join(command)}\n{tail}")
    return f"== {what}\n{output}"


def _in_store(obj: Path) -> bool:
    return obj.is_file() and obj.with_suffix(".log").is_file()


def _compile_aside(command: list[str], what: str) -> tuple[str, bool]:
    """Compile where `command` says (-o), outside the store: (what nvcc printed, False)."""
    return _run(command, what), False


def _compile_into_store(command: list[str], what: str, obj: Path) -> tuple[str, bool]:
    """Compile to `obj` in the object store unless it is there already (with its log).
    Returns (what nvcc printed when it was compiled, whether it was reused). Written under
    temporary names and renamed, log first, so a reader never sees half an object."""
    log_file = obj.with_suffix(".log")
    if _in_store(obj):
        with contextlib.suppress(OSError):  # a store carried read-only is used as it is
            os.utime(obj)
        return log_file.read_text(), True
    unique = f".{os.getpid()}-{threading.get_ident()}.tmp"
    temporary = obj.with_name(obj.name + unique)
    try:
        log = _run([*command, "-o", str(temporary)], what)
        temporary.with_suffix(".log").write_text(log)
        os.replace(temporary.with_suffix(".log"), log_file)
        os.replace(temporary, obj)
    finally:
        for leftover in (temporary, temporary.with_suffix(".log")):
            leftover.unlink(missing_ok=True)
    return log, False


def _prune_store(store: Path, days: float = OBJECT_STORE_DAYS) -> None:
    oldest = time.time() - days * 86400
    for path in store.glob("*.o"):
        try:
            if path.stat().st_mtime < oldest:
                path.unlink(missing_ok=True)
                path.with_suffix(".log").unlink(missing_ok=True)
        except OSError:  # another build pruning at once
            pass


def cuda_compile_flags(archs: Sequence[str], ptxas_verbose: bool = False, root: Path = CSRC) -> list[str]:
    """nvcc's flags for a .cu: options, seqops's and CUTLASS's include dirs, the targets."""
    includes = ["-I", str(root)]
    cutlass = cutlass_include()
    if cutlass is not None:
        includes += ["-I", str(cutlass)]
    return [*OPTIONS, *includes, *gencode_flags(archs), *(["-Xptxas", "-v"] if ptxas_verbose else [])]


def build(out_dir: Path, archs: Optional[Sequence[str]] = None, max_jobs: Optional[int] = None,
          ptxas_verbose: bool = False, root: Path = CSRC,
          instances: Optional[Callable[[Path], bool]] = None,
          instance_archs: Optional[Sequence[str]] = None, store: Optional[Path] = None) -> BuildResult:
    """Compile every .cu (for each arch) and bindings.cpp, link them with the CUDA runtime
    static into out_dir/_cuda_ext<EXT_SUFFIX>, and return it with nvcc's output. The module
    appears in out_dir whole or not at all (built aside, then renamed). `instances(path)`
    says which instance files to build (default: all); none are when the CUTLASS headers
    are not installed (the log says what was left out). `instance_archs` (default: archs)
    narrows the archs of the instance files, each a minute of nvcc an arch (the tests'
    build takes one for sm_90a only). Each .cu object is compiled into `store` (default
    object_store()) or taken from it when an earlier build compiled it; the instance files,
    the longest compiles, start first."""
    start = time.perf_counter()
    nvcc = find_nvcc()
    if nvcc is None:
        raise ExtensionUnavailable(
            "cannot build the seqops CUDA extension: nvcc not found (install the CUDA toolkit or set CUDA_HOME; "
            "or build it on another machine with `python -m seqops._ext build DIR` and set SEQOPS_CUDA_EXT_DIR=DIR)")
    if not (root / "bindings.cpp").is_file():
        raise ExtensionUnavailable(f"cannot build the seqops CUDA extension: its sources are not at {root} "
                                   "(install seqops from a source checkout, or use a prebuilt extension)")
    archs = list(archs) if archs is not None else target_archs()
    sources = compiled_sources(root)
    notes = []
    without_cutlass = cutlass_include() is None
    left_out = [s for s in sources if is_instance(s, root) and (without_cutlass or
                                                                 (instances is not None and not instances(s)))]
    if left_out:
        sources = [s for s in sources if s not in left_out]
        why = "the CUTLASS headers are not installed (pip install nvidia-cutlass)" if without_cutlass else "as asked"
        notes.append(f"== left out {len(left_out)} instance files ({why}): "
                     + ", ".join(s.relative_to(root).as_posix() for s in left_out) + "\n")
    cuda_flags = cuda_compile_flags(archs, ptxas_verbose, root)
    instance_flags = cuda_compile_flags(instance_archs, ptxas_verbose, root) if instance_archs else cuda_flags
    bindings_flags = [*OPTIONS, "-I", str(root), f'-DSEQOPS_SOURCE_HASH="{source_hash(root)}"',
                      "-I", pybind11_include(), "-I", sysconfig.get_paths()["include"]]
    store = Path(store) if store is not None else object_store()
    with contextlib.suppress(OSError):
        store.mkdir(parents=True, exist_ok=True)
    writable = os.access(store, os.W_OK)  # if not (a read-only cache), what is missing compiles aside
    extra_flags = ("-Xptxas", "-v") if ptxas_verbose else ()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        compiles = []  # (run it, what, its object), the instance files first
        for source in sorted(sources, key=lambda s: not is_instance(s, root)):
            what = source.relative_to(root).as_posix()
            name = what.replace("/", "_")
            instance = is_instance(source, root)
            flags = bindings_flags if source.suffix != ".cu" else instance_flags if instance else cuda_flags
            command = [nvcc, "-c", str(source), *flags]
            if source.suffix == ".cu":  # not the bindings: those have Python's own ABI, so are built each time
                source_archs = instance_archs if instance and instance_archs else archs
                stored = store / f"{name}.{object_key(source, source_archs, nvcc, root, extra_flags)}.o"
                if writable or _in_store(stored):
                    compiles.append((functools.partial(_compile_into_store, command, what, stored), what, stored))
                    continue
            obj = work / (name + ".o")
            compiles.append((functools.partial(_compile_aside, [*command, "-o", str(obj)], what), what, obj))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max_jobs or jobs()) as pool:
            done = list(pool.map(lambda c: c[0](), compiles))
        logs = notes + [log for log, _ in done]
        reused = tuple(what for (_, what, _), (_, was_reused) in zip(compiles, done) if was_reused)
        target = work / f"{MODULE}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"
        logs.append(_run([nvcc, "-shared", "-cudart", "static", "-o", str(target), *(str(c[2]) for c in compiles)],
                         "link"))
        final = out_dir / target.name
        os.replace(target, final)
        if writable:
            _prune_store(store)
        objects = tuple(obj for _, _, obj in compiles if obj.parent == store)
        return BuildResult(final, "\n".join(logs), time.perf_counter() - start, reused, objects)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def import_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"seqops.{MODULE}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _current(module: ModuleType) -> bool:
    """Whether `module` was built from the csrc/ present here (always, when no csrc/ is)."""
    return not (CSRC / "bindings.cpp").is_file() or getattr(module, "source_hash", None) == source_hash()


_loaded: list[ModuleType] = []
_failure: list[str] = []


def load() -> ModuleType:
    """The extension module, found or built once per process (see the module docstring).
    Raises ExtensionUnavailable saying what failed."""
    if _loaded:
        return _loaded[0]
    if _failure:
        raise ExtensionUnavailable(_failure[0])
    try:
        module = _find_or_build()
    except ExtensionUnavailable as error:
        _failure.append(str(error))
        raise
    _loaded.append(module)
    return module


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Holds folder/.lock exclusively: processes starting together (pytest-xdist workers)
    build once, the others waiting and then finding the module."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        try:
            import fcntl
        except ImportError:  # not POSIX: builds may race, each still renames its module in whole
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _find_or_build() -> ModuleType:
    skipped = []
    candidates = []
    if os.environ.get("SEQOPS_CUDA_EXT_DIR"):
        folder = Path(os.environ["SEQOPS_CUDA_EXT_DIR"])
        path = module_file(folder)
        if path is None:
            raise ExtensionUnavailable(f"SEQOPS_CUDA_EXT_DIR={folder} holds no {MODULE} module "
                                       f"(build one with `python -m seqops._ext build {folder}`)")
        candidates.append(path)
    installed = module_file(PACKAGE_DIR)
    if installed is not None:
        candidates.append(installed)
    for path in candidates:
        try:
            module = import_module(path)
        except ImportError as error:
            skipped.append(f"{path} does not import ({error})")
            continue
        if _current(module):
            return module
        skipped.append(f"{path} was built from other sources than {CSRC}")
    nvcc = find_nvcc()
    if nvcc is None and skipped:
        raise ExtensionUnavailable("no usable seqops CUDA extension: " + "; ".join(skipped) + "; and nvcc is not found "
                                   "to build one")
    archs = target_archs()
    folder = cache_root() / "cuda_ext" / (build_key(archs, nvcc) if nvcc else "no-nvcc")
    with _build_lock(folder):
        cached = module_file(folder)
        if cached is None:
            cached = build(folder, archs).path
    try:
        return import_module(cached)
    except ImportError as error:
        raise ExtensionUnavailable(f"the seqops CUDA extension at {cached} does not import ({error})") from None


def unavailable_reason() -> Optional[str]:
    """None when the extension loads and its CUDA runtime can use the GPU, else why not
    (found or built once, then remembered)."""
    if not _reason:
        try:
            _reason.append(runtime_problem(load()))
        except ExtensionUnavailable as error:
            _reason.append(str(error))
    return _reason[0]


_reason: list[Optional[str]] = []


def runtime_problem(module: ModuleType) -> Optional[str]:
    """Why the module's CUDA runtime (linked in) cannot use this machine's GPU, or None."""
    status = module.cuda_status()
    if not status["error"]:
        return None
    version = lambda v: f"{v // 1000}.{v % 1000 // 10}"
    driver = (f"the driver supports up to {version(status['driver_version'])}; an older nvcc builds for older drivers"
              if status["driver_version"] else "no NVIDIA driver is installed")
    return (f"the seqops CUDA extension cannot use the GPU: {status['error']} (it carries CUDA runtime "
            f"{version(status['runtime_version'])}; {driver})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqops._ext",
                                     description="Build the seqops CUDA extension into a folder (no GPU needed).")
    sub = parser.add_subparsers(dest="command", required=True)
    build_parser = sub.add_parser("build", help="build into DIR; use it elsewhere with SEQOPS_CUDA_EXT_DIR=DIR")
    build_parser.add_argument("dir", type=Path)
    build_parser.add_argument("--archs", help="e.g. '80;90a' (default: SEQOPS_CUDA_ARCHS, TORCH_CUDA_ARCH_LIST, "
                                              "the visible GPUs, else 80;90a)")
    build_parser.add_argument("--ptxas-verbose", action="store_true", help="print registers and spills per kernel")
    args = parser.parse_args(argv)
    archs = parse_archs(args.archs) if args.archs else None
    try:
        result = build(args.dir, archs, ptxas_verbose=args.ptxas_verbose)
    except ExtensionUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    (args.dir / "build.log").write_text(result.log)
    if args.ptxas_verbose:
        print(result.log)
    print(f"built {result.path} in {result.seconds:.0f} s ({len(result.reused)} objects from {object_store()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
