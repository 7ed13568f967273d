"""The decode variant of the Triton attention (seqops.kernels.attention.decode): calls of at
most 16 queries a head, their keys split over several programs and combined by their
logsumexp, a GQA group's query heads packed into one program's rows. Through the public
op with the variant pinned and its kernels counted (the fused forward's not): the output
and every gradient against the float64 reference with the 2x-of-torch rule, on shapes
that take each piece: one split and many, splits that see no key, a group wider than a
row block, both causal alignments, bool and float masks broadcast several ways, rows
with every key masked, odd head dims, strided and far-offset operands; and which calls
the variant takes."""
import math

import pytest
import torch

import seqops
from devices import DEVICES, skip_unless_runnable
from test_attention import check_attention, randn
from test_attention_offsets import HEAD_APART, far_view, rows_apart, sparse_storage  # noqa: F401 (a fixture)
from test_lstm_sequence import LaunchCounter

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# name: (B, Hq, Hkv, L, S, E, Ev)
SHAPES = {
    # One query of each of 8 heads against 250 keys: 4 splits of one 64-key block a group,
    # the last partial (the split floor lowered: SPLIT_FLOORS).
    "gqa-one-query-split": (2, 8, 2, 1, 250, 64, 64),
    # Head dim 40 (a partial 64-wide block), no grouping, 3 queries: one split.
    "mha-three-queries": (1, 3, 3, 3, 257, 40, 40),
    # 16 heads x 16 queries = 256 packed rows of one key/value head: 4 row blocks.
    "wide-group-row-blocks": (1, 16, 1, 16, 90, 32, 32),
    # Values narrower than keys, a group of 3 (12 rows in a 16-row block).
    "value-dim-differs": (2, 6, 2, 4, 300, 64, 24),
}
# Key blocks a split keeps at least (decode.MIN_BLOCKS_PER_SPLIT), lowered for a shape
# so that it splits many ways on few keys: the interpreter's time grows with the keys, and
# the plan's own floor is test_plan's.
SPLIT_FLOORS = {"gqa-one-query-split": 1}
# The shapes fp16 runs under the interpreter (it shares the kernels with bf16).
FP16_SHAPES = ("gqa-one-query-split",)


def decode_kernels(device):
    """(the decode module, the modules whose kernel launches run_decode counts)."""
    skip_unless_runnable(device, "triton")
    from seqops.kernels.attention import backward, decode, forward

    return decode, [decode, forward, backward]


def run_decode(device, modules, *args, **kwargs):
    """check_attention on the decode variant, and proof that it ran: the split kernel
    launched, the fused forward did not (the backward is the fused variant's)."""
    with LaunchCounter(modules) as launches, seqops.backend("triton", variant="decode"):
        check_attention("triton", *args, **kwargs)
    assert launches.counts.get("attention_decode_split_kernel", 0) >= 1, launches.counts
    assert "attention_forward_kernel" not in launches.counts, launches.counts
    return launches.counts


# Trials pooled for a call whose queries each see a few keys (upper-left causal, L of 3
# or 4): one draw's gradient error there is a sample of few roundings, near the rule's
# edge. fp32, (1, 3, 3, 3, 257, 40, 40), seeds 0-9: d key at 0.35-1.03 of the bound (2 x
# torch's + floor), mean 0.55 (1.03 at seed 1): noise around a ratio well inside. bf16,
# (2, 6, 2, 4, 300, 64, 24), seeds 0-11: d query 3.0-4.0e-3 against torch's (CPU)
# 1.6-1.7e-3, 0.70-0.90 of the bound, 1.03 at seed 99592971 (CI, 2026-12-03): a systematic
# ratio near 0.8, which a float64 emulation of the kernel's roundings explains: delta =
# rowsum(dO * O) from the bf16-rounded O (2.8e-3 alone) and dS rounded to bf16 for dS K
# (2.3e-3 alone), the FA2 recipe, against the final rounding alone (1.6e-3). Pooling keeps
# the rule and judges those ratios, not one draw's noise around them.
FEW_KEYS_TRIALS = 3


