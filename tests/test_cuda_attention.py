"""The CUDA C++ attention, forward and backward (backend "cuda", csrc/attention/), on a
GPU, against the float64 reference with the 2x-of-torch error rule, for the output and
for d query, d key and d value: both dtypes and head dims it is built for, causal or not,
L != S both ways (upper-left and bottom-right), lengths that are no multiple of its tiles
(forward: 128 queries, 64 keys; backward: 64 or 128 keys a CTA over 64 or 32 queries,
64 or 128 queries a CTA over 64 or 32 keys, and at head dim 256 two CTAs a key block, 128
columns of dK and dV each), batch and heads of 1, GQA (dk, dv summed over the
group in the kernel), inputs read in place through their strides and inputs it must copy,
rows that see no key (output 0, lse -inf, no gradient), bool and additive masks of the
shapes models pass, decode steps split over CTAs, and dropout drawing the Triton
backend's mask for the same seed. test_attention.py runs its suite on this backend too; what the
backend refuses (float32, other head dims) skips there, saying so. Every test is marked `cuda` and skips without a GPU."""
import math

import pytest
import torch

import seqops
from accuracy import assert_within_torch_error
from devices import skip_unless_runnable
from seqops import dispatch
from seqops.ops.attention import reference, torch_impl
from seqops.ops.masks import causal_keep

pytestmark = pytest.mark.cuda
DEVICE = "cuda"
DTYPES = [torch.float16, torch.bfloat16]
HEAD_DIMS = [64, 128, 256]  # with gradients (256's dK/dV CTAs take 128 columns each)
# (L, S): 1, below and past one tile of either side, L != S both ways.
LENGTHS = [(1, 1), (17, 17), (130, 257), (257, 130), (1, 257), (257, 1), (128, 64), (129, 65)]


@pytest.fixture(autouse=True)
def runnable():
    skip_unless_runnable(DEVICE, "cuda")


def randn(*shape, dtype):
    return torch.randn(*shape, device=DEVICE, dtype=dtype)


