"""What a device call carries, prepared on this machine (network, nvcc, no GPU), so that
the GPU's few minutes go to measuring:

    python -m benchmarks.device_carry [--archs 90a] [--no-objects] [--peer liger-kernel==0.8.5]

  .peers/          the wheels the GPU machine cannot download (it has no network), for its
                   Python: nvidia-cutlass at the version installed here (the CuTe headers;
                   the objects below are keyed by it) and the peers to measure against
  .seqops_cache/   cuda_objects/: the CUDA extension's .cu objects for the GPU's arch,
                   compiled here (about 10 minutes on 2 cores) so that only the Python
                   bindings compile there; they are used when nvcc there is the same release

Both folders are git-ignored, which is what `carry` takes. It ends by printing the total
size (a call carries 64 MiB at most) and the device command, which is

    SEQOPS_CACHE_DIR=$PWD/.seqops_cache python3 benchmarks/gpu_check --quick

after the install line of README's "GPU checks". The objects are keyed by nvcc's version
line, CUTLASS's version, the options and every csrc/ file each includes; where one differs
there, the build compiles that object itself (gpu_check's cuda-build step prints how many
it reused).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from seqops import _ext

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / ".peers"
CACHE_DIR = ROOT / ".seqops_cache"
DEVICE_PYTHON = "3.12"  # the GPU machine's (benchmarks/results/nvidia-h200/NOTES.md)
DEFAULT_PEERS = ("liger-kernel==0.8.5",)
CARRY_LIMIT_BYTES = 64 * 2**20


def download(requirement: str, python: str) -> None:
    """The wheel of `requirement` (name==version) into .peers/, other versions of it out:
    the peers step installs every wheel there, and two of one package would conflict."""
    name = requirement.split("==")[0].replace("-", "_").lower()
    for wheel in PEERS_DIR.glob("*.whl"):
        if wheel.name.lower().startswith(name + "-"):
            wheel.unlink()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "-d", str(PEERS_DIR), requirement], check=True)


def compile_objects(archs: list[str]) -> list[Path]:
    """This build's objects, compiled into (or found in) the local object store, then
    copied alone into .seqops_cache/cuda_objects (nothing stale travels)."""
    with tempfile.TemporaryDirectory() as folder:
        result = _ext.build(Path(folder), archs)
    print(f"built for {';'.join(archs)} in {result.seconds:.0f} s; {len(result.reused)} of {len(result.objects)} "
          f"objects were already in {_ext.object_store()}")
    target = CACHE_DIR / "cuda_objects"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for obj in result.objects:
        for path in (obj, obj.with_suffix(".log")):
            shutil.copy2(path, target / path.name)
    return sorted(target.iterdir())


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_carry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="90a", help="the GPU's arch (default 90a: H100/H200)")
    parser.add_argument("--python", default=DEVICE_PYTHON, help="the GPU machine's Python, for the wheels")
    parser.add_argument("--peer", action="append", help=f"a peer wheel to carry (default: {', '.join(DEFAULT_PEERS)})")
    parser.add_argument("--no-objects", action="store_true", help="carry wheels only; the GPU compiles everything")
    args = parser.parse_args(argv)
    PEERS_DIR.mkdir(exist_ok=True)
    cutlass = _ext.cutlass_version()
    if cutlass in ("none", "unknown"):
        print("nvidia-cutlass is not installed here (pip install 'seqops[cuda]'): nothing to key the objects by",
              file=sys.stderr)
        return 1
    for requirement in (f"nvidia-cutlass=={cutlass}", *(args.peer or DEFAULT_PEERS)):
        download(requirement, args.python)
    if not args.no_objects:
        nvcc = _ext.find_nvcc()
        if nvcc is None:
            print("nvcc is not installed here: carry the wheels alone (--no-objects)", file=sys.stderr)
            return 1
        print(f"compiling with {_ext.nvcc_version(nvcc)}; CUTLASS {cutlass}")
        compile_objects(_ext.parse_archs(args.archs))
    carried = [p for p in (PEERS_DIR, CACHE_DIR) if p.is_dir()]
    total = sum(size(p) for p in carried)
    for path in carried:
        print(f"{path.relative_to(ROOT)}/: {size(path) / 2**20:.1f} MiB")
    print(f"total {total / 2**20:.1f} MiB of the {CARRY_LIMIT_BYTES // 2**20} MiB a call carries")
    print("device call: carry", [str(p.relative_to(ROOT)) for p in carried], "and run\n  "
          "python3 -m pip install --no-deps --no-build-isolation -e . && "
          "SEQOPS_CACHE_DIR=$PWD/.seqops_cache python3 benchmarks/gpu_check --quick")
    return 0 if total <= CARRY_LIMIT_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
