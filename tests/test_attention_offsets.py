"""Attention offsets past 2**31 elements: the base of every (batch, head) slice is int64,
and a launch whose element offsets inside a slice (or dropout counters query * S + key)
can pass 2**31 - 1 computes them in int64 (INT64_OFFSETS).

Without a GPU nothing that large can be computed, so: the launchers' choice is checked on
meta tensors (nothing allocated, kernels recorded instead of run); the kernels run under
the interpreter on small views whose strides put their last rows, heads or mask rows past
2**31 elements, in a sparse file mapped into memory (only the pages touched are real);
dropout's counters are checked by a probe kernel. The `cuda` tests run real overflowing
shapes on a GPU."""
import pytest
import torch
import triton
import triton.language as tl

import seqops
from seqops import dispatch
from seqops.kernels.attention.common import dropout_keep
from accuracy import assert_within_torch_error
from test_attention import check_attention

INT32_LIMIT = 2**31


@pytest.fixture
def attention_kernels():
    reason = dispatch.platform_reason("triton", torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)
    from seqops.kernels.attention import backward, common, forward

    return forward, backward, common


class RecordedFlags:
    """Stands in for a launcher's kernel: records the value of `flag` of each launch."""

    def __init__(self, name: str, flags: dict, flag: str = "INT64_OFFSETS"):
        self.name, self.flags, self.flag = name, flags, flag

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            if self.flag in kwargs:  # kernels without the flag are left out
                self.flags[self.name] = kwargs[self.flag]
        return launch


def launch_flags(monkeypatch, module, launch, flag: str = "INT64_OFFSETS") -> dict:
    """{kernel name: its `flag`} of every kernel `launch()` launches through `module`."""
    flags = {}
    for name in [n for n in vars(module) if n.endswith("_kernel")]:
        monkeypatch.setattr(module, name, RecordedFlags(name, flags, flag))
    launch()
    assert flags, "the launcher launched no kernel"
    return flags


def meta(*shape, dtype=torch.float16):
    return torch.empty(shape, dtype=dtype, device="meta")


def contiguous_heads(B, H, L, S, E):
    return meta(B, H, L, E), meta(B, H, S, E), meta(B, H, S, E), None


def projected(B, H, L, S, E):
    """q, k, v as a model makes them: [B, L, H, E] transposed to [B, H, L, E]."""
    return (*(meta(B, n, H, E).transpose(1, 2) for n in (L, S, S)), None)


# name: (make() -> q, k, v, mask; int64 offsets expected in the forward; in the backward;
#        dropout_p; whether the mask needs its gradient)
LAUNCHES = {
    # 2**32 elements a tensor, but 2**27 a (batch, head) slice: the int64 bases cover it.
    "contiguous-heads-past-2**31": (lambda: contiguous_heads(1, 32, 2**20, 2**20, 128), False, False, 0.0, False),
    # Rows H * E = 4096 apart: row 2**20 of a head is 2**32 elements from its first.
    "projection-transposed": (lambda: projected(1, 32, 2**20, 2**20, 128), True, True, 0.0, False),
    "bool-mask-65536-squared": (
        lambda: (*contiguous_heads(1, 1, 2**16, 2**16, 64)[:3], meta(1, 1, 2**16, 2**16, dtype=torch.bool)),
        True, True, 0.0, False),
    "bool-mask-over-keys": (
        lambda: (*contiguous_heads(1, 1, 2**16, 2**16, 64)[:3], meta(1, 1, 1, 2**16, dtype=torch.bool)),
        False, False, 0.0, False),
    "dropout-counters-past-2**31": (lambda: contiguous_heads(1, 1, 2**16, 2**16, 64), True, True, 0.1, False),
    "dropout-counters-below-2**31": (lambda: contiguous_heads(1, 1, 2**15, 2**15, 64), False, False, 0.1, False),
    "no-dropout-same-lengths": (lambda: contiguous_heads(1, 1, 2**16, 2**16, 64), False, False, 0.0, False),
    # q [L, 16] and v [64, 256] stay small; out [L, 256] reaches 2**31.
    "output-past-2**31": (lambda: (meta(1, 1, 2**23, 16), meta(1, 1, 64, 16), meta(1, 1, 64, 256), None),
                          True, True, 0.0, False),
    # A mask over keys expanded along the queries reads little; its gradient, in the
    # mask's own (expanded) shape, is a whole L x S.
    "mask-gradient-past-2**31": (
        lambda: (*contiguous_heads(1, 1, 2**16, 2**16, 64)[:3], meta(1, 1, 1, 2**16).expand(1, 1, 2**16, 2**16)),
        False, True, 0.0, True),
}


