"""The CUDA extension's object store (seqops._ext.object_store): a build compiles each .cu
object once and later builds reuse it, so a build cut short keeps what it finished, an
edit recompiles only what it touches, and objects compiled without a GPU can be carried
to a GPU machine. Checked on a two-file csrc/ of its own (seconds of nvcc, no CuTe)."""
import os
import sys
from pathlib import Path

import pytest

from seqops import _ext

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is the repository's, not installed

KERNEL = "__global__ void scale_kernel(float* x, float a) {{ x[threadIdx.x] *= a{extra}; }}\n"


@pytest.fixture
def csrc(tmp_path):
    if _ext.find_nvcc() is None:
        pytest.skip("nvcc is not installed")
    root = tmp_path / "csrc"
    (root / "ops").mkdir(parents=True)
    (root / "ops" / "scale.cu").write_text(KERNEL.format(extra=""))
    (root / "ops" / "shift.cu").write_text(KERNEL.replace("scale", "shift").format(extra=""))
    (root / "bindings.cpp").write_text("int seqops_test_bindings() { return 1; }\n")  # no pybind11 needed to link
    return root


def stored(store):
    return sorted(path.name.split(".")[0] for path in store.glob("*.o"))


def test_a_second_build_reuses_every_object_and_reports_the_same_log(csrc, tmp_path):
    store = tmp_path / "store"
    first = _ext.build(tmp_path / "one", ["80"], root=csrc, store=store, ptxas_verbose=True)
    assert first.reused == () and first.path.is_file()
    assert stored(store) == ["ops_scale", "ops_shift"] and len(list(store.glob("*.log"))) == 2
    second = _ext.build(tmp_path / "two", ["80"], root=csrc, store=store, ptxas_verbose=True)
    assert second.reused == ("ops/scale.cu", "ops/shift.cu") and second.path.is_file()
    assert second.objects == first.objects and sorted(store.glob("*.o")) == sorted(first.objects)
    # What nvcc printed for an object is kept with it: ptxas's report reads the same.
    assert second.log == first.log and "ptxas info" in second.log and "scale_kernel" in second.log
    assert not [path for path in store.iterdir() if ".tmp" in path.name]


def test_an_edit_recompiles_only_the_object_it_touches(csrc, tmp_path):
    store = tmp_path / "store"
    _ext.build(tmp_path / "one", ["80"], root=csrc, store=store)
    (csrc / "ops" / "scale.cu").write_text(KERNEL.format(extra=" + 1.0f"))
    again = _ext.build(tmp_path / "two", ["80"], root=csrc, store=store)
    assert again.reused == ("ops/shift.cu",)
    assert stored(store) == ["ops_scale", "ops_scale", "ops_shift"]


def test_other_targets_or_options_are_other_objects(csrc, tmp_path):
    store = tmp_path / "store"
    _ext.build(tmp_path / "one", ["80"], root=csrc, store=store)
    assert _ext.build(tmp_path / "two", ["90a"], root=csrc, store=store).reused == ()
    assert _ext.build(tmp_path / "three", ["80"], root=csrc, store=store, ptxas_verbose=True).reused == ()
    assert len(stored(store)) == 6


def test_a_failed_compile_stores_nothing_and_fails_the_build(csrc, tmp_path):
    store = tmp_path / "store"
    (csrc / "ops" / "scale.cu").write_text("__global__ void scale_kernel() { undefined_name; }\n")
    with pytest.raises(_ext.ExtensionUnavailable, match="undefined_name"):
        _ext.build(tmp_path / "one", ["80"], root=csrc, store=store, max_jobs=1)
    assert all(path.name.startswith("ops_shift.") for path in store.iterdir())


