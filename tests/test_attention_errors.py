"""Bad input to seqops.scaled_dot_product_attention gets a clear error naming the argument,
on every backend; limits of the fused kernels fall back under auto and explain themselves
when the fused backend is asked for."""
import pytest
import torch

import seqops
from devices import IMPLEMENTED, skip_unless_runnable

sdpa = seqops.scaled_dot_product_attention


@pytest.fixture(params=IMPLEMENTED + ("auto",))
def backend(request):
    skip_unless_runnable("cpu", request.param)
    with seqops.backend(request.param):
        yield request.param


def qkv(L=5, S=7, E=8, Ev=8, lead=(2, 3), dtype=torch.float32):
    return torch.randn(*lead, L, E, dtype=dtype), torch.randn(*lead, S, E, dtype=dtype), torch.randn(*lead, S, Ev, dtype=dtype)


def test_inputs_must_be_tensors(backend):
    q, k, v = qkv()
    with pytest.raises(TypeError, match="argument 'key' must be a torch.Tensor, got list"):
        sdpa(q, [1.0], v)


def test_inputs_need_two_dims(backend):
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match=r"'query' must have at least 2 dims \[..., length, features\]"):
        sdpa(q[0, 0, 0], k, v)


def test_inputs_must_share_a_dtype(backend):
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match="must share a dtype, got torch.float32, torch.float16, torch.float32"):
        sdpa(q, k.half(), v)


def test_integer_inputs_are_refused(backend):
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match="'query' must be floating point"):
        sdpa(q.long(), k.long(), v.long())


def test_feature_sizes_must_agree(backend):
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match="query and key must have the same last dim E"):
        sdpa(q, k[..., :4], v)
    with pytest.raises(RuntimeError, match=r"key and value must have the same length S \(dim -2\)"):
        sdpa(q, k, v[..., :6, :])


def test_leading_dims_must_broadcast(backend):
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match="leading dims of query, key and value do not broadcast"):
        sdpa(q, k[:, :2], v[:, :2])


def test_gqa_needs_dividing_heads(backend):
    q, k, v = qkv(lead=(2, 6))
    with pytest.raises(RuntimeError, match="key and value heads .* dividing the query heads, got query 6, key 4, value 4"):
        sdpa(q, k[:, :4], v[:, :4], enable_gqa=True)
    with pytest.raises(IndexError, match="enable_gqa needs heads at dim -3"):
        sdpa(q[0, 0], k[0, 0], v[0, 0], enable_gqa=True)


def test_mask_dtype_and_shape(backend):
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match=r"'attn_mask' must be bool \(True = attend\) or floating point"):
        sdpa(q, k, v, attn_mask=torch.ones(5, 7, dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"'attn_mask' of shape \(7, 5\) does not broadcast to the scores' shape \(2, 3, 5, 7\)"):
        sdpa(q, k, v, attn_mask=torch.ones(7, 5, dtype=torch.bool))
    with pytest.raises(RuntimeError, match=r"'attn_mask' of shape \(4, 3, 5, 7\) does not broadcast"):
        sdpa(q, k, v, attn_mask=torch.ones(4, 3, 5, 7, dtype=torch.bool))


@pytest.mark.parametrize("dropout_p, error", [(-0.1, RuntimeError), (1.5, RuntimeError), ("0.1", TypeError),
                                              (None, TypeError)], ids=str)
def test_dropout_p_range(backend, dropout_p, error):
    q, k, v = qkv()
    with pytest.raises(error, match=r"'dropout_p' must be a number in \[0, 1\]"):
        sdpa(q, k, v, dropout_p=dropout_p)


def test_flags_and_scale_types(backend):
    q, k, v = qkv()
    with pytest.raises(TypeError, match="argument 'is_causal' must be a bool"):
        sdpa(q, k, v, is_causal=1)
    with pytest.raises(TypeError, match="argument 'scale' must be a real number or None"):
        sdpa(q, k, v, scale="0.5")
    with pytest.raises(TypeError, match="argument 'enable_gqa' must be a bool"):
        sdpa(q, k, v, enable_gqa="yes")


def test_fused_limits_match_the_tile_table():
    """Every input the Triton backend admits has tiles to run with on a GPU: each kernel's
    table has each dtype class and head-dim class the backend admits, and the limits the
    backend states without importing triton are the kernels' own."""
    pytest.importorskip("triton")
    from seqops.backends import triton as backend
    from seqops.kernels import attention as kernels
    from seqops.kernels import tiles
    from seqops.kernels.attention import tuning
    from seqops.ops.attention import contract

    assert (contract.MAX_HEAD_DIM, backend.FP32_MAX_HEAD_DIM) == (kernels.MAX_HEAD_DIM, kernels.FP32_MAX_HEAD_DIM)
    assert backend.DECODE_MAX_QUERIES == kernels.DECODE_MAX_QUERIES
    for kernel in tuning.STAGES:
        for dtype_class, max_head_dim in (("16-bit", contract.MAX_HEAD_DIM), ("fp32", backend.FP32_MAX_HEAD_DIM)):
            for head_class in (64, 128, 256):
                for weight in ("plain", "heavy"):
                    table = tiles.TILES[kernel].get((dtype_class, head_class, weight), [])
                    admitted = head_class <= max_head_dim
                    assert bool(table) == admitted, (kernel, dtype_class, head_class, weight)
                    assert set(table) <= set(tuning.CANDIDATE_TILES)


def test_fused_limits_explain_themselves():
    """What the fused kernels cannot take: explicit triton says why, auto falls back."""
    skip_unless_runnable("cpu", "triton")
    cases = [
        (qkv(dtype=torch.float64), {}, "float64 runs on torch"),
        (qkv(E=264, Ev=8), {}, "head dims up to 256, got 264"),
        (qkv(E=16, Ev=136), {}, "float32 head dims up to 128, got 16 and 136"),
        (qkv(), {"dropout_p": 1.0}, "dropout_p = 1 drops everything"),
    ]
    for (q, k, v), kwargs, reason in cases:
        with seqops.backend("triton"):
            with pytest.raises(seqops.BackendUnavailable, match=reason):
                sdpa(q, k, v, **kwargs)
        out = sdpa(q, k, v, **kwargs)  # auto: the torch backend takes it
        assert out.shape == q.shape[:-1] + v.shape[-1:]