def inputs(shape, device, dtype):
    B, Hq, Hkv, L, S, E, Ev = shape
    return (randn(B, Hq, L, E, device=device, dtype=dtype), randn(B, Hkv, S, E, device=device, dtype=dtype),
            randn(B, Hkv, S, Ev, device=device, dtype=dtype))


@pytest.mark.parametrize("causal", ["none", "upper-left", "lower-right"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_shapes(device, dtype, shape, causal, monkeypatch):
    """upper-left: torch's is_causal, where a query early in the row sees few keys, so the
    later splits see none (their partial logsumexp -inf); lower-right: a query block
    appended to a cache (torch.nn.attention.bias.causal_lower_right)."""
    if device == "cpu" and dtype == torch.float16 and shape not in FP16_SHAPES:
        pytest.skip("fp16 under the interpreter runs one shape (bf16 runs the same kernels on all)")
    B, Hq, Hkv, L, S, E, Ev = SHAPES[shape]
    decode, modules = decode_kernels(device)
    if shape in SPLIT_FLOORS:
        monkeypatch.setattr(decode, "MIN_BLOCKS_PER_SPLIT", SPLIT_FLOORS[shape])
    kwargs = dict(enable_gqa=Hq != Hkv)
    if causal == "upper-left":
        kwargs["is_causal"] = True
    elif causal == "lower-right":
        kwargs["lower_right"] = True
    if causal == "upper-left" and L > 1:
        pooled = {}
        for _ in range(FEW_KEYS_TRIALS):
            counts = run_decode(device, modules, *inputs(SHAPES[shape], device, dtype), pooled=pooled, **kwargs)
        for name, result in pooled.items():
            result.check("triton", name, dtype, S)
    else:
        counts = run_decode(device, modules, *inputs(SHAPES[shape], device, dtype), **kwargs)
    splits = decode.decode_plan(B, Hkv, Hq // Hkv, L, S, max(E, Ev), 132).splits
    if shape == "gqa-one-query-split":
        assert splits == 4, splits
    assert ("attention_decode_combine_kernel" in counts) == (splits > 1), counts


MASKS = {
    # name: shape of the mask against [B, Hq, L, S] = [2, 6, 3, 200]
    "bool-keys-only": (200,),
    "bool-per-query": (3, 200),
    "bool-per-head": (1, 6, 1, 200),
    "float-per-batch-head": (2, 6, 3, 200),
    "float-broadcast-heads": (2, 1, 3, 200),
}


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_masks(device, dtype, mask, monkeypatch):
    """Masks read per packed row (its head's and query's slice), over 4 splits of 50 keys
    (the split floor lowered to one key block, so that 200 keys split), with a float
    mask's gradient; a bool mask of more than one dim empties a query's row (of one head,
    or of all), whose output is 0."""
    decode, modules = decode_kernels(device)
    monkeypatch.setattr(decode, "MIN_BLOCKS_PER_SPLIT", 1)
    q, k, v = inputs((2, 6, 2, 3, 200, 48, 48), device, dtype)
    shape = MASKS[mask]
    if mask.startswith("bool"):
        attn_mask = torch.rand(shape, device=device) > 0.3
        if len(shape) > 1:  # every key of one query (of one head): rows that see none
            attn_mask[(0,) * (len(shape) - 1)] = False
    else:
        attn_mask = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    counts = run_decode(device, modules, q, k, v, attn_mask=attn_mask, enable_gqa=True)
    assert counts.get("attention_decode_combine_kernel", 0) == 1


@pytest.mark.parametrize("device", DEVICES)
def test_strided_operands(device):
    """q, k, v as [B, L, H, E] projections transposed, the output's gradient transposed too."""
    _, modules = decode_kernels(device)
    q = torch.randn(2, 4, 8, 64, device=device).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 700, 2, 64, device=device).transpose(1, 2).requires_grad_()
    v = torch.randn(2, 700, 2, 64, device=device).transpose(1, 2).requires_grad_()
    grad_out = torch.randn(2, 64, 8, 4, device=device).permute(0, 2, 3, 1)
    run_decode(device, modules, q, k, v, enable_gqa=True, grad_out=grad_out, is_causal=True)


@pytest.mark.parametrize("device", DEVICES)
def test_which_calls_take_the_decode_variant(device):
    """seqops.backend("triton") runs decode calls (16 queries or fewer, no dropout) on the
    decode variant, the rest on the fused one."""
    _, modules = decode_kernels(device)

    def launched(L, dropout_p=0.0):
        q, k, v = (torch.randn(1, 2, n, 16, device=device) for n in (L, 40, 40))
        with LaunchCounter(modules) as launches, seqops.backend("triton"):
            seqops.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return set(launches.counts)

    assert "attention_decode_split_kernel" in launched(16)
    assert launched(17) == {"attention_forward_kernel"}
    assert launched(1, dropout_p=0.5) == {"attention_forward_kernel"}


def test_plan():
    """Splits bring the programs to two a multiprocessor, keep at least 4 key blocks each
    and stop at 64; packed rows fill blocks of up to 64 (32 at head dim 256)."""
    from seqops.kernels.attention.decode import decode_plan

    # 1 x 8 key/value heads, a group of 4, one query: 8 programs; 132 SMs want 33 splits,
    # of 16 key blocks each (512 / 33 rounded up), which 32 splits cover.
    plan = decode_plan(1, 8, 4, 1, 32768, 128, 132)
    assert (plan.block_m, plan.row_blocks, plan.block_n, plan.splits) == (16, 1, 64, 32)
    assert plan.keys_per_split % plan.block_n == 0 and plan.splits * plan.keys_per_split >= 32768
    assert (plan.splits - 1) * plan.keys_per_split < 32768  # no split past the keys
    assert decode_plan(1, 1, 1, 1, 10**6, 64, 132).splits == 64
    assert decode_plan(1, 1, 1, 1, 500, 64, 132).splits == 2  # 8 key blocks, 4 a split
    assert decode_plan(64, 8, 4, 1, 4096, 128, 132).splits == 1  # 512 programs already
    assert decode_plan(1, 2, 32, 16, 512, 256, 132).block_m == 32
    assert decode_plan(1, 2, 32, 16, 512, 256, 132).row_blocks == 16


def test_query_heads_past_2_31(sparse_storage):
    """Head 2's slice starts 2**31 elements after head 0's (batch and head offsets int64)."""
    _, modules = decode_kernels("cpu")
    fp16 = sparse_storage(torch.float16)
    q = far_view(fp16, 0, (1, 3, 5, 40), (0, HEAD_APART, 40, 1))
    k = far_view(fp16, 1, (1, 3, 23, 40), (0, HEAD_APART, 40, 1))
    v = far_view(fp16, 2, (1, 3, 23, 40), (0, HEAD_APART, 40, 1))
    run_decode("cpu", modules, q, k, v, is_causal=True)


def test_key_rows_past_2_31(sparse_storage):
    """Keys and values whose last rows sit 2**31 elements after their first: offsets within
    a (batch, head) slice in int64."""
    _, modules = decode_kernels("cpu")
    fp16 = sparse_storage(torch.float16)
    q = far_view(fp16, 0, (1, 2, 5, 40), (0, 40, 80, 1))
    k = far_view(fp16, 1, (1, 2, 23, 40), (0, 40, rows_apart(23), 1))
    v = far_view(fp16, 2, (1, 2, 23, 40), (0, 40, rows_apart(23), 1))
    run_decode("cpu", modules, q, k, v)


def test_dropout_is_refused_by_the_kernel():
    from seqops.kernels.attention import decode

    q = torch.zeros(1, 1, 1, 16)
    with pytest.raises(ValueError, match="no dropout"):
        decode.attention_decode_forward(q, q, q, None, 0.1, False, 0, 1.0 / math.sqrt(16), 0)