def test_objects_unused_for_a_month_are_pruned(csrc, tmp_path):
    store = tmp_path / "store"
    _ext.build(tmp_path / "one", ["80"], root=csrc, store=store)
    (csrc / "ops" / "scale.cu").write_text(KERNEL.format(extra=" + 1.0f"))
    old = next(store.glob("ops_scale.*.o"))
    month_ago = old.stat().st_mtime - (_ext.OBJECT_STORE_DAYS + 1) * 86400
    os.utime(old, (month_ago, month_ago))
    _ext.build(tmp_path / "two", ["80"], root=csrc, store=store)
    assert not old.exists() and not old.with_suffix(".log").exists()
    assert stored(store) == ["ops_scale", "ops_shift"]


def test_the_default_store_lives_in_seqops_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQOPS_CACHE_DIR", str(tmp_path))
    assert _ext.object_store() == tmp_path / "cuda_objects"


def test_the_device_carry_holds_this_builds_objects_and_nothing_stale(tmp_path, monkeypatch):
    """benchmarks/device_carry copies exactly the objects (and logs) of the build it ran into
    .seqops_cache/cuda_objects: a carry is 64 MiB at most and stale objects would waste it."""
    import dataclasses

    from benchmarks import device_carry

    store, cache = tmp_path / "store", tmp_path / "carry"
    store.mkdir()
    objects = []
    for name in ("a.cu.1111.o", "b.cu.2222.o"):
        (store / name).write_bytes(b"object")
        (store / name).with_suffix(".log").write_text("== nvcc said")
        objects.append(store / name)
    (store / "a.cu.0000.o").write_bytes(b"an older object of a.cu")
    (cache / "cuda_objects").mkdir(parents=True)
    (cache / "cuda_objects" / "stale.o").write_bytes(b"from an earlier carry")
    result = _ext.BuildResult(tmp_path / "m.so", "", 1.0, ("a.cu",), tuple(objects))
    monkeypatch.setattr(device_carry, "CACHE_DIR", cache)
    monkeypatch.setattr(device_carry._ext, "build", lambda folder, archs: dataclasses.replace(result))
    carried = device_carry.compile_objects(["90a"])
    assert [p.name for p in carried] == ["a.cu.1111.log", "a.cu.1111.o", "b.cu.2222.log", "b.cu.2222.o"]


def test_the_device_carry_keeps_one_wheel_of_each_package(tmp_path, monkeypatch):
    from benchmarks import device_carry

    monkeypatch.setattr(device_carry, "PEERS_DIR", tmp_path)
    for name in ("nvidia_cutlass-4.1.0.0-py3-none-any.whl", "liger_kernel-0.8.5-py3-none-any.whl",
                 "flash_attn-2.8.0-cp312-linux_x86_64.whl"):
        (tmp_path / name).write_bytes(b"wheel")
    asked = []
    monkeypatch.setattr(device_carry.subprocess, "run", lambda command, check: asked.append(command[-1]))
    device_carry.download("nvidia-cutlass==4.2.0.0", "3.12")
    assert asked == ["nvidia-cutlass==4.2.0.0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flash_attn-2.8.0-cp312-linux_x86_64.whl",
                                                          "liger_kernel-0.8.5-py3-none-any.whl"]


def test_a_read_only_store_gives_what_it_has_and_the_rest_compiles_aside(csrc, tmp_path, monkeypatch):
    """A cache that cannot be written (a read-only home, a carried folder) never fails a build."""
    store = tmp_path / "store"
    _ext.build(tmp_path / "one", ["80"], root=csrc, store=store)
    (csrc / "ops" / "scale.cu").write_text(KERNEL.format(extra=" + 1.0f"))
    access = os.access  # root writes into read-only folders, so the store's answer is stubbed
    monkeypatch.setattr(os, "access", lambda path, mode: (mode != os.W_OK or Path(path) != store) and access(path, mode))
    again = _ext.build(tmp_path / "two", ["80"], root=csrc, store=store)
    assert again.reused == ("ops/shift.cu",) and again.path.is_file()
    assert stored(store) == ["ops_scale", "ops_shift"]
