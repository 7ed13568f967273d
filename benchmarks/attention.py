"""Attention benchmark: seqops (each fused backend) vs torch's scaled_dot_product_attention
(each of its backends, and its own choice) vs the naive reference.

Throughput: B*L = 16k tokens, hidden size 2048 (heads = 2048 / head dim), head dims 64
and 128, causal or not, L from 512 to 16k, fp16 and bf16; forward and forward+backward,
as TFLOP/s with forward FLOPs 4*B*H*L*S*D (halved when causal) and backward 2.5x forward.
Memory: B = 1, 16 heads of 128, L from 512 to 32k, forward peak extra memory, whose log
against log(L) gives the exponent (about 2 for the naive form, 1 for a fused kernel).
Decode (KV-cache generation): one new query a head against a cache of 1k to 64k keys, B = 8,
32 query heads sharing 8 KV heads of 128 (GQA), forward only, as GB/s of the cache read once
(the least traffic; its FLOPs are too few to bound it).
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable, Optional

import torch
import torch.nn.functional as F

import seqops
from seqops import dispatch
from seqops.ops.attention import reference

from .suite import Case, Provider

TOKENS = 16384
HIDDEN = 2048
GPU_LENGTHS = [512, 1024, 2048, 4096, 8192, 16384]
MEMORY_LENGTHS = [512, 1024, 2048, 4096, 8192, 16384, 32768]
CPU_LENGTHS = [128, 256, 512]
CPU_TOKENS, CPU_HIDDEN = 1024, 256
FUSED_BACKENDS = ("triton", "cuda")

BASELINE = "torch.sdpa"
SWEEP_NAME = "sequence length"
MEMORY_PANEL = "memory: forward, bf16, B=1, 16 heads of 128"
DECODE_LENGTHS = [1024, 4096, 16384, 65536]
DECODE_BATCH, DECODE_QUERY_HEADS, DECODE_KV_HEADS, DECODE_HEAD_DIM = 8, 32, 8, 128
DECODE_PANEL = (f"decode: forward, bf16, B={DECODE_BATCH}, 1 query, {DECODE_QUERY_HEADS} query heads on "
                f"{DECODE_KV_HEADS} KV heads of {DECODE_HEAD_DIM}")


def _flops(B: int, H: int, L: int, D: int, causal: bool, direction: str) -> int:
    forward = 4 * B * H * L * L * D // (2 if causal else 1)
    return int(forward * (3.5 if direction == "forward+backward" else 1))


def cases(device: torch.device, quick: bool) -> list[Case]:
    on_gpu = device.type == "cuda"
    lengths = GPU_LENGTHS if on_gpu else CPU_LENGTHS
    tokens, hidden = (TOKENS, HIDDEN) if on_gpu else (CPU_TOKENS, CPU_HIDDEN)
    dtypes = [torch.bfloat16, torch.float16] if on_gpu else [torch.float32]
    head_dims = [64, 128] if on_gpu else [64]
    if quick:
        lengths, dtypes, head_dims = lengths[::2], dtypes[:1], head_dims[-1:]
    out = []
    for dtype in dtypes:
        for head_dim in head_dims:
            for causal in (False, True):
                for direction in ("forward", "forward+backward"):
                    for L in lengths:
                        B, H = max(1, tokens // L), hidden // head_dim
                        panel = (f"{direction}, {str(dtype).removeprefix('torch.')}, head dim {head_dim}"
                                 + (", causal" if causal else ""))
                        out.append(Case("attention", direction, dtype, (B, H, L, head_dim), L,
                                        flops=_flops(B, H, L, head_dim, causal, direction), panel=panel,
                                        params={"causal": causal}))
    if on_gpu:
        for L in (MEMORY_LENGTHS[::2] if quick else MEMORY_LENGTHS):
            out.append(Case("attention", "forward", torch.bfloat16, (1, 16, L, 128), L,
                            flops=_flops(1, 16, L, 128, False, "forward"), panel=MEMORY_PANEL, params={"causal": False}))
        out += [_decode_case(S) for S in (DECODE_LENGTHS[::2] if quick else DECODE_LENGTHS)]
    return out


def _decode_case(kv_length: int) -> Case:
    """One decode step: a query a head against `kv_length` cached keys and values."""
    B, Hq, Hkv, D = DECODE_BATCH, DECODE_QUERY_HEADS, DECODE_KV_HEADS, DECODE_HEAD_DIM
    cache_bytes = 2 * B * Hkv * kv_length * D * torch.bfloat16.itemsize
    # No FLOPs: the report would plot TFLOP/s, where GB/s against the copy ceiling is the measure.
    return Case("attention", "forward", torch.bfloat16, (B, Hq, 1, D), kv_length, bytes_moved=cache_bytes,
                panel=DECODE_PANEL,
                params={"causal": False, "kv_length": kv_length, "kv_heads": Hkv})


def _is_decode(case: Case) -> bool:
    return "kv_length" in case.params


def _operand_shapes(case: Case) -> tuple[tuple, tuple]:
    """The shapes of q and of k/v: the same but for a decode case's cache length and heads."""
    B, H, L, D = case.shape
    return (B, H, L, D), (B, case.params.get("kv_heads", H), case.params.get("kv_length", L), D)


def _timed(case: Case, device: torch.device, attention: Callable) -> Callable[[], object]:
    """attention(q, k, v, causal, enable_gqa) on the case's operands, with its gradients
    for a forward+backward case."""
    q_shape, kv_shape = _operand_shapes(case)
    causal, gqa = case.params["causal"], q_shape[1] != kv_shape[1]
    grad = case.direction == "forward+backward"
    q, k, v = (torch.randn(shape, device=device, dtype=case.dtype, requires_grad=grad)
               for shape in (q_shape, kv_shape, kv_shape))
    if not grad:
        return lambda: attention(q, k, v, causal, gqa)
    dout = torch.randn(q_shape, device=device, dtype=case.dtype)
    return lambda: torch.autograd.grad(attention(q, k, v, causal, gqa), (q, k, v), dout)


