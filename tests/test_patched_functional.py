"""seqops.patched_functional / patch_functional: code that calls torch's softmax and
attention functions directly runs seqops inside the block (calls counted), gets torch's
results, and gets torch's own functions back on exit, also when the block raises."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import seqops
from calls import counting_seqops_calls
from devices import DEVICES, skip_unless_runnable

NAMES = [(F, "scaled_dot_product_attention"), (torch, "softmax"), (F, "softmax"), (torch.Tensor, "softmax")]


def torchs_own():
    return [getattr(owner, name) for owner, name in NAMES]


class CausalSelfAttention(torch.nn.Module):
    """A nanoGPT-style block: its own projections, F.scaled_dot_product_attention with
    is_causal, and a softmax head written with Tensor.softmax."""

    def __init__(self, width=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, T, C)).softmax(-1)


@pytest.mark.parametrize("backend", ["triton", "auto"])
@pytest.mark.parametrize("device", DEVICES)
def test_a_model_calling_torchs_functions_runs_seqops_inside_the_block(device, backend):
    skip_unless_runnable(device, backend)
    torch.manual_seed(0)
    model = CausalSelfAttention().to(device)
    x = torch.randn(2, 7, 32, device=device)
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.log().sum(), list(model.parameters()))
    with seqops.patched_functional(), seqops.backend(backend), counting_seqops_calls() as calls:
        out = model(x)
        grads = torch.autograd.grad(out.log().sum(), list(model.parameters()))
    assert sum(n for (op, _), n in calls.items() if op == "attention") == 1, calls
    assert sum(n for (op, _), n in calls.items() if op == "softmax") == 1, calls
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_every_routed_name_calls_seqops_with_torchs_arguments():
    x = torch.randn(4, 6)
    q, k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 4)
    mask = torch.rand(5, 9) > 0.3
    mask[:, 0] = True
    calls_expected = {
        "torch.softmax": (lambda: torch.softmax(x, 1, torch.float64), lambda: torch.softmax(x, 1, dtype=torch.float64)),
        "F.softmax": (lambda: F.softmax(x, dim=0), lambda: F.softmax(x, 0, 3, torch.float64)),
        "Tensor.softmax": (lambda: x.softmax(-1), lambda: x.softmax(dim=0, dtype=torch.float64)),
        "F.sdpa": (lambda: F.scaled_dot_product_attention(q, k, v, mask, scale=0.3),
                   lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
    }
    expected = {name: [call() for call in calls] for name, calls in calls_expected.items()}
    with seqops.patched_functional():
        for name, calls in calls_expected.items():
            for call, want in zip(calls, expected[name]):
                with counting_seqops_calls() as counted:
                    got = call()
                assert sum(counted.values()) == 1, (name, counted)
                assert got.dtype == want.dtype
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_torchs_functions_are_back_after_the_block_even_when_it_raises():
    before = torchs_own()
    with pytest.raises(KeyError):
        with seqops.patched_functional():
            assert [f is g for f, g in zip(torchs_own(), before)] == [False] * len(before)
            raise KeyError("inside")
    assert all(f is g for f, g in zip(torchs_own(), before))
    assert not seqops.integrations.functional.is_functional_patched()


def test_patching_nests_and_the_permanent_form_has_its_undo():
    before = torchs_own()
    seqops.patch_functional()
    try:
        with seqops.patched_functional():
            pass
        assert torch.softmax is not before[1], "the outer patch still holds after the inner block"
        with counting_seqops_calls() as calls:
            torch.softmax(torch.randn(3), 0)
        assert sum(calls.values()) == 1
    finally:
        seqops.unpatch_functional()
    assert all(f is g for f, g in zip(torchs_own(), before))
    with pytest.raises(RuntimeError, match="not patched"):
        seqops.unpatch_functional()


def test_the_torch_backend_does_not_loop_back_into_seqops():
    x = torch.randn(3, 5, dtype=torch.float64)
    q = torch.randn(1, 2, 4, 8, dtype=torch.float64)
    with seqops.patched_functional(), seqops.backend("torch"), counting_seqops_calls() as calls:
        y = torch.softmax(x, -1)
        o = F.scaled_dot_product_attention(q, q, q)
    assert calls == {("softmax", "torch"): 1, ("attention", "torch"): 1}, calls
    torch.testing.assert_close(y, torch.softmax(x, -1))
    torch.testing.assert_close(o, F.scaled_dot_product_attention(q, q, q))


def test_torchs_own_layers_that_call_these_functions_run_seqops():
    """nn.MultiheadAttention (its functional form calls F.scaled_dot_product_attention) and
    nn.Softmax (F.softmax), unpatched, inside the block."""
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)
    softmax = torch.nn.Softmax(dim=-1)
    x = torch.randn(2, 5, 16)
    expected = softmax(attention(x, x, x, need_weights=False)[0])
    with seqops.patched_functional(), counting_seqops_calls() as calls:
        out = softmax(attention(x, x, x, need_weights=False)[0])
    assert sum(n for (op, _), n in calls.items() if op == "attention") == 1, calls
    assert sum(n for (op, _), n in calls.items() if op == "softmax") == 1, calls
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


class Logged(torch.Tensor):
    """A tensor subclass with a __torch_function__ override: seqops leaves its calls to torch."""

    seen = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_what_seqops_does_not_take_goes_to_torch_unchanged():
    x = torch.randn(3, 4)
    with seqops.patched_functional():
        with counting_seqops_calls() as calls:
            logged = torch.softmax(x.as_subclass(Logged), 0)
            nested = torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)])
            nested_out = F.softmax(nested, -1)
        # No dim: torch's F.softmax picks one (and warns), then calls Tensor.softmax.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            implicit = F.softmax(x)
    assert not calls, calls
    assert type(logged) is Logged and "softmax" in Logged.seen
    assert nested_out.is_nested
    assert any("Implicit dimension" in str(w.message) for w in caught)
    torch.testing.assert_close(implicit, torch.softmax(x, 1))


def test_a_compiled_function_sees_the_routed_names():
    """torch.compile traces the routed functions into seqops, also where Dynamo is first
    imported inside the block (tested in a fresh process). Tensor.softmax is not routed
    under compile: Dynamo traces tensor methods as torch's own."""
    program = """
import sys, torch, torch.nn.functional as F
sys.path.insert(0, "tests")
import seqops
from calls import counting_seqops_calls
assert "torch._dynamo" not in sys.modules
q = torch.randn(1, 2, 6, 8)
def attend(q):
    return F.softmax(F.scaled_dot_product_attention(q, q, q, is_causal=True), -1) + torch.softmax(q, 0)
with seqops.patched_functional(), counting_seqops_calls() as calls:
    out = torch.compile(attend, fullgraph=True, backend="aot_eager")(q)
    again = torch.compile(attend, fullgraph=True, backend="aot_eager")(q)
torch.testing.assert_close(out, attend(q), rtol=1e-5, atol=1e-6)
assert {op for op, _ in calls} == {"attention", "softmax"}, calls
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300, env=env,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
