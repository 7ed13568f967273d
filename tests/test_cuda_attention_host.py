"""Everything of the CUDA C++ attention that is not a kernel, checked without a GPU: what
its supports() refuses and why, the plain values filled from strided and GQA tensors
(forward and backward), the registration (an explicit choice on CPU tensors refuses,
auto never picks it), the generated instance files against their generator, the
extension's instance tables and argument checks, and the tile schedule the kernels walk
against a brute-force model of which (query, key) pairs are seen (through the compiled
module's host code)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

import seqops
from cuda_build import ONE_BUILD, built, run_host_program
from devices import skip_unless_runnable
from seqops import dispatch
from seqops.backends import cuda_attention
from seqops.backends.cuda_values import DTYPE_CODES
from seqops.kernels.attention.common import dropout_keep

ROOT = Path(__file__).resolve().parent.parent
pytestmark = ONE_BUILD
INSTANCES = ROOT / "csrc" / "attention" / "instances"


def call(q, k=None, v=None, mask=None, dropout_p=0.0, is_causal=False, enable_gqa=False, causal_offset=0):
    """supports()'s arguments, as seqops.ops.attention.api passes them."""
    k = q if k is None else k
    v = k if v is None else v
    return (q, k, v, mask, dropout_p, is_causal, 1 / q.shape[-1] ** 0.5, enable_gqa, causal_offset)


def half(*shape, dtype=torch.float16):
    return torch.randn(*shape, dtype=dtype)


# -- supports() --

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_what_it_takes(dtype, head_dim):
    q = half(2, 4, 17, head_dim, dtype=dtype)
    k = half(2, 2, 33, head_dim, dtype=dtype)
    assert cuda_attention.forward_reason(*call(q, k, is_causal=True, enable_gqa=True, causal_offset=16)) is None
    assert cuda_attention.forward_reason(*call(q[0, 0], k[0, 0])) is None  # no batch or head dims


@pytest.mark.parametrize("case, reason", [
    ("float32", "takes float16 and bfloat16, got torch.float32"),
    ("head dim 96", "takes head dims 64, 128, 256, got 96"),
    ("head dim 32", "takes head dims 64, 128, 256, got 32"),
    ("Ev != E", "value head dim equal to the query's, got E=64 and Ev=128"),
])
def test_what_it_refuses_and_why(case, reason):
    q = half(2, 3, 10, 64)
    args = {
        "float32": lambda: call(q.float()),
        "head dim 96": lambda: call(half(2, 3, 10, 96)),
        "head dim 32": lambda: call(half(2, 3, 10, 32)),
        "Ev != E": lambda: call(q, q, half(2, 3, 10, 128)),
    }[case]()
    why = cuda_attention.forward_reason(*args)
    assert why is not None and reason in why, why
    assert why.endswith(cuda_attention.NOT_YET)  # a feature still to write: GPU tests skip it


def test_head_dim_256_is_taken_with_gradients():
    """Every head dim has forward and backward instances (past 128 the backward's dK/dV
    CTAs take 128 columns each), so a head dim 256 call is taken whether or not it needs
    gradients, a float mask's included; other head dims are refused by name."""
    q = half(2, 3, 10, 256)
    leaf = q.clone().requires_grad_()
    mask = torch.zeros(10, 10, dtype=torch.float16, requires_grad=True)
    for inputs in (call(q), call(leaf, q, q), call(q, mask=mask)):
        assert cuda_attention.forward_reason(*inputs) is None
    why = cuda_attention.forward_reason(*call(half(2, 3, 10, 192).requires_grad_()))
    assert why is not None and "takes head dims 64, 128, 256, got 192" in why


@pytest.mark.parametrize("mask", [torch.ones(10, 10, dtype=torch.bool), torch.zeros(3, 1, 10), torch.zeros(10, 10).half()],
                         ids=["bool", "float32", "float16"])
def test_masks_are_taken(mask):
    assert cuda_attention.forward_reason(*call(half(2, 3, 10, 64), mask=mask)) is None
    # A float mask that requires grad gets one (the dQ kernel writes the score gradient).
    assert cuda_attention.forward_reason(*call(half(2, 3, 10, 64), mask=mask.clone().requires_grad_(
        mask.dtype != torch.bool))) is None


