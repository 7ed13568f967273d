"""seqops.scaled_dot_product_attention on the Triton backend with operands in the layouts
models and autograd hand over: transposed and permuted projections, sliced head dims,
storage offsets (pointers off 16-byte alignment), stride-0 (expanded) batch and head dims,
masks transposed, expanded or sliced, and incoming gradients that are expanded or
transposed. Output and every gradient against the float64 reference with the error rule
(check_attention of test_attention.py)."""
import pytest
import torch

from test_attention import check_attention
from devices import DEVICES, skip_unless_runnable

B, H, L, S, E, EV = 2, 3, 33, 47, 40, 24


def leaf(t):
    return t.requires_grad_()


def from_projection(device, dtype, n, e=E, heads=H):
    """[B, n, heads, e] (a projection's output viewed per head) transposed to [B, heads, n, e]."""
    return leaf(torch.randn(B, n, heads, e, device=device, dtype=dtype)).transpose(1, 2)


def packed_projection(device, dtype):
    """q, k, v as one packed projection [B, L, 3, H, E], unbound and transposed (L = S)."""
    qkv = leaf(torch.randn(B, L, 3, H, E, device=device, dtype=dtype))
    return tuple(t.transpose(1, 2) for t in qkv.unbind(2))


def sequence_first(device, dtype, n, e=E):
    """[n, B, H, e] (nn.MultiheadAttention's sequence-first layout) permuted to [B, H, n, e]."""
    return leaf(torch.randn(n, B, H, e, device=device, dtype=dtype)).permute(1, 2, 0, 3)


def head_dim_strided(device, dtype, n, e=E):
    """Every other feature of a wider tensor: the head dim's stride is 2."""
    return leaf(torch.randn(B, H, n, 2 * e, device=device, dtype=dtype))[..., ::2]


def head_dim_major(device, dtype, n, e=E):
    """[B, H, e, n] transposed: consecutive features are n elements apart."""
    return leaf(torch.randn(B, H, e, n, device=device, dtype=dtype)).transpose(-1, -2)


def storage_offset(device, dtype, n, e=E):
    """A window of a larger tensor starting 5 elements into a row: a storage offset that
    leaves the data pointer off 16-byte alignment."""
    return leaf(torch.randn(B, H, n + 4, e + 7, device=device, dtype=dtype))[:, :, 3:3 + n, 5:5 + e]


def batch_strided(device, dtype, n, e=E):
    """Every other batch and head of a larger tensor."""
    return leaf(torch.randn(2 * B, 2 * H, n, e, device=device, dtype=dtype))[::2, ::2]


def expanded_batch(device, dtype, n, e=E):
    """One batch entry broadcast to B (stride 0): its gradient sums over the batch."""
    return leaf(torch.randn(1, H, n, e, device=device, dtype=dtype)).expand(B, H, n, e)


def expanded_heads(device, dtype, n, e=E):
    """One head broadcast to H (stride 0), as multi-query attention by expand."""
    return leaf(torch.randn(B, 1, n, e, device=device, dtype=dtype)).expand(B, H, n, e)


