"""The attention kernels' tensor-descriptor loads (TMA on sm_90), in the forward and the
backward's dK/dV and dQ kernels: the launchers take them exactly where the operands'
alignment lets a descriptor address every (batch, head) slice, and they read the same
values as the pointer loads, so that both give bitwise the same outputs and gradients at
ragged lengths, head dims that are not a power of two, GQA, masks, causality and dropout.
Under the interpreter descriptors run as loads, so these tests run the descriptor code
path on the CPU; the static report checks that it compiles to TMA loads on sm_90
(benchmarks/static_report)."""
import pytest
import torch

from devices import DEVICES, skip_unless_runnable
from seqops.kernels.attention.common import tensor_descriptors_fit
from test_attention_offsets import launch_flags
from test_attention_strides import E, L, PER_TENSOR, S


@pytest.fixture
def forward():
    from seqops.kernels.attention import forward

    return forward


# Which of test_attention_strides' layouts a descriptor can address (E = 40: rows of 80
# or 160 bytes, both multiples of 16).
FITS = {
    "projection-transposed": True,
    "sequence-first": True,
    "head-dim-strided": False,  # columns 2 apart: a descriptor needs contiguous rows
    "head-dim-major": False,
    "storage-offset": False,  # the data pointer and the row stride (47 elements) are off 16 bytes
    "batch-and-heads-strided": True,
    "expanded-batch": True,  # stride 0 along batch: every slice starts at the same address
    "expanded-heads": True,
}


@pytest.mark.parametrize("layout", list(PER_TENSOR))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_fit_follows_the_alignment_of_each_layout(forward, layout, dtype):
    q = PER_TENSOR[layout]("cpu", dtype, L).detach()
    assert tensor_descriptors_fit([q]) is FITS[layout]


def test_fit_refuses_rows_too_short_or_not_advancing(forward):
    short = torch.randn(1, 1, 8, 4, dtype=torch.float16)  # rows of 8 bytes
    assert not tensor_descriptors_fit([short])
    same_row = torch.randn(1, 1, 1, 64).expand(1, 1, 8, 64)  # row stride 0
    assert not tensor_descriptors_fit([same_row])
    assert tensor_descriptors_fit([torch.randn(1, 1, 8, 64)])
    # Any one operand that does not fit sends the launch to pointer loads.
    assert not tensor_descriptors_fit([torch.randn(1, 1, 8, 64), short])


@pytest.mark.parametrize("layout", ["projection-transposed", "storage-offset"])
@pytest.mark.parametrize("device", DEVICES)
def test_launcher_takes_descriptors_where_they_fit_and_run(forward, monkeypatch, device, layout):
    skip_unless_runnable(device, "triton")
    from seqops.kernels.runtime import tensor_descriptors_run

    q = PER_TENSOR[layout](device, torch.float16, L).detach()
    k, v = (torch.randn(2, 3, S, E, device=device, dtype=torch.float16) for _ in range(2))
    flags = launch_flags(monkeypatch, forward, lambda: forward.attention_forward(q, k, v, None, 0.0, False, 0, 0.1, 0),
                         flag="TENSOR_DESCRIPTORS")
    assert flags == {"attention_forward_kernel": FITS[layout] and tensor_descriptors_run(torch.device(device))}


# (Lq, S, E, Ev, Hq, Hkv, mask, causal, causal offset, dropout): lengths that end inside a
# tile, head dims that are not powers of two, GQA, masks, causality (offset for Lq < S) and dropout.
CASES = {
    "plain": (37, 53, 40, 24, 2, 2, None, False, 0, 0.0),
    "gqa-causal": (29, 45, 64, 64, 4, 2, None, True, 0, 0.0),
    "bottom-right-causal-bool-mask": (19, 50, 48, 32, 2, 1, "bool", True, 31, 0.0),
    "float-mask-dropout": (50, 33, 16, 40, 2, 2, "float", False, 0, 0.2),
    "one-query": (1, 70, 32, 32, 4, 1, None, True, 69, 0.0),
}


def case_inputs(case: str, device: str, dtype: torch.dtype):
    """(q, k, v, mask, forward's arguments after q, k, v, mask) of a CASES entry, fresh."""
    skip_unless_runnable(device, "triton")
    from seqops.kernels.runtime import tensor_descriptors_run

    if not tensor_descriptors_run(torch.device(device)):
        pytest.skip("this GPU has no TMA (sm_90 and later)")
    Lq, S_, E_, Ev, Hq, Hkv, mask_kind, causal, offset, dropout = CASES[case]
    q = torch.randn(2, Hq, Lq, E_, device=device, dtype=dtype)
    k = torch.randn(2, Hkv, S_, E_, device=device, dtype=dtype)
    v = torch.randn(2, Hkv, S_, Ev, device=device, dtype=dtype)
    mask = {None: None,
            "bool": torch.rand(2, 1, Lq, S_, device=device) > 0.3,
            "float": torch.randn(1, Hq, Lq, S_, device=device, dtype=dtype)}[mask_kind]
    return q, k, v, mask, (dropout, causal, offset, E_ ** -0.5, 1234)