def test_the_mask_gradient_sums_the_score_gradient_over_the_masks_broadcast_dims():
    dscores = torch.randn(2, 3, 5, 7, dtype=torch.float64).float()
    for shape, dims in [((2, 3, 5, 7), []), ((1, 3, 5, 7), [0]), ((2, 1, 1, 7), [1, 2]), ((1, 1, 1, 1), [0, 1, 2, 3])]:
        mask = torch.zeros(shape, dtype=torch.bfloat16)
        grad = cuda_attention.mask_gradient(dscores, mask)
        expected = dscores.sum(dim=dims, keepdim=True) if dims else dscores
        assert grad.shape == mask.shape and grad.dtype == torch.bfloat16
        assert torch.equal(grad, expected.to(torch.bfloat16))
    assert cuda_attention.mask_gradient(None, None) is None


def test_mask_values_read_in_place_with_broadcast_dims_at_stride_0():
    B, Hq, L, S = 2, 4, 5, 7
    padding = torch.ones(B, 1, 1, S, dtype=torch.bool)
    values, held = cuda_attention.mask_values(padding, (B, Hq, L, S))
    assert values == {"mask": padding.data_ptr(), "mask_kind": cuda_attention.MASK_BOOL, "mask_dtype": 0,
                      "mask_strides": (S, 0, 0, 1)}
    bias = torch.randn(Hq, S, L, dtype=torch.bfloat16).transpose(1, 2)[None]  # [1, Hq, L, S], transposed
    values, held = cuda_attention.mask_values(bias, (B, Hq, L, S))
    assert values["mask"] == bias.data_ptr() and values["mask_kind"] == cuda_attention.MASK_ADDITIVE
    assert values["mask_dtype"] == DTYPE_CODES[torch.bfloat16] and values["mask_strides"] == (0, S * L, 1, L)
    wide = torch.randn(1, 1, L, S, dtype=torch.float64)  # rounded to float32 once, held until the launch
    values, held = cuda_attention.mask_values(wide, (B, Hq, L, S))
    assert held[0].dtype == torch.float32 and values["mask"] == held[0].data_ptr() != wide.data_ptr()
    assert values["mask_dtype"] == DTYPE_CODES[torch.float32] and torch.equal(held[0], wide.float())
    assert cuda_attention.mask_values(None, (B, Hq, L, S))[0]["mask_kind"] == cuda_attention.MASK_NONE


def test_inputs_that_require_grad_are_taken():
    """There is a backward: a call that needs gradients is the backend's too."""
    q = half(1, 1, 5, 64).requires_grad_()
    assert cuda_attention.forward_reason(*call(q)) is None


def test_the_contracts_own_limits_come_first():
    why = cuda_attention.forward_reason(*call(half(1, 1, 4, 64).double()))
    assert "float64 runs on torch" in why


# -- plain values --

def test_values_address_transposed_and_gqa_tensors_in_place():
    B, Hq, Hkv, L, S, E = 2, 4, 2, 17, 33, 64
    q = half(B, L, Hq, E).transpose(1, 2)   # a projection's output viewed per head
    k = half(B, Hkv, S, E)
    v = half(B, S, Hkv, E).transpose(1, 2)
    out = torch.empty(B, Hq, L, E, dtype=torch.float16)
    lse = torch.empty(B, Hq, L)
    values = cuda_attention.forward_values(q, k, v, out, lse, True, S - L, 0.125)
    assert values["q"] == q.data_ptr() and values["k"] == k.data_ptr() and values["v"] == v.data_ptr()
    assert values["q_strides"] == (L * Hq * E, E, Hq * E)
    assert values["k_strides"] == (Hkv * S * E, S * E, E)
    assert values["v_strides"] == (S * Hkv * E, E, Hkv * E)
    assert values["out_strides"] == (Hq * L * E, L * E, E) and values["lse_strides"] == (Hq * L, L)
    assert (values["batch"], values["heads_q"], values["heads_kv"]) == (B, Hq, Hkv)
    assert (values["len_q"], values["len_kv"], values["head_dim"]) == (L, S, E)
    assert values["dtype"] == DTYPE_CODES[torch.float16] and values["causal"] is True
    assert values["causal_offset"] == S - L and values["scale"] == 0.125


def test_dims_of_one_and_broadcast_dims_give_stride_0():
    q = half(1, 1, 9, 128, dtype=torch.bfloat16)
    k = half(1, 3, 9, 128, dtype=torch.bfloat16)[:, :1].expand(2, 1, 9, 128)
    values = cuda_attention.forward_values(q, k, k, torch.empty_like(q), torch.empty(1, 1, 9), False, 0, 1.0)
    assert values["q_strides"] == (0, 0, 128) and values["k_strides"] == (0, 0, 128)
    assert values["k"] == k.data_ptr()