PER_TENSOR = {
    "projection-transposed": from_projection,
    "sequence-first": sequence_first,
    "head-dim-strided": head_dim_strided,
    "head-dim-major": head_dim_major,
    "storage-offset": storage_offset,
    "batch-and-heads-strided": batch_strided,
    "expanded-batch": expanded_batch,
    "expanded-heads": expanded_heads,
}

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("layout", list(PER_TENSOR))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_query_key_value_layouts(device, dtype, layout):
    """q, k and v each in the layout (v with its own head dim), causal. (A layout is blind
    to the element type: under the interpreter fp32 and bf16 show it, a GPU runs fp16 too.)"""
    skip_unless_runnable(device, "triton")
    if device == "cpu" and dtype == torch.float16:
        pytest.skip("fp16 under the interpreter: fp32 and bf16 run these layouts")
    make = PER_TENSOR[layout]
    q, k, v = make(device, dtype, L), make(device, dtype, S), make(device, dtype, S, EV)
    check_attention("triton", q, k, v, is_causal=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_packed_projection(device, dtype):
    skip_unless_runnable(device, "triton")
    q, k, v = packed_projection(device, dtype)
    check_attention("triton", q, k, v, is_causal=True)


@pytest.mark.parametrize("device", DEVICES)
def test_each_operand_in_another_layout(device):
    """q, k and v in three different layouts at once, with a bool mask."""
    skip_unless_runnable(device, "triton")
    q = sequence_first(device, torch.float16, L)
    k = head_dim_major(device, torch.float16, S)
    v = storage_offset(device, torch.float16, S, EV)
    mask = torch.rand(L, S, device=device) > 0.3
    check_attention("triton", q, k, v, attn_mask=mask)


@pytest.mark.parametrize("device", DEVICES)
def test_grouped_query_attention_from_projections(device):
    """GQA with key/value heads from their own transposed projection."""
    skip_unless_runnable(device, "triton")
    q = from_projection(device, torch.float16, L, heads=6)
    k, v = from_projection(device, torch.float16, S, heads=2), from_projection(device, torch.float16, S, EV, heads=2)
    check_attention("triton", q, k, v, is_causal=True, enable_gqa=True)


def keep(*shape, device, key_dim=-1):
    """A random bool mask that keeps key 0 (along key_dim) of every row: no row is left
    empty, so that every gradient has an error to measure."""
    mask = torch.rand(*shape, device=device) > 0.3
    mask.select(key_dim, 0).fill_(True)
    return mask


def window(mask, rows_before, cols_before):
    """`mask` as a view into a larger random mask, rows_before rows and cols_before
    columns in: a storage offset, and rows longer than the mask's."""
    rows, cols = mask.shape
    larger = torch.rand(rows + rows_before, cols + cols_before, device=mask.device) > 0.5
    larger[rows_before:, cols_before:] = mask
    return larger[rows_before:, cols_before:]


def bool_masks(device):
    return {
        # Stored [S, L]: consecutive keys of a query are L apart.
        "transposed": keep(S, L, device=device, key_dim=0).t(),
        "expanded-batch-heads": keep(L, S, device=device).expand(B, H, L, S),
        "expanded-queries": keep(1, S, device=device).expand(L, S),
        # A window 3 rows and 5 columns into a larger mask.
        "storage-offset": window(keep(L, S, device=device), 3, 5),
        "keys-strided": keep(B, 1, L, 2 * S, device=device)[..., ::2],
    }


@pytest.mark.parametrize("mask_layout", ["transposed", "expanded-batch-heads", "expanded-queries", "storage-offset",
                                         "keys-strided"])
@pytest.mark.parametrize("device", DEVICES)
def test_bool_mask_layouts(device, mask_layout):
    skip_unless_runnable(device, "triton")
    q, k, v = (leaf(torch.randn(B, H, n, E, device=device, dtype=torch.float16)) for n in (L, S, S))
    check_attention("triton", q, k, v, attn_mask=bool_masks(device)[mask_layout])


def float_masks(device, dtype):
    """Float masks that require grad, each a view: the gradient reaches the leaf through
    the view (an expanded one sums it)."""
    randn = lambda *shape: leaf(torch.randn(*shape, device=device, dtype=dtype))
    return {
        "transposed": lambda: randn(S, L).t(),
        "expanded-batch-heads": lambda: randn(L, S).expand(B, H, L, S),
        "expanded-queries": lambda: randn(S).expand(L, S),
        "storage-offset": lambda: randn(L + 3, S + 5)[3:, 5:],
        "keys-strided": lambda: randn(B, 1, L, 2 * S)[..., ::2],
        "heads-major": lambda: randn(H, B, L, S).transpose(0, 1),
    }


@pytest.mark.parametrize("mask_layout", ["transposed", "expanded-batch-heads", "expanded-queries", "storage-offset",
                                         "keys-strided", "heads-major"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_float_mask_layouts_with_gradient(device, dtype, mask_layout):
    skip_unless_runnable(device, "triton")
    q, k, v = (leaf(torch.randn(B, H, n, E, device=device, dtype=dtype)) for n in (L, S, S))
    check_attention("triton", q, k, v, attn_mask=float_masks(device, dtype)[mask_layout](), is_causal=True)


def grad_outs(device, dtype):
    return {
        # What autograd hands over for out.sum(): ones, every stride 0.
        "ones-expanded": lambda: torch.ones((), device=device, dtype=dtype).expand(B, H, L, EV),
        "expanded-queries": lambda: torch.randn(B, H, 1, EV, device=device, dtype=dtype).expand(B, H, L, EV),
        "projection-transposed": lambda: torch.randn(B, L, H, EV, device=device, dtype=dtype).transpose(1, 2),
        "storage-offset": lambda: torch.randn(B, H, L + 1, EV + 3, device=device, dtype=dtype)[:, :, 1:, 3:],
    }


@pytest.mark.parametrize("grad_layout", ["ones-expanded", "expanded-queries", "projection-transposed",
                                         "storage-offset"])
@pytest.mark.parametrize("mask_kind", ["none", "float"])
@pytest.mark.parametrize("device", DEVICES)
def test_incoming_gradient_layouts(device, mask_kind, grad_layout):
    """The output's gradient in the layouts autograd passes (the float mask takes the
    path that recomputes delta from the probabilities)."""
    skip_unless_runnable(device, "triton")
    dtype = torch.float16
    q, k = (leaf(torch.randn(B, H, n, E, device=device, dtype=dtype)) for n in (L, S))
    v = leaf(torch.randn(B, H, S, EV, device=device, dtype=dtype))
    mask = leaf(torch.randn(1, H, L, S, device=device, dtype=dtype)) if mask_kind == "float" else None
    grad_out = grad_outs(device, dtype)[grad_layout]()
    check_attention("triton", q, k, v, attn_mask=mask, grad_out=grad_out)


@pytest.mark.parametrize("device", DEVICES)
def test_three_dim_inputs_sequence_first(device):
    """[B, L, E] operands (no head dim) made from sequence-first [L, B, E] tensors."""
    skip_unless_runnable(device, "triton")
    q, k, v = (leaf(torch.randn(n, B, e, device=device)).transpose(0, 1) for n, e in ((L, E), (S, E), (S, EV)))
    check_attention("triton", q, k, v, is_causal=True)
