"""The CUDA C++ attention, forward and backward (csrc/attention/), behind the fused
contract of seqops/ops/attention/contract.py: tensors in, plain values to the extension,
tensors out.

The kernels read q [B, Hq, L, E], k and v [B, Hkv, S, E] in place with the strides they
come with (GQA by index: query head h reads key/value head h // (Hq // Hkv)), provided the
head dim has stride 1 and every row starts 16 bytes aligned (their 16-byte cp.async
loads); a tensor that is not so is copied once, contiguous. They write out [B, Hq, L, E]
in q's dtype and lse [B, Hq, L] in fp32, both new and contiguous; the backward writes
dq, dk, dv new and contiguous (dk, dv summed over each GQA group in the kernel). The
backend's "ordered_dq" variant runs the five-product backward, whose dK/dV kernel adds dQ
into an fp32 workspace in key-block turns (attention_backward_ordered_dq).

What they do not do yet is refused by `forward_reason` (the Impl's supports, which also
decides for the backward of a call it took), so that `seqops.backend("cuda")` raises
BackendUnavailable naming it and `auto` never gets here for it: float32, head dims other
than 64, 128 and 256, and Ev != E. Dropout draws
the Triton backend's mask for the same seed (csrc/attention/dropout.h). A float mask that requires grad gets it: the dQ kernel writes
the score gradient [B, Hq, L, S] in fp32, summed here over the mask's broadcast dims (an
L x S buffer per (batch, head), as torch's own kernels take for a bias gradient). Masks are read in
place, broadcast by their strides: bool, or additive in float32, float16 or bfloat16 (a
float64 one is rounded to float32 once).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch

from seqops.backends.cuda_values import DTYPE_CODES, dtype_code, launch_place
from seqops.ops.attention import contract

DTYPES = (torch.float16, torch.bfloat16)
# The head dims csrc/attention/generate_instances.py compiles (one instance per head dim
# and dtype, forward and backward); a build that omits one refuses its calls by name.
HEAD_DIMS = (64, 128, 256)
BACKWARD_HEAD_DIMS = HEAD_DIMS
MAX_LENGTH = 2**30  # the kernels count positions in int
MAX_GRID = 65535    # batch and query heads are grid dims z and y
ALIGN_BYTES = 16
# Split-KV for decode steps (csrc/attention/params.h): a call of at most DECODE_MAX_QUERIES
# queries whose batch x heads leave processors idle splits each (batch, head)'s key tiles
# (FORWARD_KEY_TILE keys, the forward's kBlockN) over several CTAs, each keeping at least
# MIN_TILES_PER_SPLIT of them, at most MAX_SPLITS (the launcher's limit is 256).
DECODE_MAX_QUERIES = 16
FORWARD_KEY_TILE = 64
MIN_TILES_PER_SPLIT = 4
MAX_SPLITS = 64
# Ends every refusal of a feature still to be written (not a limit), so that tests run over
# every backend skip it on a GPU instead of failing (tests/conftest.py, CUDA_LACKS).
NOT_YET = "not in the CUDA backend yet"


def forward_reason(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                   causal_offset=0) -> Optional[str]:
    """Why the CUDA attention cannot take this call (the torch-shaped arguments the op's
    api passes every supports), or None."""
    reason = contract.fused_reason(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                                   causal_offset)
    if reason is not None:
        return reason
    if query.dtype not in DTYPES:
        return f"the CUDA attention takes float16 and bfloat16, got {query.dtype}: {NOT_YET}"
    E, Ev = query.shape[-1], value.shape[-1]
    if Ev != E:
        return f"the CUDA attention takes value head dim equal to the query's, got E={E} and Ev={Ev}: {NOT_YET}"
    if E not in HEAD_DIMS:
        return f"the CUDA attention takes head dims {', '.join(map(str, HEAD_DIMS))}, got {E}: {NOT_YET}"
    if E not in BACKWARD_HEAD_DIMS and _needs_gradient(query, key, value, attn_mask):
        return (f"the CUDA attention's backward takes head dims {' and '.join(map(str, BACKWARD_HEAD_DIMS))}, "
                f"and this call at head dim {E} needs gradients (its forward runs under torch.no_grad): {NOT_YET}")
    if max(query.shape[-2], key.shape[-2]) >= MAX_LENGTH:
        return f"the CUDA attention takes lengths below 2**30, got L={query.shape[-2]} and S={key.shape[-2]}"
    lead = contract.scores_shape(query, key, value, enable_gqa)[:-2]  # as the op flattens it: [batch, heads]
    heads = lead[-1] if lead else 1
    batch = 1
    for size in lead[:-1]:
        batch *= size
    if heads > MAX_GRID or batch > MAX_GRID:
        return f"the CUDA attention takes batch and heads up to {MAX_GRID} each, got {batch} and {heads}"
    return None


def _needs_gradient(*tensors) -> bool:
    """Whether autograd will ask this call for a backward: grad mode on and an input that
    requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def decode_splits(batch_heads: int, len_q: int, len_kv: int, processors: int) -> int:
    """How many CTAs share each (batch, head)'s keys: 1 unless this is a decode step (at
    most DECODE_MAX_QUERIES queries, one query block) with fewer (batch, head) pairs than
    processors; then enough to give every processor about two, each split keeping at least
    MIN_TILES_PER_SPLIT key tiles."""
    if len_q > DECODE_MAX_QUERIES or batch_heads >= processors:
        return 1
    key_tiles = -(-len_kv // FORWARD_KEY_TILE)
    return max(1, min(MAX_SPLITS, -(-2 * processors // batch_heads), key_tiles // MIN_TILES_PER_SPLIT))


@functools.lru_cache(maxsize=None)
def _processors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


class LaunchValues(dict):
    """The extension's arguments (plain values: pointers as ints), holding the tensors they
    point into: a copy made for the kernels must outlive the launch."""

    def __init__(self, values: dict, operands: list):
        super().__init__(values)
        self.operands = operands


def _readable(t: torch.Tensor) -> torch.Tensor:
    """t when the kernels can read it in place: head dim stride 1, the data and every
    batch, head and row stride 16-byte aligned. Else one contiguous copy (which is)."""
    element = t.element_size()
    aligned = t.data_ptr() % ALIGN_BYTES == 0 and all(
        size == 1 or (stride * element) % ALIGN_BYTES == 0 for size, stride in zip(t.shape[:3], t.stride()[:3]))
    return t if t.stride(-1) == 1 and aligned else t.contiguous()


MASK_NONE, MASK_BOOL, MASK_ADDITIVE = 0, 1, 2  # csrc/attention/params.h's MaskKind


def mask_values(mask: Optional[torch.Tensor], shape: tuple) -> tuple[dict, list]:
    """The extension's mask arguments for a 4-D mask broadcastable to `shape` [B, Hq, L, S]
    (its dims full or 1): read in place, broadcast dims at stride 0; and the tensors they
    point into (a float64 mask's float32 copy)."""
    if mask is None:
        return {"mask": 0, "mask_kind": MASK_NONE, "mask_dtype": 0, "mask_strides": (0, 0, 0, 0)}, []
    if mask.dtype == torch.bool:
        kind, dtype = MASK_BOOL, 0
    else:
        if mask.dtype not in DTYPES + (torch.float32,):
            mask = mask.float()
        kind, dtype = MASK_ADDITIVE, dtype_code(mask)
    strides = tuple(0 if size == 1 else stride for size, stride in zip(mask.shape, mask.stride()))
    return {"mask": mask.data_ptr(), "mask_kind": kind, "mask_dtype": dtype, "mask_strides": strides}, [mask]


def _head_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, head, row) strides; 0 for a dim of size 1, whose stride nothing reads."""
    return tuple(0 if size == 1 else stride for size, stride in zip(t.shape[:3], t.stride()[:3]))


def forward_values(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                   is_causal: bool, causal_offset: int, scale: float, mask: Optional[torch.Tensor] = None,
                   splits: int = 1, dropout_p: float = 0.0, seed: int = 0) -> LaunchValues:
    """The extension's attention_forward arguments (all but device and stream) for the
    fused contract's 4-D q [B, Hq, L, E], k, v [B, Hkv, S, E] (and mask) into
    out [B, Hq, L, E] and lse [B, Hq, L]; with splits > 1, the fp32 partials' workspace."""
    q, k, v = (_readable(t) for t in (q, k, v))
    B, Hq, L, E = q.shape
    masks, mask_operands = mask_values(mask, (B, Hq, L, k.shape[2]))
    partials = []
    if splits > 1:
        partials = [torch.empty((splits, B, Hq, L, E), dtype=torch.float32, device=q.device),
                    torch.empty((splits, B, Hq, L), dtype=torch.float32, device=q.device)]
    split_values = {"splits": splits, "partial_out": partials[0].data_ptr() if partials else 0,
                    "partial_lse": partials[1].data_ptr() if partials else 0}
    return LaunchValues({
        **masks, **split_values, "q": q.data_ptr(), "q_strides": _head_strides(q), "k": k.data_ptr(), "k_strides": _head_strides(k),
        "v": v.data_ptr(), "v_strides": _head_strides(v), "out": out.data_ptr(), "out_strides": _head_strides(out),
        "lse": lse.data_ptr(), "lse_strides": (lse.stride(0), lse.stride(1)), "dtype": dtype_code(q),
        "batch": B, "heads_q": Hq, "heads_kv": k.shape[1], "len_q": L, "len_kv": k.shape[2], "head_dim": E,
        "scale": float(scale), "causal": bool(is_causal), "causal_offset": int(causal_offset),
        "dropout_p": float(dropout_p), "seed": int(seed),
    }, [q, k, v, out, lse, *mask_operands, *partials])


def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                      dropout_p: float, is_causal: bool, causal_offset: int, scale: float,
                      seed: int, arch_limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused contract's forward: (out [B, Hq, L, E] in q's dtype, lse [B, Hq, L] fp32,
    natural log, -inf for a row that sees no key); dropout keeps the probabilities the
    Triton backend keeps for the same seed. The extension runs the device's best kernel
    (wgmma and TMA on compute capability 9.0) unless arch_limit says otherwise (80: the
    mma.sync kernel anywhere)."""
    B, Hq, L, _ = q.shape
    out = torch.empty((B, Hq, L, v.shape[-1]), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, Hq, L), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    if k.shape[2] == 0:  # no key at all: every row sees none (the kernels take no empty k)
        return out.zero_(), lse.fill_(float("-inf"))
    # Imported here: seqops.backends.cuda imports this module for forward_reason, and keeps
    # the extension's builder off `import seqops`.
    from seqops import _ext

    splits = decode_splits(B * Hq, L, k.shape[2], _processors(q.device.index if q.device.index is not None
                                                              else torch.cuda.current_device()))
    values = forward_values(q, k, v, out, lse, is_causal, causal_offset, scale, mask, splits, dropout_p,
                            seed)  # holds its copies
    _ext.load().attention_forward(**values, **launch_place(q.device), arch_limit=arch_limit)
    return out, lse


def attention_forward_sm80(q, k, v, mask, dropout_p, is_causal, causal_offset, scale, seed):
    """attention_forward on the sm80 (mma.sync) kernel whatever the device: the backend's
    "sm80" variant, so that a Hopper GPU tests the kernel other GPUs run."""
    return attention_forward(q, k, v, mask, dropout_p, is_causal, causal_offset, scale, seed, arch_limit=80)


def backward_values(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                    lse: torch.Tensor, delta: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor,
                    is_causal: bool, causal_offset: int, scale: float, mask: Optional[torch.Tensor] = None,
                    dropout_p: float = 0.0, seed: int = 0,
                    dscores: Optional[torch.Tensor] = None,
                    ordered_dq: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> LaunchValues:
    """The extension's attention_backward arguments (all but device and stream): the
    forward's operands read in place where the kernels can, delta an fp32 [B, Hq, L]
    contiguous workspace, dq, dk, dv new tensors in q's, k's and v's shapes. ordered_dq:
    the ordered-dQ workspaces (dq_accum, dq_turns), zero-filled; dq is then not written
    (and may be None)."""
    grad_out, q, k, v, out = (_readable(t) for t in (grad_out, q, k, v, out))
    B, Hq, L, E = q.shape
    masks, mask_operands = mask_values(mask, (B, Hq, L, k.shape[2]))
    dq_accum, dq_turns = ordered_dq if ordered_dq is not None else (None, None)
    return LaunchValues({**masks,
        "dq_accum": 0 if dq_accum is None else dq_accum.data_ptr(),
        "dq_turns": 0 if dq_turns is None else dq_turns.data_ptr(),
        "grad_out": grad_out.data_ptr(), "grad_out_strides": _head_strides(grad_out),
        "q": q.data_ptr(), "q_strides": _head_strides(q), "k": k.data_ptr(), "k_strides": _head_strides(k),
        "v": v.data_ptr(), "v_strides": _head_strides(v), "out": out.data_ptr(), "out_strides": _head_strides(out),
        "lse": lse.data_ptr(), "lse_strides": (lse.stride(0), lse.stride(1)), "delta": delta.data_ptr(),
        "dq": 0 if dq is None else dq.data_ptr(), "dq_strides": (0, 0, 0) if dq is None else _head_strides(dq),
        "dk": dk.data_ptr(), "dk_strides": _head_strides(dk),
        "dv": dv.data_ptr(), "dv_strides": _head_strides(dv), "dtype": dtype_code(q),
        "batch": B, "heads_q": Hq, "heads_kv": k.shape[1], "len_q": L, "len_kv": k.shape[2], "head_dim": E,
        "scale": float(scale), "causal": bool(is_causal), "causal_offset": int(causal_offset),
        "dropout_p": float(dropout_p), "seed": int(seed), "dscores": 0 if dscores is None else dscores.data_ptr(),
    }, [grad_out, q, k, v, out, lse, delta, dq, dk, dv, dq_accum, dq_turns, *mask_operands])


def attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       out: torch.Tensor, lse: torch.Tensor, mask: Optional[torch.Tensor], dropout_p: float,
                       is_causal: bool, causal_offset: int, scale: float, seed: int,
                       mask_needs_grad: bool, ordered_dq: bool = False,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The fused contract's backward: (dq, dk, dv, dmask), contiguous, in q's, k's, v's and
    (when mask_needs_grad) the mask's shapes and dtypes, through the forward's dropout draw
    (the same seed). ordered_dq: the five-product kernel, dQ added into an fp32 workspace
    in key-block order, then scaled and rounded here (else a dQ kernel of its own)."""
    B, Hq, L, E = q.shape
    S = k.shape[2]
    dscores = None
    if mask_needs_grad:  # the ordered-dQ kernel writes it transposed, [B, Hq, S, L] (params.h)
        dscores = (torch.zeros((B, Hq, S, L), dtype=torch.float32, device=q.device).transpose(2, 3) if ordered_dq
                   else torch.zeros((B, Hq, L, S), dtype=torch.float32, device=q.device))
    if B * Hq * L == 0 or S == 0:  # nothing to sum: every gradient is 0 (the kernels take no empty tensor)
        return (torch.zeros(q.shape, dtype=q.dtype, device=q.device), torch.zeros(k.shape, dtype=k.dtype, device=k.device),
                torch.zeros(v.shape, dtype=v.dtype, device=v.device), mask_gradient(dscores, mask))
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    delta = torch.empty((B, Hq, L), dtype=torch.float32, device=q.device)
    from seqops import _ext  # here, as in attention_forward

    if ordered_dq:
        workspaces = ordered_dq_workspaces(B, Hq, L, E, q.dtype, q.device)
        dq = None
    else:
        workspaces = None
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    values = backward_values(grad_out.to(q.dtype), q, k, v, out, lse, delta, dq, dk, dv, is_causal, causal_offset,
                             scale, mask, dropout_p, seed, dscores, workspaces)  # holds any copy it points into
    _ext.load().attention_backward(**values, **launch_place(q.device))
    if ordered_dq:
        # dS is the gradient of scale * q.k, which the kernel leaves out; the poison word
        # is 0.0, or NaN where a turn never came (a bug, shown rather than hidden).
        dq_accum, turns = workspaces
        dq = torch.add(turns[1:2].view(torch.float32), dq_accum, alpha=scale).to(q.dtype)
    return dq, dk, dv, mask_gradient(dscores, mask)


def attention_backward_ordered_dq(grad_out, q, k, v, out, lse, mask, dropout_p, is_causal, causal_offset, scale,
                                  seed, mask_needs_grad):
    """attention_backward on the five-product kernel: the backend's "ordered_dq" variant."""
    return attention_backward(grad_out, q, k, v, out, lse, mask, dropout_p, is_causal, causal_offset, scale, seed,
                              mask_needs_grad, ordered_dq=True)


def ordered_dq_workspaces(B: int, Hq: int, L: int, E: int, dtype: torch.dtype,
                          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ordered-dQ kernel's zero-filled workspaces (csrc/attention/params.h): dq_accum
    fp32 [B, Hq, L, E], and int32 words: the CTAs' ticket counter, the poison word (a
    float's bits), then one turn counter per (batch, head, query tile of the instance's
    dK/dV kernel, block of columns its dK/dV CTAs split the head dim into)."""
    block_m, column_split = backward_geometry(E, dtype)
    return (torch.zeros((B, Hq, L, E), dtype=torch.float32, device=device),
            torch.zeros(2 + B * Hq * -(-L // block_m) * column_split, dtype=torch.int32, device=device))


@functools.lru_cache(maxsize=None)
def backward_geometry(head_dim: int, dtype: torch.dtype) -> tuple[int, int]:
    """(queries per tile, CTAs a key block: kv_block_m, kv_column_split) of the built
    backward instance's dK/dV kernel for this head dim and dtype; a build without one has
    no launch to size (the extension then refuses the call by name), so any will do."""
    from seqops import _ext

    code = DTYPE_CODES[dtype]
    for instance in _ext.load().attention_backward_instances():
        if instance["head_dim"] == head_dim and instance["dtype"] == code:
            return instance["kv_block_m"], instance["kv_column_split"]
    return 16, 1


def mask_gradient(dscores: Optional[torch.Tensor], mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The float mask's gradient from the score gradient [B, Hq, L, S] (fp32): summed over
    the dims the 4-D mask broadcasts along, in its shape and dtype. None without one."""
    if dscores is None:
        return None
    dims = [d for d in range(4) if mask.shape[d] == 1 and dscores.shape[d] != 1]
    summed = dscores.sum(dim=dims, keepdim=True) if dims else dscores
    return summed.to(mask.dtype).reshape(mask.shape).contiguous()