def test_backward_values_address_the_saved_tensors_in_place_and_write_new_contiguous_gradients():
    B, Hq, Hkv, L, S, E = 2, 4, 2, 17, 33, 128
    q = half(B, L, Hq, E).transpose(1, 2)
    k = half(B, Hkv, S, E)
    v = half(B, S, Hkv, E).transpose(1, 2)
    grad_out = half(B, L, Hq, E).transpose(1, 2)  # autograd hands what the next op made
    out = half(B, Hq, L, E)
    lse = torch.empty(B, Hq, L)
    delta = torch.empty(B, Hq, L)
    dq, dk, dv = torch.empty(q.shape, dtype=q.dtype), torch.empty(k.shape, dtype=k.dtype), torch.empty(v.shape, dtype=v.dtype)
    values = cuda_attention.backward_values(grad_out, q, k, v, out, lse, delta, dq, dk, dv, True, S - L, 0.125)
    assert values["dscores"] == 0 and values["dropout_p"] == 0.0  # no mask gradient, no dropout
    dscores = torch.zeros(B, Hq, L, S)
    with_grad = cuda_attention.backward_values(grad_out, q, k, v, out, lse, delta, dq, dk, dv, True, S - L, 0.125,
                                               dscores=dscores, dropout_p=0.25, seed=77)
    assert with_grad["dscores"] == dscores.data_ptr()
    assert (with_grad["dropout_p"], with_grad["seed"]) == (0.25, 77)
    for name, t in {"grad_out": grad_out, "q": q, "k": k, "v": v, "out": out, "lse": lse, "delta": delta,
                    "dq": dq, "dk": dk, "dv": dv}.items():
        assert values[name] == t.data_ptr(), name
    assert values["grad_out_strides"] == values["q_strides"] == (L * Hq * E, E, Hq * E)
    assert values["v_strides"] == (S * Hkv * E, E, Hkv * E) and values["k_strides"] == (Hkv * S * E, S * E, E)
    assert values["dq_strides"] == (Hq * L * E, L * E, E) and values["dv_strides"] == (Hkv * S * E, S * E, E)
    assert (values["heads_q"], values["heads_kv"], values["len_q"], values["len_kv"]) == (Hq, Hkv, L, S)
    assert values["causal"] is True and values["causal_offset"] == S - L and values["scale"] == 0.125


@pytest.mark.parametrize("lengths", [(0, 5), (5, 0)], ids=str)
def test_backward_of_empty_lengths_is_zeros_with_no_launch(lengths):
    """Nothing to sum: zeros in the inputs' shapes, without the extension (CPU tensors)."""
    L, S = lengths
    q, k, v = half(2, 4, L, 64), half(2, 2, S, 64), half(2, 2, S, 64)
    dq, dk, dv, dmask = cuda_attention.attention_backward(half(2, 4, L, 64), q, k, v, half(2, 4, L, 64),
                                                          torch.empty(2, 4, L), None, 0.0, True, 0, 0.125, 0, False)
    assert dmask is None
    for grad, t in zip((dq, dk, dv), (q, k, v)):
        assert grad.shape == t.shape and grad.dtype == t.dtype and not grad.any()


@pytest.mark.parametrize("layout", ["head-dim-strided", "misaligned-offset", "odd-row-stride"])
def test_what_the_kernels_cannot_address_is_copied_once(layout):
    """16-byte cp.async loads: the head dim must have stride 1 and every row start 16-byte
    aligned; else one contiguous copy, which the values hold until the launch."""
    t = {
        "head-dim-strided": lambda: half(2, 3, 10, 128)[..., ::2],
        "misaligned-offset": lambda: half(2, 3, 10, 65)[..., 1:],
        "odd-row-stride": lambda: half(2, 3, 10, 68)[..., :64],
    }[layout]()
    out = torch.empty(2, 3, 10, 64, dtype=torch.float16)
    values = cuda_attention.forward_values(t, t, t, out, torch.empty(2, 3, 10), False, 0, 1.0)
    copy = values.operands[0]
    assert values["q"] == copy.data_ptr() != t.data_ptr() and copy.is_contiguous()
    assert torch.equal(copy, t)
    assert values["q_strides"] == (3 * 10 * 64, 10 * 64, 64)


# -- registration --