def _seqops_provider(backend: str, variant: Optional[str] = None, label: Optional[str] = None,
                     decode_only: bool = False, backward_only: bool = False) -> Provider:
    """seqops on `backend` (its `variant` forced if given); decode_only: the decode cases
    alone (a variant that the backend's own choice runs everywhere else); backward_only:
    the forward+backward cases alone (a variant whose forward is the backend's own)."""
    def attention(q, k, v, causal, gqa):
        with seqops.backend(backend, variant=variant):
            return seqops.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        if decode_only and not _is_decode(case):
            return f"decode cases only: seqops[{backend}] runs the same kernel here"
        if backward_only and case.direction != "forward+backward":
            return f"the forward is seqops[{backend}]'s"
        (_, Hq, L, D), (_, Hkv, _, _) = _operand_shapes(case)
        # Small stand-ins with the case's head dim, dtype, and (decode) query count and heads.
        q = torch.empty(1, Hq, L, D, device=device, dtype=case.dtype) if _is_decode(case) else \
            torch.empty(1, 1, 1, D, device=device, dtype=case.dtype)
        kv = torch.empty(1, Hkv if _is_decode(case) else 1, 1, D, device=device, dtype=case.dtype)
        reason = dispatch.backend_reason("attention", backend, device, q, kv, kv, None, 0.0,
                                         case.params["causal"], 1.0, q.shape[1] != kv.shape[1])
        if reason is None and device.type == "cpu":
            reason = "a GPU kernel: its CPU timings (in Triton's interpreter) mean nothing"
        return reason

    return Provider(f"seqops[{label or backend}]", lambda case, device: _timed(case, device, attention), unavailable)


def _triton_schedule_provider(schedule: str) -> Provider:
    """seqops' Triton backend with its backward held on one schedule ("fused": five
    products a tile, dQ added in turns between programs; "split": a dK/dV and a dQ
    kernel, seven), where seqops[triton] times both and keeps the faster
    (kernels/attention/backward_schedule.py): forward+backward cases only, the forward
    being the same."""
    triton_provider = _seqops_provider("triton")

    def prepare(case: Case, device: torch.device) -> Callable[[], object]:
        from seqops.kernels.attention import backward_schedule

        run = triton_provider.prepare(case, device)

        def on_schedule():
            forced, backward_schedule.FORCED = backward_schedule.FORCED, schedule
            try:
                return run()
            finally:
                backward_schedule.FORCED = forced

        return on_schedule

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        if case.direction != "forward+backward":
            return "the forward is seqops[triton]'s"
        return triton_provider.unavailable(case, device)

    return Provider(f"seqops[triton {schedule} backward]", prepare, unavailable)


def _torch_provider(name: str, sdpa_backend) -> Provider:
    def attention(q, k, v, causal, gqa):
        context = torch.nn.attention.sdpa_kernel(sdpa_backend) if sdpa_backend is not None else contextlib.nullcontext()
        with context:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        if sdpa_backend is not None and device.type != "cuda":
            return "torch's fused SDPA backends are measured on a GPU"
        return None

    return Provider(name, lambda case, device: _timed(case, device, attention), unavailable)


def _flash_attn_provider() -> Provider:
    """flash-attn's flash_attn_func, where flash-attn is installed: a peer. It takes
    [B, L, H, D] and GQA's fewer K/V heads as they are; the transposes to and from it are views."""
    def attention(q, k, v, causal, gqa):
        from flash_attn import flash_attn_func

        return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal).transpose(1, 2)

    def unavailable(case: Case, device: torch.device) -> Optional[str]:
        if device.type != "cuda":
            return "a GPU kernel"
        if case.dtype not in (torch.float16, torch.bfloat16):
            return "flash-attn takes float16 and bfloat16"
        return None if importlib.util.find_spec("flash_attn") else "flash-attn is not installed"

    return Provider("flash_attn", lambda case, device: _timed(case, device, attention), unavailable)


def providers(device: torch.device) -> list[Provider]:
    backends = torch.nn.attention.SDPBackend
    # seqops[cuda] runs the device's best forward (wgmma and TMA on an H100/H200);
    # seqops[cuda sm80] holds it on the mma.sync kernel other GPUs run (the same backward);
    # seqops[cuda ordered_dq] runs the five-product backward (dQ added in key-block turns).
    # seqops[triton] runs its decode variant on the decode cases; seqops[triton fused] holds
    # those on the fused kernel, to show what the split over keys gains.
    return [_seqops_provider(name) for name in FUSED_BACKENDS] + [
        _seqops_provider("cuda", "sm80", "cuda sm80"),
        _seqops_provider("cuda", "ordered_dq", "cuda ordered_dq", backward_only=True),
        _seqops_provider("triton", "fused", "triton fused", decode_only=True),
        *(_triton_schedule_provider(schedule) for schedule in ("fused", "split")),
        _torch_provider("torch.sdpa", None),
        _torch_provider("torch.sdpa[flash]", backends.FLASH_ATTENTION),
        _torch_provider("torch.sdpa[efficient]", backends.EFFICIENT_ATTENTION),
        _torch_provider("torch.sdpa[cudnn]", backends.CUDNN_ATTENTION),
        _torch_provider("torch.sdpa[math]", backends.MATH),
        _flash_attn_provider(),
        Provider("reference", lambda case, device: _timed(
            case, device, lambda q, k, v, causal, gqa: reference.scaled_dot_product_attention(
                q, k, v, is_causal=causal, enable_gqa=gqa))),
    ]