def check_attention(q, k, v, is_causal=False, causal_offset=0, scale=None, enable_gqa=False, attn_mask=None,
                    variant=None):
    """seqops on the cuda backend against the float64 reference, with torch's own SDPA in
    q's dtype as the yardstick, for the output and then (through autograd, with a random
    grad_out) the gradients of q, k and v. causal_offset != 0 goes through torch's
    lower-right causal bias (offset S - L), the form the public API takes it in; it and
    attn_mask do not go together here. variant: the backend's (default: its first, which
    runs the device's best forward kernel)."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    L, S = q.shape[-2], k.shape[-2]
    if causal_offset:
        from torch.nn.attention.bias import causal_lower_right

        assert causal_offset == S - L
        assert attn_mask is None
        mask, causal = causal_lower_right(L, S), False
    else:
        mask, causal = attn_mask, is_causal
    with seqops.backend("cuda", variant=variant):
        out = seqops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale,
                                                  enable_gqa=enable_gqa)
    kwargs = dict(is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, causal_offset=causal_offset)
    exact_kwargs = dict(kwargs, attn_mask=None if attn_mask is None else attn_mask.cpu().double()
                        if attn_mask.dtype.is_floating_point else attn_mask.cpu())
    kwargs["attn_mask"] = attn_mask
    exact_inputs = [t.detach().double().cpu().requires_grad_() for t in (q, k, v)]
    ref = reference.scaled_dot_product_attention(*exact_inputs, **exact_kwargs)
    # torch gives NaN for a row that sees no key on some paths; seqops and the reference
    # give 0, which is exact, so the yardstick takes 0 there too.
    with torch.no_grad():
        theirs = torch_impl.scaled_dot_product_attention(q, k, v, **kwargs).nan_to_num(0.0)
    assert out.shape == ref.shape and out.dtype == q.dtype and out.device == q.device
    assert_within_torch_error("output", out, ref, theirs)
    check_gradients(out, (q, k, v), ref, exact_inputs, kwargs)
    return out.detach()


def check_gradients(out, inputs, ref, exact_inputs, kwargs):
    """d query, d key, d value of the cuda backend's `out` (from `inputs`) against the
    float64 reference's (`ref`, from `exact_inputs`), with torch's as the yardstick."""
    grad_out = torch.randn_like(out)
    ours = torch.autograd.grad(out, inputs, grad_out)
    reference_grads = torch.autograd.grad(ref, exact_inputs, grad_out.double().cpu())
    leaves = [t.detach().requires_grad_() for t in inputs]
    their_grads = torch.autograd.grad(torch_impl.scaled_dot_product_attention(*leaves, **kwargs), leaves, grad_out)
    for name, mine, exact, yardstick, t in zip(("d query", "d key", "d value"), ours, reference_grads, their_grads,
                                               inputs):
        assert mine.shape == t.shape and mine.dtype == t.dtype, name
        assert_within_torch_error(name, mine, exact, yardstick.nan_to_num(0.0))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lengths_head_dims_and_dtypes(dtype, head_dim, lengths, causal):
    L, S = lengths
    check_attention(randn(2, 3, L, head_dim, dtype=dtype), randn(2, 3, S, head_dim, dtype=dtype),
                  randn(2, 3, S, head_dim, dtype=dtype), is_causal=causal)


@pytest.mark.parametrize("variant", [None, "sm80"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(1, 1), (17, 17), (130, 257), (257, 130), (1, 257)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_head_dim_256_forward_without_gradients(dtype, lengths, causal, variant):
    """Head dim 256 under no_grad (64-key tiles on sm90a, 32 on sm80), on both forward
    kernels (the other tests take its gradients too)."""
    L, S = lengths
    q, k, v = (randn(2, 3, n, 256, dtype=dtype) for n in (L, S, S))
    with torch.no_grad(), seqops.backend("cuda", variant=variant):
        out = seqops.scaled_dot_product_attention(q, k, v, is_causal=causal)
    ref = reference.scaled_dot_product_attention(*(t.double().cpu() for t in (q, k, v)), is_causal=causal)
    theirs = torch_impl.scaled_dot_product_attention(q, k, v, is_causal=causal).nan_to_num(0.0)
    assert out.shape == ref.shape and out.dtype == dtype
    assert_within_torch_error("output", out, ref, theirs)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(17, 17), (130, 257), (257, 130), (129, 65)], ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_the_sm80_kernel_on_every_device(head_dim, lengths, causal):
    """The sm80 variant keeps the mma.sync forward where the default runs another (the
    wgmma/TMA one on compute capability 9.0), so that a Hopper GPU tests both; elsewhere
    the two are one kernel."""
    L, S = lengths
    check_attention(randn(2, 3, L, head_dim, dtype=torch.bfloat16), randn(2, 3, S, head_dim, dtype=torch.bfloat16),
                    randn(2, 3, S, head_dim, dtype=torch.bfloat16), is_causal=causal, variant="sm80")
    mask = torch.rand(2, 1, L, S, device=DEVICE) > 0.3
    check_attention(randn(2, 3, L, head_dim, dtype=torch.float16), randn(2, 3, S, head_dim, dtype=torch.float16),
                    randn(2, 3, S, head_dim, dtype=torch.float16), attn_mask=mask, variant="sm80")


@pytest.mark.parametrize("lengths", [(17, 300), (300, 17), (130, 257), (257, 130)], ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bottom_right_causal(dtype, head_dim, lengths):
    """Offset S - L: with L > S the first L - S queries see no key and give 0."""
    L, S = lengths
    out = check_attention(randn(2, 2, L, head_dim, dtype=dtype), randn(2, 2, S, head_dim, dtype=dtype),
                        randn(2, 2, S, head_dim, dtype=dtype), is_causal=True, causal_offset=S - L)
    if L > S:
        assert (out[..., : L - S, :] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_batch_and_heads_of_one_over_many_key_tiles(causal):
    check_attention(randn(1, 1, 1000, 64, dtype=torch.float16), randn(1, 1, 1000, 64, dtype=torch.float16),
                  randn(1, 1, 1000, 64, dtype=torch.float16), is_causal=causal)


@pytest.mark.parametrize("kv_heads", [2, 1])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_grouped_query_attention(dtype, head_dim, kv_heads):
    check_attention(randn(2, 4, 70, head_dim, dtype=dtype), randn(2, kv_heads, 90, head_dim, dtype=dtype),
                  randn(2, kv_heads, 90, head_dim, dtype=dtype), is_causal=True, enable_gqa=True)


@pytest.mark.parametrize("layout", ["transposed", "head-dim-strided", "misaligned-offset", "broadcast-batch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_input_layouts(dtype, layout):
    """Transposed projections ([B, L, H, E] viewed as [B, H, L, E]) are read in place;
    a head dim with stride 2 and rows starting off 16 bytes are copied once."""
    B, H, L, S, E = 2, 3, 65, 131, 64
    make = {
        "transposed": lambda n: randn(B, n, H, E, dtype=dtype).transpose(1, 2),
        "head-dim-strided": lambda n: randn(B, H, n, 2 * E, dtype=dtype)[..., ::2],
        "misaligned-offset": lambda n: randn(B, H, n, E + 1, dtype=dtype)[..., 1:],
        "broadcast-batch": lambda n: randn(1, H, n, E, dtype=dtype).expand(B, H, n, E),
    }[layout]
    check_attention(make(L), make(S), make(S), is_causal=True)


@pytest.mark.parametrize("scale", [0.05, 1.0, -0.3])
def test_scale(scale):
    check_attention(randn(2, 2, 100, 128, dtype=torch.bfloat16), randn(2, 2, 100, 128, dtype=torch.bfloat16),
                  randn(2, 2, 100, 128, dtype=torch.bfloat16), is_causal=True, scale=scale)


@pytest.mark.parametrize("causal_offset", [-300, -130, -1, 0, 5, 64, 1000])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_lse_and_rows_that_see_no_key(head_dim, causal_offset):
    """The Impl's own (out, lse), offsets past both ends included: out exactly 0 and lse
    -inf on a row that sees no key; else lse is the natural logsumexp of the scaled
    scores. No torch op returns lse, hence a fixed tolerance: the inputs are exact in
    float64, so what remains is the kernel's fp32 accumulation."""
    B, H, L, S = 2, 2, 257, 200
    q, k, v = (randn(B, H, n, head_dim, dtype=torch.float16) for n in (L, S, S))
    scale = 1 / math.sqrt(head_dim)
    impl = dispatch.implementation("attention/cuda/fused")
    out, lse = impl.forward(q, k, v, None, 0.0, True, causal_offset, scale, 0)
    keep = causal_keep(L, S, torch.device("cpu"), causal_offset)
    scores = (q.double().cpu() @ k.double().cpu().transpose(-2, -1) * scale).masked_fill(~keep, float("-inf"))
    lse_ref = torch.logsumexp(scores, -1)
    sees_none = ~keep.any(-1)
    assert lse.dtype == torch.float32 and lse.shape == (B, H, L)
    assert torch.isneginf(lse.cpu()[..., sees_none]).all()
    assert (out.cpu()[..., sees_none, :] == 0).all()
    torch.testing.assert_close(lse.cpu().double()[..., ~sees_none], lse_ref[..., ~sees_none], rtol=1e-4, atol=1e-4)
    ref = reference.scaled_dot_product_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(),
                                                 is_causal=True, scale=scale, causal_offset=causal_offset)
    theirs = torch_impl.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                     causal_offset=causal_offset).nan_to_num(0.0)
    assert_within_torch_error("output", out, ref, theirs)