def assert_same(name: str, through_descriptors, through_pointers, finite: bool = True):
    """Descriptor and pointer results agree (and, when `finite`, hold no inf or NaN)."""
    assert not finite or through_descriptors.isfinite().all(), name
    if through_descriptors.device.type == "cpu":  # the interpreter: the same values through the same arithmetic
        assert torch.equal(through_descriptors, through_pointers), name
    else:  # compiled, the two may schedule the arithmetic apart: within a rounding
        torch.testing.assert_close(through_descriptors, through_pointers, msg=name)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_descriptor_loads_give_the_pointer_loads_result(forward, device, dtype, case):
    q, k, v, mask, rest = case_inputs(case, device, dtype)
    assert tensor_descriptors_fit([q, k, v])
    out, lse = forward.attention_forward(q, k, v, mask, *rest, tensor_descriptors=True)
    out_pointers, lse_pointers = forward.attention_forward(q, k, v, mask, *rest, tensor_descriptors=False)
    assert_same("out", out, out_pointers)
    assert_same("lse", lse, lse_pointers, finite=False)  # -inf for a row with every key masked


@pytest.mark.parametrize("schedule, kernels", [
    ("fused", ["attention_backward_fused_kernel"]),
    ("split", ["attention_backward_dkdv_kernel", "attention_backward_dq_kernel"]),
])
@pytest.mark.parametrize("layout", ["projection-transposed", "storage-offset"])
def test_backward_takes_descriptors_for_its_matmul_kernels_where_they_fit(monkeypatch, layout, schedule, kernels):
    from seqops.kernels.attention import backward
    from seqops.kernels.runtime import tensor_descriptors_run

    if not tensor_descriptors_run(torch.device("cpu")):
        pytest.skip("kernels are not interpreted here")
    q = PER_TENSOR[layout]("cpu", torch.float16, L).detach()
    k, v = (torch.randn(2, 3, S, E, dtype=torch.float16) for _ in range(2))
    out = torch.randn(2, 3, L, E, dtype=torch.float16)
    lse = torch.randn(2, 3, L)
    flags = launch_flags(monkeypatch, backward, lambda: backward.attention_backward(
        torch.randn_like(out), q, k, v, out, lse, None, 0.0, False, 0, 0.1, 0, False, schedule=schedule),
        flag="TENSOR_DESCRIPTORS")
    assert flags == {kernel: FITS[layout] for kernel in kernels}


@pytest.mark.parametrize("case", ["gqa-causal", "bottom-right-causal-bool-mask", "float-mask-dropout"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_backward_descriptor_loads_give_the_pointer_loads_gradients(device, dtype, case):
    from seqops.kernels.attention import backward, forward

    q, k, v, mask, rest = case_inputs(case, device, dtype)
    out, lse = forward.attention_forward(q, k, v, mask, *rest)
    grad_out = torch.randn_like(out)
    assert tensor_descriptors_fit([q, k, v, grad_out])
    args = (grad_out, q, k, v, out, lse, mask, *rest, mask is not None and mask.dtype != torch.bool)
    with_descriptors = backward.attention_backward(*args, tensor_descriptors=True)
    with_pointers = backward.attention_backward(*args, tensor_descriptors=False)
    for name, a, b in zip(("dq", "dk", "dv", "dmask"), with_descriptors, with_pointers):
        if b is None:
            assert a is None
        else:
            assert_same(name, a, b)


def test_backward_keeps_head_dims_past_128_on_pointer_loads(monkeypatch):
    from seqops.kernels.attention import backward

    def launched_flags(head_dim):
        q, k, v, out = (torch.randn(1, 2, 8, head_dim, dtype=torch.bfloat16) for _ in range(4))
        return launch_flags(monkeypatch, backward, lambda: backward.attention_backward(
            torch.randn_like(out), q, k, v, out, torch.randn(1, 2, 8), None, 0.0, False, 0, 0.1, 0, False,
            tensor_descriptors=True), flag="TENSOR_DESCRIPTORS")

    assert set(launched_flags(backward.DESCRIPTOR_MAX_BLOCK_D).values()) == {True}
    assert set(launched_flags(backward.DESCRIPTOR_MAX_BLOCK_D + 8).values()) == {False}


def test_the_switch_keeps_every_launch_on_pointer_loads(monkeypatch):
    from seqops.kernels import runtime

    monkeypatch.setattr(runtime, "TENSOR_DESCRIPTORS_ALLOWED", False)
    assert not runtime.tensor_descriptors_run(torch.device("cpu"))
    assert not runtime.tensor_descriptors_run(torch.device("cuda"))
