"""The CUDA C++ extension builds on a machine without a GPU: every .cu for sm_80 and sm_90a
with no register spill, the bindings, the static link; the module imports, and a call
without a GPU raises a clear error instead of crashing. Prints registers and shared
memory per kernel (pytest -s, or the assertion message) so CI logs show them."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cuda_build import ARCHS, ONE_BUILD, built
from seqops import _ext

ROOT = Path(__file__).resolve().parents[1]
pytestmark = ONE_BUILD
sys.path.insert(0, str(ROOT))  # benchmarks/ is a package of the repository, not of the install
from benchmarks.cuda_report.ptxas_log import KernelReport, ptxas_reports  # noqa: E402
from benchmarks.cuda_report.sass import find_cuobjdump, instructions_per_function  # noqa: E402

SPILLING_LOG = """\
ptxas info    : Compiling entry function '_Z6kernelv' for 'sm_80'
ptxas info    : Function properties for _Z6kernelv
    16 bytes stack frame, 12 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 128 bytes smem, 531 bytes cmem[0]
"""


def test_ptxas_report_is_read_per_kernel_and_finds_spills():
    (report,) = ptxas_reports(SPILLING_LOG)
    assert report.arch == "sm_80" and report.registers == 64 and report.shared_bytes == 128
    assert (report.stack_bytes, report.spill_store_bytes, report.spill_load_bytes) == (16, 12, 12)
    assert report.name.startswith("kernel")


def report_table(reports) -> list[str]:
    """One line per kernel: registers, shared memory and stack per target."""
    by_name: dict = {}
    for r in reports:
        by_name.setdefault(r.name, {})[r.arch] = r
    lines = []
    for name, per_arch in sorted(by_name.items()):
        cells = "  ".join(f"{arch} {r.registers:3} regs {r.shared_bytes:5} B smem {r.stack_bytes:3} B stack"
                          for arch, r in sorted(per_arch.items()))
        short = name.replace("(anonymous namespace)::", "").removeprefix("void ").split("(")[0]
        lines.append(f"{cells}  {short}")
    return lines


def test_extension_builds_for_both_targets_without_spills(capsys):
    result, module = built()
    reports = ptxas_reports(result.log)
    with capsys.disabled():  # in CI's log whether the test passes or not
        print(f"\nCUDA extension built in {result.seconds:.0f} s ({result.path.stat().st_size // 1024} KiB); "
              "per kernel:", *report_table(reports), sep="\n")
    assert reports, "ptxas reported no kernel: -Xptxas -v did not reach it"
    spills = [r for r in reports if r.spill_store_bytes or r.spill_load_bytes]
    assert not spills, "register spills:\n" + "\n".join(
        f"{r.arch} {r.name}: {r.spill_store_bytes} B stored, {r.spill_load_bytes} B loaded" for r in spills)
    warnings = [line for line in result.log.splitlines() if "ptxas warning" in line]
    assert not warnings, "\n".join(warnings)
    by_arch = {arch: {r.name for r in reports if r.arch == f"sm_{arch}"} for arch in ARCHS}
    # The linked instance is built for sm_90a alone (cuda_build.LINKED_INSTANCE_ARCHS).
    attention = [name for name in by_arch["90a"] if "attention_forward_kernel<" in name]
    assert len(attention) == 1 and "ForwardTraits<64, cutlass::half_t>" in attention[0], attention
    assert by_arch["80"] == by_arch["90a"] - set(attention) and by_arch["80"], "every kernel is built for both targets"
    for form in ("softmax_forward_warp_kernel", "softmax_forward_block_kernel", "softmax_forward_online_kernel",
                 "softmax_backward_warp_kernel", "softmax_backward_block_kernel", "softmax_backward_online_kernel",
                 "lstm_cell_forward_kernel", "lstm_cell_backward_kernel"):
        assert any(form in name for name in by_arch["80"]), form
    # Of the instance files (csrc/*/instances/) this build links one (cuda_build.LINKED_INSTANCE,
    # above): the compiles of all are checked below, through benchmarks/cuda_report.
    # The GRU and Elman RNN cells: each dtype, and for the RNN each activation.
    for form, instances in (("gru_cell_forward_kernel", 3), ("gru_cell_backward_kernel", 3),
                            ("rnn_cell_forward_kernel", 6), ("rnn_cell_backward_kernel", 6)):
        assert sum(form in name for name in by_arch["80"]) == instances, form
    assert module.source_hash == _ext.source_hash()


SASS_SAMPLE = """\
        arch = sm_80
                Function : _Z1aIfEv
        /*0000*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0010*/                   FFMA R1, R2, R3, R1 ;
                Function : _Z1bIfEv
        /*0000*/                   FFMA R1, R2, R3, R1 ;
        arch = sm_90a
                Function : _Z1aIfEv
        /*0000*/              @P0  HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