def test_runs_on_torchs_current_stream():
    q = randn(2, 2, 300, 64, dtype=torch.float16)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream), seqops.backend("cuda"):
        out = seqops.scaled_dot_product_attention(q, q, q, is_causal=True)
    stream.synchronize()
    with seqops.backend("torch"):
        expected = seqops.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert (out - expected).abs().max().item() < 1e-2


@pytest.mark.parametrize("variant", [None, "ordered_dq"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_backward_is_deterministic(head_dim, variant):
    """Every gradient element is summed in a fixed order (by one CTA; or, for ordered_dq's
    dq, by the key blocks taking turns), so two runs give the same bits (GQA, whose dk and
    dv sum over a group, included)."""
    q = randn(2, 4, 333, head_dim, dtype=torch.bfloat16).requires_grad_()
    k, v = (randn(2, 2, 301, head_dim, dtype=torch.bfloat16).requires_grad_() for _ in range(2))
    grad_out = randn(2, 4, 333, head_dim, dtype=torch.bfloat16)
    runs = []
    for _ in range(2):
        with seqops.backend("cuda", variant=variant):
            out = seqops.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        runs.append(torch.autograd.grad(out, (q, k, v), grad_out))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def masks(kind, B, H, L, S, dtype):
    """attn_mask of the forms models pass: BERT's key padding (bool [B, 1, 1, S], and its
    additive form), a learned-bias shape (float [1, H, L, S]), a full bool mask with rows
    that see nothing, and a float32 mask on 16-bit inputs with -inf entries."""
    lengths = torch.tensor([S, S // 3 + 1])[:B].to(DEVICE)
    padding = torch.arange(S, device=DEVICE)[None, :] < lengths[:, None]  # [B, S]
    if kind == "bool-key-padding":
        return padding[:, None, None, :]
    if kind == "additive-key-padding":
        return torch.zeros(B, 1, 1, S, device=DEVICE, dtype=dtype).masked_fill(~padding[:, None, None, :],
                                                                                torch.finfo(dtype).min)
    if kind == "float-bias":
        return randn(1, H, L, S, dtype=dtype)
    if kind == "bool-rows-hidden":
        mask = torch.rand(B, H, L, S, device=DEVICE) < 0.7
        mask[:, :, ::5] = False  # every fifth query sees no key: output and gradient 0
        return mask
    if kind == "float32-with-inf":
        mask = randn(B, 1, L, S, dtype=torch.float32)
        return mask.masked_fill(torch.rand(B, 1, L, S, device=DEVICE) < 0.3, float("-inf"))
    raise ValueError(kind)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["bool-key-padding", "additive-key-padding", "float-bias", "bool-rows-hidden",
                                  "float32-with-inf"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masks(dtype, head_dim, kind, causal):
    """Read in place, broadcast by stride 0."""
    B, H, L, S = 2, 3, 70, 150
    check_attention(randn(B, H, L, head_dim, dtype=dtype), randn(B, H, S, head_dim, dtype=dtype),
                    randn(B, H, S, head_dim, dtype=dtype), is_causal=causal,
                    attn_mask=masks(kind, B, H, L, S, dtype))


@pytest.mark.parametrize("lengths", [(1, 4097), (5, 1000), (16, 2111)], ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_steps_split_the_keys(dtype, head_dim, lengths):
    """A few queries against a long KV cache (bottom-right causal, GQA, one batch): split
    over CTAs and combined by logsumexp (cuda_attention.decode_splits), output, lse and
    gradients as one CTA's would be."""
    from seqops.backends.cuda_attention import _processors, decode_splits

    L, S = lengths
    assert decode_splits(4, L, S, _processors(torch.cuda.current_device())) > 1, "this case must split"
    check_attention(randn(1, 4, L, head_dim, dtype=dtype), randn(1, 2, S, head_dim, dtype=dtype),
                    randn(1, 2, S, head_dim, dtype=dtype), is_causal=True, causal_offset=S - L, enable_gqa=True)


def dropout_keep(module, seed, B, Hq, L, S):
    """bool [B, Hq, L, S]: the probabilities the kernels keep at dropout_p 0.3 for this
    seed, drawn on the host by the extension's copy of their Philox (a CPU test checks it
    against the Triton backend's draw)."""
    counters = [i * S + j for i in range(L) for j in range(S)]
    draws = [module.attention_dropout_uniform(seed, bh, counters) for bh in range(B * Hq)]
    return torch.tensor(draws).view(B, Hq, L, S) >= 0.3


@pytest.mark.parametrize("variant", [None, "ordered_dq"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropout_draws_the_triton_backends_mask(dtype, head_dim, causal, variant):
    """Output and gradients against the float64 reference run with the mask the kernels
    draw for the call's seed, the Triton backend (same seed, same mask) as the yardstick:
    a different draw would be off by far more than rounding."""
    from seqops import _ext

    B, Hq, L, S, p = 2, 3, 70, 150, 0.3
    q, k, v = (randn(B, Hq, n, head_dim, dtype=dtype).requires_grad_() for n in (L, S, S))
    grad_out = randn(B, Hq, L, head_dim, dtype=dtype)
    results = {}
    for backend in ("cuda", "triton"):
        torch.manual_seed(123)
        with seqops.backend(backend, variant=variant if backend == "cuda" else None):
            out = seqops.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        results[backend] = (out, *torch.autograd.grad(out, (q, k, v), grad_out))
    torch.manual_seed(123)  # the seed the op draws, as attention_forward draws it
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    keep = dropout_keep(_ext.load(), seed, B, Hq, L, S)
    exact = [t.detach().double().cpu().requires_grad_() for t in (q, k, v)]
    ref = reference.scaled_dot_product_attention(*exact, dropout_p=p, is_causal=causal, dropout_keep=keep)
    expected = (ref, *torch.autograd.grad(ref, exact, grad_out.double().cpu()))
    for i, name in enumerate(("output", "d query", "d key", "d value")):
        assert_within_torch_error(name, results["cuda"][i], expected[i], results["triton"][i])


@pytest.mark.parametrize("variant", [None, "ordered_dq"])
@pytest.mark.parametrize("shape", ["1-heads-queries-keys", "batch-1-1-keys", "full"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_float_mask_gradient(dtype, head_dim, shape, variant):
    """A learned bias (T5's relative positions: [1, H, L, S]) and other broadcast shapes
    get their gradient, summed over the dims they broadcast along, against float64 with
    torch's as the yardstick (ordered_dq writes the score gradient from its dK/dV kernel,
    the default from its dQ kernel)."""
    B, H, L, S = 2, 3, 70, 150
    mask_shape = {"1-heads-queries-keys": (1, H, L, S), "batch-1-1-keys": (B, 1, 1, S), "full": (B, H, L, S)}[shape]
    q, k, v = (randn(B, H, n, head_dim, dtype=dtype).requires_grad_() for n in (L, S, S))
    mask = randn(*mask_shape, dtype=dtype).requires_grad_()
    grad_out = randn(B, H, L, head_dim, dtype=dtype)
    with seqops.backend("cuda", variant=variant):
        out = seqops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True)
    ours = torch.autograd.grad(out, (q, k, v, mask), grad_out)
    exact = [t.detach().double().cpu().requires_grad_() for t in (q, k, v, mask)]
    ref = reference.scaled_dot_product_attention(*exact[:3], attn_mask=exact[3], is_causal=True)
    expected = torch.autograd.grad(ref, exact, grad_out.double().cpu())
    leaves = [t.detach().requires_grad_() for t in (q, k, v, mask)]
    theirs_out = torch_impl.scaled_dot_product_attention(*leaves[:3], attn_mask=leaves[3], is_causal=True)
    theirs = torch.autograd.grad(theirs_out, leaves, grad_out)
    for name, mine, exact_grad, yardstick in zip(("d query", "d key", "d value", "d mask"), ours, expected, theirs):
        assert mine.shape == exact_grad.shape and mine.dtype == yardstick.dtype, name
        assert_within_torch_error(name, mine, exact_grad, yardstick.nan_to_num(0.0))


# (L, S, query heads, key/value heads, causal, causal offset): off the tiles both ways,
# upper-left and bottom-right causal (rows that see no key when L > S), GQA and MQA over
# many key blocks (many turns a query tile), a decode step.
ORDERED_DQ_CASES = {
    "one": (1, 1, 3, 3, False, 0),
    "full-off-tiles": (129, 65, 3, 3, False, 0),
    "causal-L<S": (130, 257, 3, 3, True, 0),
    "causal-L>S": (257, 130, 3, 3, True, 0),
    "bottom-right-L<S": (17, 300, 2, 2, True, 283),
    "bottom-right-L>S": (300, 17, 2, 2, True, -283),
    "gqa": (70, 90, 4, 2, True, 0),
    "mqa-many-key-blocks": (333, 1000, 4, 1, False, 0),
    "decode": (1, 257, 4, 2, True, 256),
}


@pytest.mark.parametrize("case", ORDERED_DQ_CASES)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ordered_dq_backward(dtype, head_dim, case):
    """The five-product backward (variant "ordered_dq": dQ added by the dK/dV kernel, key
    block by key block in turn): output and gradients against float64 with torch's as the
    yardstick; dk and dv the same bits as the default two-kernel backward's (the same
    products in the same order: only dq's path differs); dq the same bits run to run."""
    L, S, Hq, Hkv, causal, offset = ORDERED_DQ_CASES[case]
    q = randn(2, Hq, L, head_dim, dtype=dtype)
    k, v = (randn(2, Hkv, S, head_dim, dtype=dtype) for _ in range(2))
    gqa = Hq != Hkv
    check_attention(q, k, v, is_causal=causal, causal_offset=offset, enable_gqa=gqa, variant="ordered_dq")

    if offset:
        from torch.nn.attention.bias import causal_lower_right

        mask, causal = causal_lower_right(L, S), False
    else:
        mask = None
    grad_out = randn(2, Hq, L, head_dim, dtype=dtype)
    runs = []
    for variant in (None, "ordered_dq", "ordered_dq"):
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        with seqops.backend("cuda", variant=variant):
            out = seqops.scaled_dot_product_attention(*leaves, attn_mask=mask, is_causal=causal, enable_gqa=gqa)
        runs.append(torch.autograd.grad(out, leaves, grad_out))
    two_kernels, ordered, again = runs
    assert torch.equal(ordered[1], two_kernels[1]) and torch.equal(ordered[2], two_kernels[2]), "dk, dv"
    assert all(torch.equal(a, b) for a, b in zip(ordered, again)), "run to run"