def test_cuda_backend_on_cpu_tensors_refuses_and_auto_never_picks_it():
    q = half(1, 2, 8, 64)
    with seqops.backend("cuda"):
        with pytest.raises(seqops.BackendUnavailable, match="kernels take CUDA tensors, got tensors on cpu"):
            seqops.scaled_dot_product_attention(q, q, q)
    impl = dispatch.implementation("attention/cuda/fused")
    assert impl.supports is cuda_attention.forward_reason
    assert all(i.backend != "cuda" for i in dispatch._auto_order.get(("attention", "cpu"), ()))
    order = [i.backend for i in dispatch._auto_order[("attention", "cuda")]]
    assert order.index("cuda") > order.index("triton") and order.index("cuda") > order.index("torch"), \
        "never run on a GPU: auto must not pick it"
    # The sm80 variant (the mma.sync forward on every device, wgmma's alternative on 9.0):
    # explicit choice only, the same refusals, the same backward.
    sm80 = dispatch.implementation("attention/cuda/sm80")
    assert sm80.supports is cuda_attention.forward_reason and not sm80.priority
    assert sm80.backward.__name__ == impl.backward.__name__ == "attention_backward"
    assert sm80.forward.__name__ == "attention_forward_sm80"
    # The ordered-dQ variant (the five-product backward): explicit choice only, the same
    # refusals and forward.
    ordered = dispatch.implementation("attention/cuda/ordered_dq")
    assert ordered.supports is cuda_attention.forward_reason and not ordered.priority
    assert ordered.forward.__name__ == impl.forward.__name__ == "attention_forward"
    assert ordered.backward.__name__ == "attention_backward_ordered_dq"