@pytest.mark.parametrize("case", list(LAUNCHES))
def test_launchers_choose_int64_offsets_exactly_when_needed(attention_kernels, monkeypatch, case):
    forward, backward, _ = attention_kernels
    make, int64_forward, int64_backward, dropout_p, mask_needs_grad = LAUNCHES[case]
    q, k, v, mask = make()
    causal_offset, scale, seed = 0, 0.125, 3
    forward_flags = launch_flags(monkeypatch, forward, lambda: forward.attention_forward(
        q, k, v, mask, dropout_p, True, causal_offset, scale, seed))
    assert forward_flags == {"attention_forward_kernel": int64_forward}
    out = meta(*q.shape[:3], v.shape[-1])
    lse = meta(*q.shape[:3], dtype=torch.float32)
    grad_out = meta(*out.shape)
    backward_flags = launch_flags(monkeypatch, backward, lambda: backward.attention_backward(
        grad_out, q, k, v, out, lse, mask, dropout_p, True, causal_offset, scale, seed, mask_needs_grad))
    assert set(backward_flags.values()) == {int64_backward}, backward_flags


def test_grad_out_layout_alone_can_need_int64_offsets(attention_kernels, monkeypatch):
    """The incoming gradient is any view autograd hands over: here [B, L, H, E]
    transposed, rows 4096 apart, while every other operand is contiguous."""
    _, backward, _ = attention_kernels
    q, k, v, _ = contiguous_heads(1, 32, 2**20, 2**20, 128)
    out, lse = meta(1, 32, 2**20, 128), meta(1, 32, 2**20, dtype=torch.float32)
    grad_out = meta(1, 2**20, 32, 128).transpose(1, 2)
    flags = launch_flags(monkeypatch, backward, lambda: backward.attention_backward(
        grad_out, q, k, v, out, lse, None, 0.0, False, 0, 0.125, 0, False))
    assert set(flags.values()) == {True}, flags


def test_offsets_of_padded_lanes_count(attention_kernels):
    """Lanes of a tile past the last row form offsets too: a slice whose last real row
    ends just below 2**31 still needs int64 once padded by the longest tile edge."""
    _, _, common = attention_kernels
    E = 64
    rows = (INT32_LIMIT - E) // (2**20) + 1  # row stride 2**20: the last row ends below 2**31
    q = torch.empty_strided((1, 1, rows, E), (0, 0, 2**20, 1), device="meta")
    assert (rows - 1) * 2**20 + E - 1 < INT32_LIMIT
    assert common.needs_int64_offsets([q], None)
    shorter = q[:, :, : rows - common.LONGEST_TILE_EDGE - 1]
    assert not common.needs_int64_offsets([shorter], None)


def test_the_triton_backend_takes_dropout_past_2_31_counters_and_refuses_lengths_past_2_30():
    reason = dispatch.platform_reason("triton", torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)
    q = k = v = meta(1, 1, 2**16, 64)
    assert dispatch.backend_reason("attention", "triton", torch.device("cpu"), q, k, v, None, 0.1, False, None,
                                   False) is None
    long_q = meta(1, 1, 2**30 + 1, 64)
    why = dispatch.backend_reason("attention", "triton", torch.device("cpu"), long_q, k, v, None, 0.0, False, None,
                                  False)
    assert why is not None and "2**30" in why and f"L={2**30 + 1}" in why


# --- the kernels themselves, on views reaching past 2**31 elements -----------------------

# Each operand starts at its own slot (2**20 elements apart) of a sparse storage, its
# strides putting its last rows or heads past 2**31 elements.
STORAGE_ELEMENTS = INT32_LIMIT + 2**22


@pytest.fixture
def sparse_storage(tmp_path):
    """storage(dtype): a 1-D tensor of STORAGE_ELEMENTS mapped from a sparse file: only
    the pages a test writes or reads take memory or disk."""
    def storage(dtype):
        path = tmp_path / f"storage-{dtype}".replace("torch.", "")
        with open(path, "wb") as f:
            f.truncate(STORAGE_ELEMENTS * dtype.itemsize)
        return torch.from_file(str(path), shared=True, size=STORAGE_ELEMENTS, dtype=dtype)
    return storage


def far_view(storage, slot, shape, strides, requires_grad=True):
    """A view of `storage` at slot * 2**20 with these strides, filled with fresh data."""
    view = storage.as_strided(shape, strides, slot * 2**20)
    assert view.storage_offset() + sum((n - 1) * s for n, s in zip(shape, strides)) < STORAGE_ELEMENTS
    if view.dtype == torch.bool:
        view.copy_(torch.rand(shape) > 0.3)
        return view
    view.copy_(torch.randn(shape))
    return view.requires_grad_(requires_grad)


L, S, E = 17, 23, 40
HEAD_APART = 2**30  # head 2 of 3 starts 2**31 elements after head 0