"""


def test_sass_is_counted_per_arch_and_kernel():
    counts = instructions_per_function(SASS_SAMPLE)
    assert {key: c["HMMA"] for key, c in counts.items()} == {
        ("sm_80", "_Z1aIfEv"): 1, ("sm_80", "_Z1bIfEv"): 0, ("sm_90a", "_Z1aIfEv"): 2}


def test_recurrent_kernels_run_their_products_on_tensor_cores_in_16_bits_only():
    """Every fp16/bf16 kernel of the recurrent cells and whole-sequence layers holds
    mma.sync (HMMA) on both targets; the fp32 ones hold none: fp32 stays FMAs, no TF32."""
    result, _ = built()
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        pytest.skip("no cuobjdump to read the SASS with")
    listing = subprocess.run([cuobjdump, "-sass", str(result.path)], capture_output=True, text=True, timeout=600)
    assert listing.returncode == 0, listing.stderr[-2000:]
    recurrent = {key: counts for key, counts in instructions_per_function(listing.stdout).items()
                 if any(form in key[1] for form in ("lstm_cell_", "gru_cell_", "rnn_cell_", "lstm_sequence_",
                                                    "hidden_sequence_"))}
    assert {arch for arch, _ in recurrent} == {"sm_80", "sm_90a"} and len(recurrent) >= 2 * 40, sorted(recurrent)
    for (arch, name), counts in recurrent.items():
        sixteen_bits = "13__nv_bfloat16" in name or "6__half" in name
        assert (counts["HMMA"] > 0) == sixteen_bits, (arch, name, counts)


def test_a_call_without_a_gpu_raises_a_clear_error():
    _, module = built()
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the kernels' own tests run the calls")
    x = torch.randn(3, 8)
    y = torch.empty_like(x)
    strides = (0, 0, 8, 1)
    with pytest.raises(module.CudaError, match="softmax_forward: the CUDA runtime failed .*no usable NVIDIA GPU"):
        module.softmax_forward(x.data_ptr(), 0, strides, y.data_ptr(), 0, strides, 0, (0, 0, 0, 0), 3, 8, 1, 3, 0,
                               1.0, 0, 0)
    assert issubclass(module.CudaError, RuntimeError)


def test_without_a_gpu_the_runtime_problem_is_the_backends_reason():
    _, module = built()
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    status = module.cuda_status()
    assert status["device_count"] == 0 and status["error"] and status["runtime_version"] >= 12000
    reason = _ext.runtime_problem(module)
    assert reason.startswith("the seqops CUDA extension cannot use the GPU: cuda") and "CUDA runtime" in reason


def test_a_bad_argument_is_refused_before_any_launch():
    _, module = built()
    strides = (0, 0, 8, 1)
    with pytest.raises(module.CudaError, match="unknown dtype code 7 for x"):
        module.softmax_forward(16, 7, strides, 16, 0, strides, 0, strides, 3, 8, 1, 3, 0, 1.0, 0, 0)
    with pytest.raises(module.CudaError, match="bad argument: softmax_backward: dy must be in y's dtype or float32"):
        module.softmax_backward(16, 1, strides, 16, 2, strides, 0, strides, 16, 0, strides, 3, 8, 1, 3, 0, 1.0, 0, 0)
    with pytest.raises(module.CudaError, match="bad argument: softmax_forward: x and y must not be null"):
        module.softmax_forward(0, 0, strides, 16, 0, strides, 0, strides, 3, 8, 1, 3, 0, 1.0, 0, 0)


# -- the instance files (csrc/<family>/instances/*.cu), checked through the committed report --

def test_instance_files_compile_for_both_targets_without_spills():
    """benchmarks/cuda_report, run apart: it compiles only the instance files the committed
    report lacks, and fails on a compile error, a spill, a ptxas warning or no kernel."""
    if _ext.find_nvcc() is None:
        pytest.skip("nvcc is not installed")
    result = subprocess.run([sys.executable, "-m", "benchmarks.cuda_report"], capture_output=True, text=True,
                            timeout=1500, cwd=ROOT)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "\n0 failure(s)" in report


def test_the_hopper_forward_must_hold_wgmma_and_tma_in_its_sass():
    """The report's rule for the sm90a attention forward's objects: no HGMMA or no
    UTMALDG in the SASS (or no cuobjdump to read it) fails; other objects and other archs
    need neither."""
    from benchmarks.cuda_report.report import ObjectBuild
    from benchmarks.cuda_report.sass import count_instructions

    listing = """
        /*0f20*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT, gsb0 ;
        /*0f30*/              @!P0 LDGSTS.E.BYPASS.LTC128B.128 [R29], desc[UR14][R20.64] ;
        /*0f40*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
"""
    assert count_instructions(listing) == {"HGMMA": 1, "HMMA": 1, "LDGSTS": 1, "UTMALDG": 0}
    kernel = KernelReport(name="attention_forward_sm90_kernel", arch="sm_90a", registers=200, shared_bytes=0,
                          stack_bytes=0, spill_store_bytes=0, spill_load_bytes=0)
    hopper = "attention/instances/forward_sm90_hd128_bf16.cu"
    with_wgmma = ObjectBuild(hopper, "90a", 1.0, [kernel], instructions={"HGMMA": 16, "HMMA": 0, "UTMALDG": 22})
    assert not with_wgmma.problems()
    lost = dataclasses.replace(with_wgmma, instructions={"HGMMA": 0, "HMMA": 64, "UTMALDG": 22})
    assert [p for p in lost.problems() if "no " in p] == [f"no wgmma (HGMMA) in its SASS: {lost.instructions}"]
    no_tma = dataclasses.replace(with_wgmma, instructions={"HGMMA": 16, "LDGSTS": 32, "UTMALDG": 0})
    assert any("no TMA (UTMALDG)" in p for p in no_tma.problems())
    unread = dataclasses.replace(with_wgmma, instructions=None)
    assert any("could not be read" in p for p in unread.problems())
    assert not dataclasses.replace(lost, arch="80").problems()
    assert not dataclasses.replace(lost, source="attention/instances/forward_hd128_bf16.cu").problems()


def test_instance_files_are_told_apart_and_left_out_on_request(tmp_path):
    (tmp_path / "attention" / "instances").mkdir(parents=True)
    instance = tmp_path / "attention" / "instances" / "forward_hd64_fp16.cu"
    for path in (instance, tmp_path / "attention" / "launch.cu", tmp_path / "bindings.cpp"):
        path.write_text("// empty\n")
    assert [p.name for p in _ext.compiled_sources(tmp_path) if _ext.is_instance(p, tmp_path)] == [instance.name]
    assert not _ext.is_instance(tmp_path / "bindings.cpp", tmp_path)


def test_an_instance_is_reported_per_kernel_and_its_problems_named(tmp_path):
    from benchmarks.cuda_report.__main__ import compile_instance
    from benchmarks.cuda_report.report import ObjectBuild

    if _ext.find_nvcc() is None:
        pytest.skip("nvcc is not installed")
    (tmp_path / "x" / "instances").mkdir(parents=True)
    source = tmp_path / "x" / "instances" / "scale.cu"
    source.write_text("__global__ void scale_kernel(float* x, float a) { x[threadIdx.x] *= a; }\n")
    build = compile_instance(source, "80", _ext.find_nvcc(), root=tmp_path)
    assert build.source == "x/instances/scale.cu" and build.arch == "80"
    assert [k.name.split("(")[0] for k in build.kernels] == ["scale_kernel"] and not build.problems()
    assert ObjectBuild.from_json(dataclasses.asdict(build)) == build
    key = _ext.object_key(source, "80", _ext.find_nvcc(), root=tmp_path)
    assert key != _ext.object_key(source, "90a", _ext.find_nvcc(), root=tmp_path)
    source.write_text("__global__ void scale_kernel(float* x, float a) { x[threadIdx.x] *= a + 1; }\n")
    assert key != _ext.object_key(source, "80", _ext.find_nvcc(), root=tmp_path)
    # The key follows the headers of csrc/ the file includes, and no others.
    (tmp_path / "x" / "factor.h").write_text("#pragma once\n#define FACTOR 2\n")
    (tmp_path / "x" / "unrelated.h").write_text("#pragma once\n")
    source.write_text('#include "x/factor.h"\n#include <cuda_runtime.h>\n'
                      "__global__ void scale_kernel(float* x, float a) { x[threadIdx.x] *= a * FACTOR; }\n")
    assert _ext.local_includes(source, tmp_path) == [(tmp_path / "x" / "factor.h").resolve()]
    key = _ext.object_key(source, "80", _ext.find_nvcc(), root=tmp_path)
    (tmp_path / "x" / "unrelated.h").write_text("#pragma once\n#define OTHER 1\n")
    assert key == _ext.object_key(source, "80", _ext.find_nvcc(), root=tmp_path)
    (tmp_path / "x" / "factor.h").write_text("#pragma once\n#define FACTOR 3\n")
    assert key != _ext.object_key(source, "80", _ext.find_nvcc(), root=tmp_path)
    source.write_text("__global__ void scale_kernel(float* x) { x[threadIdx.x] = undefined_name; }\n")
    broken = compile_instance(source, "80", _ext.find_nvcc(), root=tmp_path)
    assert broken.problems() and "undefined_name" in broken.problems()[0]
    spilled = KernelReport("k", "sm_80", 255, 0, 16, 8, 8)
    assert ObjectBuild("a.cu", "80", 1.0, [spilled]).problems() == ["k spills 8 B stored, 8 B loaded"]
    assert ObjectBuild("a.cu", "80", 1.0, []).problems() == ["no kernel in ptxas's report"]
    assert ObjectBuild("a.cu", "80", 1.0, [], ["ptxas warning : x"]).problems()[0] == "ptxas: ptxas warning : x"
