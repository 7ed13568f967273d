"""The softmax benchmark through pytest-benchmark: `pytest benchmarks/ --benchmark-only`.

Same cases (the quick sweep) and providers as `python -m benchmarks softmax`; that command
is the one whose numbers count (CUDA-event timing, memory, JSON, plots). pytest-benchmark
times wall clock, so each GPU call here synchronizes.
"""
import pytest
import torch

from benchmarks import softmax

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = softmax.cases(DEVICE, quick=True)
PROVIDERS = softmax.providers(DEVICE)


def case_id(case):
    return f"{case.direction}-{str(case.dtype).removeprefix('torch.')}-{'x'.join(map(str, case.shape))}"


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_softmax(benchmark, case, provider):
    reason = provider.unavailable(case, DEVICE)
    if reason is not None:
        pytest.skip(reason)
    fn = provider.prepare(case, DEVICE)

    def call():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.extra_info.update(bytes_moved=case.bytes_moved, device=str(DEVICE))
    benchmark(call)
