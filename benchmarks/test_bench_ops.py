"""The benchmarks through pytest-benchmark: `pytest benchmarks/ --benchmark-only`.

Same cases (each op's quick sweep) and providers as `python -m benchmarks`; that command
is the one whose numbers count (CUDA-event timing, memory, JSON, plots). pytest-benchmark
times wall clock, so each GPU call here synchronizes.
"""
import pytest
import torch

from benchmarks.__main__ import OPS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = [(op, case, provider) for op, module in OPS.items()
         for case in module.cases(DEVICE, quick=True) for provider in module.providers(DEVICE)]


def case_id(entry):
    op, case, provider = entry
    shape = "x".join(map(str, case.shape))
    return f"{op}-{case.direction}-{str(case.dtype).removeprefix('torch.')}-{shape}-{provider.name}"


@pytest.mark.parametrize("entry", CASES, ids=case_id)
def test_op(benchmark, entry):
    op, case, provider = entry
    reason = provider.unavailable(case, DEVICE)
    if reason is not None:
        pytest.skip(reason)
    fn = provider.prepare(case, DEVICE)

    def call():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.extra_info.update(op=op, flops=case.flops, bytes_moved=case.bytes_moved, device=str(DEVICE))
    benchmark(call)
