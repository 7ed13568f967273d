"""The attention forward's time model (benchmarks/static_report/model.py) against the
arithmetic done by hand, and its section of the static report."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a package of the repository, not of the install
from benchmarks.static_report import model  # noqa: E402

DEVICE = model.Device("test GPU", multiprocessors=100, clock_ghz=2.0, matmul_tflops=800.0, copy_gb_per_s=4000.0)


def test_block_times_are_flops_and_ops_over_the_per_sm_rates():
    shape = model.Shape(1, 1, 128, 128, 128, causal=False)
    prediction = model.predict(DEVICE, shape, 128, 128, 8, 128, 100 * 1024)
    matrix_us = 4 * 128 * 128 * 128 / (800e12 / 100) * 1e6  # 1.048576
    exp_us = 128 * 128 / (16 * 2e9) * 1e6  # 0.512
    other_us = 128 * 128 * 5 / (128 * 2e9) * 1e6  # 0.32
    assert prediction.block_us == pytest.approx((matrix_us, exp_us, other_us), abs=1e-3)
    # Two CTAs fit an SM (128 registers x 256 threads is half the register file; 100 KiB of
    # 227 KiB shared), so the one program runs at half the SM's rate.
    assert prediction.ctas_per_sm == 2
    assert prediction.seconds == pytest.approx(2 * (matrix_us + exp_us + other_us) * 1e-6, rel=1e-3)
    overlapped = model.predict(DEVICE, shape, 128, 128, 8, 128, 100 * 1024, overlapped=True)
    assert overlapped.seconds == pytest.approx(2 * matrix_us * 1e-6, rel=1e-3)


def test_programs_fill_the_slots_in_waves():
    # 64 query blocks x 4 heads = 256 programs on 100 SMs x 1 slot: 3 waves of 8 key blocks.
    shape = model.Shape(1, 4, 8192, 1024, 64, causal=False)
    prediction = model.predict(DEVICE, shape, 128, 128, 8, 255, 200 * 1024)
    assert prediction.ctas_per_sm == 1
    block = sum(prediction.block_us) * 1e-6
    assert prediction.seconds == pytest.approx(3 * 8 * block, rel=1e-3)
    assert prediction.tflops == pytest.approx(shape.flops() / prediction.seconds / 1e12)
    assert prediction.roofline_ratio == pytest.approx(prediction.seconds / (shape.flops() / 800e12))


def test_causal_programs_walk_keys_up_to_their_diagonal():
    assert model.key_blocks(model.Shape(1, 1, 256, 256, 64, True), 64, 128) == [1, 1, 2, 2]
    assert model.key_blocks(model.Shape(1, 1, 256, 256, 64, False), 64, 128) == [2, 2, 2, 2]
    # Fewer queries than keys: aligned bottom-right, the first block already sees 192 + 64 keys.
    assert model.key_blocks(model.Shape(1, 1, 64, 256, 64, True), 64, 128) == [2]
    assert model.fa3_shape(128, True).flops() == 4 * 2 * 16 * 8192 * 8192 * 128 / 2


def test_a_program_too_large_for_an_sm_has_no_prediction():
    assert model.ctas_per_sm(DEVICE, 8, 255, 300 * 1024) == 0
    assert model.predict(DEVICE, model.fa3_shape(64, False), 128, 128, 8, 255, 300 * 1024) is None


def test_committed_device_ceilings_are_read():
    device = model.measured_device()
    assert device.multiprocessors > 0 and device.matmul_tflops > 100 and device.copy_gb_per_s > 1000


def test_report_models_the_hopper_descriptor_forward():
    report = (ROOT / "benchmarks" / "results" / "static" / "triton_kernels.md").read_text()
    section = report.split("## Modelled attention forward", 1)[1]
    rows = [line for line in section.splitlines() if "TENSOR_DESCRIPTORS BLOCK_D=128" in line]
    assert rows, "no modelled row for the hd128 descriptor forward"