def test_on_a_gpu_tests_skip_a_feature_the_cuda_backend_lacks_and_fail_other_refusals(tmp_path):
    """conftest.py's rule for cuda_attention.NOT_YET refusals: from backend 'cuda' they
    skip; the same words from another backend, or another refusal of 'cuda', fail."""
    import shutil

    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path)
    lacks = cuda_attention.NOT_YET
    (tmp_path / "test_refusals.py").write_text(
        "import seqops\n"
        "def test_cuda_lacks_masks():\n"
        "    raise seqops.BackendUnavailable(\"seqops.attention: backend 'cuda' cannot run this call: the CUDA "
        f"attention takes no attn_mask: {lacks}\")\n"
        "def test_triton_says_the_same():\n"
        "    raise seqops.BackendUnavailable(\"seqops.attention: backend 'triton' cannot run this call: "
        f"{lacks}\")\n"
        "def test_cuda_refuses_for_good():\n"
        "    raise seqops.BackendUnavailable(\"seqops.attention: backend 'cuda' cannot run this call: the CUDA "
        "attention takes lengths below 2**30\")\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "2 failed, 1 skipped" in result.stdout, result.stdout[-2000:]


# -- generated instances --

def generator():
    path = ROOT / "csrc" / "attention" / "generate_instances.py"
    spec = importlib.util.spec_from_file_location("generate_instances", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_instance_files_are_what_the_generator_writes(tmp_path):
    written = generator().write(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in INSTANCES.glob("*.cu")), \
        "rerun csrc/attention/generate_instances.py"
    for path in written:
        assert path.read_text() == (INSTANCES / path.name).read_text(), f"{path.name}: rerun the generator"


def test_the_generator_covers_what_supports_takes():
    module = generator()
    assert set(module.HEAD_DIMS) == set(cuda_attention.HEAD_DIMS)
    assert set(module.BACKWARD_HEAD_DIMS) == set(cuda_attention.BACKWARD_HEAD_DIMS)
    assert {getattr(torch, name) for name in module.DTYPES} == set(cuda_attention.DTYPES)


# -- the extension's host code --

def test_a_linked_instance_registers_itself_with_its_geometry():
    """The tests' build links one instance file (cuda_build.LINKED_INSTANCE, hd64 fp16):
    it is in the table, the others are not (a build of a subset links and says which)."""
    _, module = built()
    instances = module.attention_forward_instances()
    assert {(i["head_dim"], i["dtype"]) for i in instances} == {(64, DTYPE_CODES[torch.float16])}
    for i in instances:
        # Q, K and V tiles of 16-bit elements; within the 163 KiB an sm80 CTA may opt into.
        assert i["smem_bytes"] == (i["block_m"] + 2 * i["block_n"]) * i["head_dim"] * 2 <= 163 * 1024, i
        assert i["threads"] % 32 == 0 and i["block_m"] % (16 * i["threads"] // 32) == 0, i


def launch(module, head_dim=64, dtype=torch.float16, row_stride=None, pointer=None, **overrides):
    """attention_forward on a CPU buffer's address: the checks run before any launch."""
    buffer = torch.empty(4 * head_dim, dtype=torch.float16)
    address = buffer.data_ptr() if pointer is None else pointer
    row = head_dim if row_stride is None else row_stride
    strides = (0, 0, row)
    args = dict(q=address, q_strides=strides, k=address, k_strides=strides, v=address, v_strides=strides,
                out=address, out_strides=strides, lse=address, lse_strides=(0, 4), dtype=DTYPE_CODES[dtype],
                batch=1, heads_q=1, heads_kv=1, len_q=4, len_kv=4, head_dim=head_dim, scale=1.0, causal=False,
                causal_offset=0, device=0, stream=0)
    args.update(overrides)
    return module.attention_forward(**args)


def test_a_missing_instance_is_refused_by_name():
    _, module = built()
    with pytest.raises(module.CudaError, match="no instance for head dim 96 dtype bfloat16 in this build"):
        launch(module, head_dim=96, dtype=torch.bfloat16)


@pytest.mark.parametrize("overrides, message", [
    ({"dtype": torch.float32}, "the kernels take float16 and bfloat16"),
    ({"row_stride": 60}, "multiples of 8 elements"),
    ({"pointer": 8}, "16-byte aligned"),
    ({"pointer": 0}, "must not be null"),
    ({"heads_q": 3, "heads_kv": 2}, "key/value heads must divide the query heads"),
    ({"len_kv": 2**30}, "below 2\\*\\*30"),
    ({"batch": 65536}, "at most 65535"),
    ({"splits": 0}, "splits must be in \\[1, 256\\]"),
    ({"splits": 257}, "splits must be in \\[1, 256\\]"),
    ({"splits": 2}, "a split launch needs partial_out and partial_lse"),
    ({"mask_kind": 1}, "the mask must be none, bool"),
    ({"mask_kind": 2, "mask": 64, "mask_dtype": DTYPE_CODES[torch.float32] + 7}, "unknown dtype code"),
])
def test_bad_arguments_are_refused_before_any_launch(overrides, message):
    _, module = built()
    with pytest.raises(module.CudaError, match="(bad argument: )?attention_forward: .*" + message):
        launch(module, **overrides)


def launch_backward(module, head_dim=64, dtype=torch.float16, row_stride=None, pointer=None, **overrides):
    """attention_backward on a CPU buffer's address: the checks run before any launch."""
    buffer = torch.empty(4 * head_dim, dtype=torch.float16)
    address = buffer.data_ptr() if pointer is None else pointer
    strides = (0, 0, head_dim if row_stride is None else row_stride)
    args = dict(grad_out=address, grad_out_strides=strides, q=address, q_strides=strides, k=address,
                k_strides=strides, v=address, v_strides=strides, out=address, out_strides=strides, lse=address,
                lse_strides=(0, 4), delta=address, dq=address, dq_strides=strides, dk=address, dk_strides=strides,
                dv=address, dv_strides=strides, dtype=DTYPE_CODES[dtype], batch=1, heads_q=1, heads_kv=1, len_q=4,
                len_kv=4, head_dim=head_dim, scale=1.0, causal=False, causal_offset=0, device=0, stream=0)
    args.update(overrides)
    return module.attention_backward(**args)


def test_the_tests_build_links_no_backward_instance_and_refuses_its_calls_by_name():
    """cuda_build links one forward instance only (each CuTe file is a minute of nvcc);
    benchmarks/cuda_report compiles the backward's. A call the checks pass then fails on
    the missing instance, by name, before any launch: the ordered-dQ form too, which
    writes no dq (so takes none) but needs its two workspaces."""
    _, module = built()
    assert module.attention_backward_instances() == []
    with pytest.raises(module.CudaError, match="attention_backward: no instance for head dim 64 dtype float16"):
        launch_backward(module)
    workspace = torch.empty(64, dtype=torch.float32)
    with pytest.raises(module.CudaError, match="attention_backward: no instance for head dim 64 dtype float16"):
        launch_backward(module, dq=0, dq_accum=workspace.data_ptr(), dq_turns=workspace.data_ptr())


@pytest.mark.parametrize("overrides, message", [
    ({"dtype": torch.float32}, "the kernels take float16 and bfloat16"),
    ({"row_stride": 60}, "multiples of 8 elements"),
    ({"pointer": 8}, "16-byte aligned"),
    ({"pointer": 0}, "no tensor may be null"),
    ({"heads_q": 3, "heads_kv": 2}, "key/value heads must divide the query heads"),
    ({"len_kv": 0}, "at least 1"),
    ({"len_q": 2**30}, "below 2\\*\\*30"),
    ({"heads_q": 65536}, "at most 65535"),
    ({"mask_kind": 2, "mask": 0, "mask_dtype": DTYPE_CODES[torch.float16]}, "the mask must be none, bool"),
    ({"dq": 0}, "no tensor may be null \\(dq only with dq_accum\\)"),
    ({"dq_accum": "workspace"}, "dq_accum needs dq_turns"),
    ({"dq_accum": "workspace+4", "dq_turns": "workspace"}, "16-byte \\(dq_accum\\)"),
    ({"dq_accum": "workspace", "dq_turns": "workspace+2"}, "4-byte \\(dq_turns\\)"),
])
def test_bad_backward_arguments_are_refused_before_any_launch(overrides, message):
    _, module = built()
    workspace = torch.empty(64, dtype=torch.float32)
    addresses = {"workspace": workspace.data_ptr(), "workspace+4": workspace.data_ptr() + 4,
                 "workspace+2": workspace.data_ptr() + 2}
    overrides = {name: addresses.get(value, value) if isinstance(value, str) else value
                 for name, value in overrides.items()}
    with pytest.raises(module.CudaError, match="bad argument: attention_backward: .*" + message):
        launch_backward(module, **overrides)


# -- the tile schedule --

def seen_pairs(L, S, causal, offset):
    """[L, S]: whether query i sees key j."""
    i, j = torch.arange(L)[:, None], torch.arange(S)[None, :]
    return j <= i + offset if causal else torch.ones(L, S, dtype=torch.bool)


def model_schedule(kind, block, block_m, block_n, L, S, causal, offset):
    """Brute force: the tiles holding a pair that a real query sees, each with whether it
    holds any pair a real query does not see (keys past S count as unseen)."""
    seen = seen_pairs(L, S, causal, offset)
    if kind == "keys":  # query block `block` against key tiles
        rows = seen[block * block_m:(block + 1) * block_m]
        tiles = [torch.nn.functional.pad(rows, (0, -S % block_n))[:, t * block_n:(t + 1) * block_n]
                 for t in range(-(-S // block_n))]
    else:  # key block `block` against query tiles
        cols = torch.nn.functional.pad(seen[:, block * block_n:(block + 1) * block_n],
                                       (0, block_n - seen[:, block * block_n:(block + 1) * block_n].shape[1]))
        tiles = [cols[t * block_m:(t + 1) * block_m] for t in range(-(-L // block_m))]
    return [(t, not bool(tile.all())) for t, tile in enumerate(tiles) if tile.any()]


# (block_m, block_n): the instances' (forward 128 x 64; dK/dV 64 x 64 and 32 x 128; dQ
# 64 x 64 and 128 x 64) and small awkward ones.
GEOMETRIES = [(128, 64), (64, 64), (32, 128), (3, 5), (8, 4)]


@pytest.mark.parametrize("block_m, block_n", GEOMETRIES, ids=str)
@pytest.mark.parametrize("kind", ["keys", "queries"])
def test_the_kernels_visit_exactly_the_tiles_with_a_seen_pair_and_mask_those_with_an_unseen_one(
        kind, block_m, block_n):
    """Whatever a query sees is visited (else a gradient or an output term is lost),
    nothing else is (work), and every visited tile with a pair not seen is masked (else a
    masked key leaks in); lengths off the tiles both ways, every causal offset class."""
    _, module = built()
    scale = max(block_m, block_n) // 8 + 1  # lengths around a few tiles of this geometry
    for L, S in [(1, 1), (7 * scale, 37 * scale), (37 * scale, 7 * scale), (16 * scale + 1, 16 * scale - 1)]:
        offsets = sorted({-L - 5, -L, -L + 1, -block_m, -1, 0, 1, block_n - 1, block_n, S - L, S, S + 5})
        for causal in (False, True):
            for offset in offsets if causal else [0]:
                blocks = -(-L // block_m) if kind == "keys" else -(-S // block_n)
                for block in range(blocks):
                    expected = model_schedule(kind, block, block_m, block_n, L, S, causal, offset)
                    got = [tuple(t) for t in module.attention_schedule(kind, block, block_m, block_n, L, S, causal,
                                                                       offset)]
                    assert got == expected, (kind, block, L, S, causal, offset)


def test_the_schedule_refuses_a_block_outside_the_lengths():
    _, module = built()
    with pytest.raises(ValueError, match="must lie inside"):
        module.attention_schedule("keys", 2, 64, 64, 100, 100, False, 0)
    with pytest.raises(ValueError, match="kind must be"):
        module.attention_schedule("rows", 0, 64, 64, 100, 100, False, 0)


@pytest.mark.parametrize("block_m, block_n", GEOMETRIES, ids=str)
def test_the_key_blocks_that_visit_a_query_tile_are_a_prefix_so_ordered_dq_turns_are_key_block_numbers(
        block_m, block_n):
    """The ordered-dQ backward has key block n add its dQ part to every query tile it
    visits at turn n (schedule.h, dq_turn), waiting for turns 0 .. n - 1 first: right only
    if the key blocks that visit a tile are always 0 .. k. Were one missing, the blocks
    after it would wait for a turn that never comes."""
    _, module = built()
    scale = max(block_m, block_n) // 8 + 1
    for L, S in [(1, 1), (7 * scale, 37 * scale), (37 * scale, 7 * scale), (16 * scale + 1, 16 * scale - 1)]:
        for causal, offset in [(False, 0)] + [(True, o) for o in (-L, -L + 1, -block_m, -1, 0, 1, block_n, S - L, S)]:
            visitors = {}
            for n in range(-(-S // block_n)):
                for tile, _ in module.attention_schedule("queries", n, block_m, block_n, L, S, causal, offset):
                    visitors.setdefault(tile, []).append(n)
            for tile, blocks in visitors.items():
                assert blocks == list(range(len(blocks))), (L, S, causal, offset, tile, blocks)


# -- the sm90a forward's register layouts --

def test_sm90_forward_layouts_keep_rows_on_quads_and_feed_p_to_the_second_wgmma(tmp_path):
    """tests/cuda_programs/sm90_forward_layouts.cu, compiled for the host and run here:
    CuTe's layouts are host code, so every thread's share of the wgmma accumulators is
    walked on the CPU: rows on quads, S's and O's rows alike, every entry once, and S's
    accumulator seen as the A operand of O += P V where that wgmma reads it."""
    run_host_program(tmp_path, "sm90_forward_layouts")


def test_backward_layouts_put_ds_where_the_dq_product_reads_it_and_split_columns_right(tmp_path):
    """tests/cuda_programs/backward_layouts.cu, compiled for the host and run here: the
    ordered-dQ backward writes dS^T from the dK/dV mma's accumulator into smem and reads
    it back transposed as the A operand of dQ = dS K on a second mma; every entry is
    written once, in aligned pairs, read where dS(query, key) lies, K^T is K, and dQ's
    accumulator covers its tile once. At head dim 256 the dK/dV CTAs' column blocks read
    Q and dO where those columns lie."""
    run_host_program(tmp_path, "backward_layouts")


def test_tma_strides_fill_in_size_one_dimensions_and_keep_real_broadcasts():
    """The sm90a forward's TMA descriptors need positive strides: a dimension of size 1
    (torch may give it stride 0, e.g. q[0, 0] or a K/V shared by one head) gets a packed
    one; a broadcast dimension of size above 1 keeps its 0, which sends the call to the
    sm80 kernel (forward.cu, tma_describable)."""
    _, module = built()
    assert module.attention_tma_strides((4096, 512, 64), 8, 8, 2, 64) == (4096, 512, 64)  # a packed tensor
    assert module.attention_tma_strides((0, 0, 64), 8, 1, 1, 64) == (512, 512, 64)     # q[0, 0]
    assert module.attention_tma_strides((0, 0, 0), 1, 1, 1, 128) == (128, 128, 128)    # one row
    assert module.attention_tma_strides((512, 0, 64), 8, 4, 2, 64)[1] == 0              # expanded over 4 heads


# -- split-KV (decode) --

@pytest.mark.parametrize("batch_heads, len_q, len_kv, processors, splits", [
    (8, 1, 8192, 132, 32),      # 128 key tiles / 4, under two CTAs a processor (ceil(264 / 8) = 33)
    (8, 16, 8192, 132, 32),     # up to 16 queries is a decode step
    (8, 17, 8192, 132, 1),      # 17 is not
    (132, 1, 8192, 132, 1),     # the (batch, head) pairs fill the processors already
    (1, 1, 100_000, 132, 64),   # at most 64
    (8, 1, 1000, 132, 4),       # at least 4 key tiles (256 keys) a split: 16 tiles / 4
    (8, 1, 200, 132, 1),        # too few keys to split
])
def test_decode_splits(batch_heads, len_q, len_kv, processors, splits):
    assert cuda_attention.decode_splits(batch_heads, len_q, len_kv, processors) == splits


def test_split_values_carry_a_workspace_of_fp32_partials():
    q, k = half(2, 4, 3, 64), half(2, 4, 900, 64)
    out, lse = torch.empty(2, 4, 3, 64, dtype=torch.float16), torch.empty(2, 4, 3)
    values = cuda_attention.forward_values(q, k, k, out, lse, True, 897, 0.125, splits=5)
    partial_out, partial_lse = values.operands[-2:]
    assert values["splits"] == 5 and values["partial_out"] == partial_out.data_ptr()
    assert partial_out.shape == (5, 2, 4, 3, 64) and partial_out.dtype == torch.float32 and partial_out.is_contiguous()
    assert values["partial_lse"] == partial_lse.data_ptr() and partial_lse.shape == (5, 2, 4, 3)
    single = cuda_attention.forward_values(q, k, k, out, lse, True, 897, 0.125)
    assert (single["splits"], single["partial_out"], single["partial_lse"]) == (1, 0, 0)


def test_the_forward_key_tile_is_the_instances():
    """decode_splits sizes splits by the sm80 kernel's key tile (head dims up to 128; 256
    has half-size tiles, two to each of the splits' tiles): split launches run there
    (forward.cu) even on sm90, whose wgmma kernel takes the rest."""
    _, module = built()
    sm80 = [i for i in module.attention_forward_instances() if i["arch"] == 80 and i["head_dim"] <= 128]
    assert sm80 and {i["block_n"] for i in sm80} == {cuda_attention.FORWARD_KEY_TILE}


@pytest.mark.parametrize("splits", [2, 3, 7, 40])
def test_splits_share_a_query_blocks_key_tiles_once_each_in_order(splits):
    """Concatenated over the splits, the key tiles are the unsplit schedule's: none lost,
    none twice (the combine would count it twice), with the same masks."""
    _, module = built()
    for L, S, causal, offset in [(1, 1000, False, 0), (16, 4097, True, 4081), (5, 300, True, 0), (3, 64, True, -10)]:
        whole = [tuple(t) for t in module.attention_schedule("keys", 0, 128, 64, L, S, causal, offset)]
        parts = [[tuple(t) for t in module.attention_schedule("keys", 0, 128, 64, L, S, causal, offset, split, splits)]
                 for split in range(splits)]
        assert [t for part in parts for t in part] == whole, (L, S, causal, offset)
    with pytest.raises(ValueError, match="split must be in"):
        module.attention_schedule("keys", 0, 128, 64, 4, 100, False, 0, 3, 3)


# -- dropout --

@triton.jit
def _triton_dropout_draw(uniform_ptr, keep_ptr, seed, bh, row0, S, dropout_p, ROWS: tl.constexpr,
                         COLS: tl.constexpr, INT64: tl.constexpr):
    """The Triton attention kernels' draw for rows row0.. and keys 0..COLS-1: tl.rand as
    they call it, and their own dropout_keep."""
    offs_m = row0 + tl.arange(0, ROWS)
    offs_n = tl.arange(0, COLS)
    queries = offs_m.to(tl.int64) if INT64 else offs_m
    at = tl.arange(0, ROWS)[:, None] * COLS + offs_n[None, :]
    tl.store(uniform_ptr + at, tl.rand(seed + bh, queries[:, None] * S + offs_n[None, :]))
    tl.store(keep_ptr + at, dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p, INT64).to(tl.int8))


@pytest.mark.parametrize("seed, batch_head, first_row, S, int64", [
    (1234, 0, 0, 45, False),
    (987654321, 7, 3, 129, False),
    (2**31 - 3, 5, 0, 33, False),            # seed + batch * Hq + head wraps in int32, on both sides
    (42, 3, 2**31 // 1000 + 5, 1000, True),  # counters past 2**31: the int64 path
])
def test_the_dropout_draw_is_the_triton_backends(seed, batch_head, first_row, S, int64):
    """The CUDA kernels' draw (csrc/attention/dropout.h, through the bindings) against the
    Triton kernels' own dropout_keep and tl.rand under the interpreter: the same uniform
    numbers, so the same kept probabilities for every dropout_p, for the same seed."""
    skip_unless_runnable("cpu", "triton")
    _, module = built()
    rows, cols = 4, 32
    uniform = torch.empty(rows, cols)
    for p in (0.1, 0.5, 0.9):
        keep = torch.empty(rows, cols, dtype=torch.int8)
        _triton_dropout_draw[(1,)](uniform, keep, seed, batch_head, first_row, S, p, ROWS=rows, COLS=cols, INT64=int64)
        counters = [(first_row + i) * S + j for i in range(rows) for j in range(cols)]
        ours = torch.tensor(module.attention_dropout_uniform(seed, batch_head, counters)).view(rows, cols)
        assert torch.equal(ours, uniform), (ours - uniform).abs().max()
        assert torch.equal(ours >= p, keep.bool())