def rows_apart(n_rows: int) -> int:
    """A row stride that puts the last of n_rows rows 2**31 elements or more after the first."""
    return -(-INT32_LIMIT // (n_rows - 1))


def test_query_heads_past_2_31(attention_kernels, sparse_storage):
    """The base offset of head 2 is 2**31 elements: int64 bases, int32 offsets within."""
    fp16 = sparse_storage(torch.float16)
    q = far_view(fp16, 0, (1, 3, L, E), (0, HEAD_APART, E, 1))
    k = far_view(fp16, 1, (1, 3, S, E), (0, HEAD_APART, E, 1))
    v = far_view(fp16, 2, (1, 3, S, E), (0, HEAD_APART, E, 1))
    grad_out = far_view(fp16, 3, (1, 3, L, E), (0, HEAD_APART, E, 1), requires_grad=False)
    check_attention("triton", q, k, v, is_causal=True, grad_out=grad_out)


def test_rows_past_2_31(attention_kernels, sparse_storage):
    """Queries, keys, values and the incoming gradient with their last rows 2**31 elements
    after their first (a [B, L, H, E] projection of a huge H * E, transposed): offsets
    within a (batch, head) slice pass 2**31."""
    fp16 = sparse_storage(torch.float16)
    q = far_view(fp16, 0, (1, 2, L, E), (0, E, rows_apart(L), 1))
    k = far_view(fp16, 1, (1, 2, S, E), (0, E, rows_apart(S), 1))
    v = far_view(fp16, 2, (1, 2, S, E), (0, E, rows_apart(S), 1))
    grad_out = far_view(fp16, 3, (1, 2, L, E), (0, E, rows_apart(L), 1), requires_grad=False)
    check_attention("triton", q, k, v, is_causal=True, grad_out=grad_out)


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_mask_rows_past_2_31(attention_kernels, sparse_storage, mask_kind):
    """A mask [L, S] whose last row is 2**31 elements after its first, as in a mask of
    L = S = 65536: row offsets pass 2**31. The float mask gets its gradient."""
    q, k, v = (torch.randn(2, 3, n, E, dtype=torch.float16, requires_grad=True) for n in (L, S, S))
    if mask_kind == "bool":
        mask = far_view(sparse_storage(torch.bool), 0, (L, S), (rows_apart(L), 1))
        mask[:, 0] = True  # no row empty, so that every gradient has an error to measure
    else:
        mask = far_view(sparse_storage(torch.float16), 0, (L, S), (rows_apart(L), 1))
    check_attention("triton", q, k, v, attn_mask=mask)


@triton.jit
def _dropout_keep_probe(keep_ptr, expected_ptr, counters_ptr, seed, bh, start_m, S, dropout_p,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INT64_OFFSETS: tl.constexpr):
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    tile = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + offs_n[None, :]
    tl.store(keep_ptr + tile, dropout_keep(seed, bh, offs_m, offs_n, S, dropout_p, INT64_OFFSETS))
    tl.store(expected_ptr + tile, tl.rand(seed + bh, tl.load(counters_ptr + tile)) >= dropout_p)


def dropout_keep_tile(start_m, S, int64_offsets, seed=1234, bh=5, p=0.5, block=16):
    """(the kernels' keep mask, Philox at the host's exact counters query * S + key) for
    queries [start_m, start_m + block) and keys [0, block)."""
    counters = (torch.arange(start_m, start_m + block, dtype=torch.int64)[:, None] * S
                + torch.arange(block, dtype=torch.int64)[None, :])
    keep, expected = (torch.empty(block, block, dtype=torch.bool) for _ in range(2))
    _dropout_keep_probe[(1,)](keep, expected, counters, seed, bh, start_m, S, p, BLOCK_M=block, BLOCK_N=block,
                              INT64_OFFSETS=int64_offsets)
    return keep, expected


def test_dropout_counters_past_2_32_are_exact(attention_kernels):
    """With S = 2**16, query 2**16 + i has counter 2**32 + i * S + key: 32-bit counters
    would wrap onto query i's and repeat its mask; int64 ones draw from the exact counter."""
    S = 2**16
    keep_far, expected_far = dropout_keep_tile(S, S, int64_offsets=True)
    assert torch.equal(keep_far, expected_far)
    keep_near, _ = dropout_keep_tile(0, S, int64_offsets=True)
    assert not torch.equal(keep_far, keep_near), "queries 2**32 / S apart drew the same mask"


@pytest.mark.parametrize("start_m, S", [(0, 100), (2**15 - 16, 2**16)], ids=["small", "up-to-2**31"])
def test_dropout_counters_agree_in_int32_and_int64(attention_kernels, start_m, S):
    """A forward and a backward launch may differ in INT64_OFFSETS (the backward indexes
    more tensors); where 32-bit counters are exact both must draw the same mask."""
    keep32, expected = dropout_keep_tile(start_m, S, int64_offsets=False)
    keep64, _ = dropout_keep_tile(start_m, S, int64_offsets=True)
    assert torch.equal(keep32, expected) and torch.equal(keep64, expected)


# --- on a GPU: real shapes past 2**31 ---------------------------------------------------

def reference_rows(query_rows, key, value, attn_mask, grad_out_rows, dropout_p=0.0):
    """Output and gradients of the given query rows alone (attention rows are independent,
    and k, v get gradients only from rows whose output gradient is non-zero), by the
    float64 reference and by torch's op in the inputs' dtype."""
    from seqops.ops.attention import reference, torch_impl

    results = []
    for fn, dtype in ((reference.scaled_dot_product_attention, torch.float64),
                      (torch_impl.scaled_dot_product_attention, query_rows.dtype)):
        q, k, v = (t.detach().to(dtype).requires_grad_() for t in (query_rows, key, value))
        mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.to(dtype)
        out = fn(q, k, v, attn_mask=mask)
        results.append((out, *torch.autograd.grad(out, (q, k, v), grad_out_rows.to(dtype))))
    return results


@pytest.mark.cuda
def test_cuda_projection_rows_past_2_31():
    """q [B, L, H, E] transposed with L * H * E > 2**31 (4.3 GB in fp16): the queries of
    rows 2**18 and on sit past 2**31 elements of their head's first row."""
    H, E, L, S = 64, 128, 2**18 + 4096, 64
    q = torch.randn(1, L, H, E, device="cuda", dtype=torch.float16).transpose(1, 2).requires_grad_()
    k, v = (torch.randn(1, H, S, E, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(2))
    rows = torch.cat([torch.arange(64), torch.arange(L - 256, L)]).cuda()
    grad_out = torch.zeros(1, H, L, E, device="cuda", dtype=torch.float16)
    grad_out[:, :, rows] = torch.randn(1, H, len(rows), E, device="cuda", dtype=torch.float16)
    with seqops.backend("triton"):
        out = seqops.scaled_dot_product_attention(q, k, v)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad_out)
    ours = (out[:, :, rows], dq[:, :, rows], dk, dv)
    ref, theirs = reference_rows(q[:, :, rows], k, v, None, grad_out[:, :, rows])
    for name, o, r, t in zip(["output", "d query", "d key", "d value"], ours, ref, theirs):
        assert_within_torch_error(name, o, r, t)


@pytest.mark.cuda
def test_cuda_bool_mask_65536_squared():
    """A bool mask [L, S] with L = S = 65536 (4 GB): rows 32768 and on of the mask sit
    past 2**31 elements."""
    L = S = 2**16
    q, k, v = (torch.randn(1, 2, n, 64, device="cuda", dtype=torch.float16, requires_grad=True) for n in (L, S, S))
    mask = torch.rand(L, S, device="cuda") > 0.3
    rows = torch.cat([torch.arange(64), torch.arange(L - 128, L)]).cuda()
    grad_out = torch.zeros(1, 2, L, 64, device="cuda", dtype=torch.float16)
    grad_out[:, :, rows] = torch.randn(1, 2, len(rows), 64, device="cuda", dtype=torch.float16)
    with seqops.backend("triton"):
        out = seqops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad_out)
    ours = (out[:, :, rows], dq[:, :, rows], dk, dv)
    ref, theirs = reference_rows(q[:, :, rows], k, v, mask[rows], grad_out[:, :, rows])
    for name, o, r, t in zip(["output", "d query", "d key", "d value"], ours, ref, theirs):
        assert_within_torch_error(name, o, r, t)


@pytest.mark.cuda
def test_cuda_dropout_past_2_32_counters_does_not_repeat():
    """L = S = 65536 + 64 with dropout: query 65536 + i has counter 2**32 + i * S + key.
    Read the kept probabilities of the first 256 keys out through one-hot values: the
    rows past 2**32 keep their own share and do not repeat the first rows' masks."""
    L = S = 2**16 + 64
    p = 0.3
    q, k = (torch.randn(1, 1, n, 64, device="cuda", dtype=torch.float16) * 0.1 for n in (L, S))
    v = torch.zeros(1, 1, S, 256, device="cuda", dtype=torch.float16)
    v[0, 0, torch.arange(256), torch.arange(256)] = 1  # out[:, j] = P[:, j] after dropout, for j < 256
    torch.manual_seed(0)
    with seqops.backend("triton"):
        out = seqops.scaled_dot_product_attention(q, k, v, dropout_p=p)
    kept = out[0, 0] != 0
    near, far = kept[:64], kept[2**16:2**16 + 64]
    assert not torch.equal(near, far)
    share = far.float().mean().item()
    assert abs(share - (1 - p)) < 5 * ((p * (1 - p) / far.numel()) ** 0.5)
