"""How the Triton kernels of this process run: compiled for a GPU, or interpreted on the CPU."""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator, Optional

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

# `triton.jit` reads TRITON_INTERPRET when a kernel is decorated, so the kernels of this
# process are interpreted exactly when the knob was on as this package was imported.
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)
_INTERPRETED_IN_KERNEL = tl.constexpr(INTERPRETED)


def ceil_div(a: int, b: int) -> int:
    """triton.cdiv for host code: that one is a constexpr function, whose call from Python
    costs microseconds (argument unwrapping), and launchers call it several times a launch."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """triton.next_power_of_2 for host code (same values, 0 -> 0), without its per-call cost."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


@triton.jit
def cast_rounded(x, dtype: tl.constexpr):
    """x (fp32) cast to `dtype`, rounding to nearest even as the GPU's conversion does.

    The interpreter (triton 3.6) truncates fp32 -> bf16 instead, which would double every
    bf16 rounding error in CI; there the rounding is done on the bits first, leaving a
    value that truncation converts exactly. Elsewhere this is x.to(dtype).
    """
    if _INTERPRETED_IN_KERNEL and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
        x = tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
    return x.to(dtype)


@triton.jit
def _loop_probe_kernel(out_ptr, n, BLOCK: tl.constexpr):
    total = tl.zeros([BLOCK], tl.int32)
    for _ in range(0, n, BLOCK):
        total += 1
    tl.store(out_ptr + tl.arange(0, BLOCK), total)


@triton.jit
def exp_accurate(x):
    """e**x to about one ulp in fp32, as CUDA's expf (and so torch's exp) computes it.

    tl.exp compiles to ex2.approx(x * log2(e)), whose rounded product loses |x| * 2**-24
    of the exponent: invisible in fp16/bf16 results, several ulps in fp32 ones once |x|
    reaches a few units. On a GPU this is libdevice's exp; the interpreter has no
    libdevice, and there tl.exp is NumPy's exp, itself accurate.
    """
    if _INTERPRETED_IN_KERNEL:
        return tl.exp(x)
    return libdevice.exp(x)


@triton.jit
def sigmoid_accurate(x):
    """1 / (1 + e**-x) with the accurate exp (tl.sigmoid uses the approximate one)."""
    return 1.0 / (1.0 + exp_accurate(-x))


@triton.jit
def tanh_accurate(x):
    """tanh(x) to about one ulp in fp32: libdevice's tanh on a GPU. The interpreter has no
    libdevice; there it is (1 - e) / (1 + e), e = e**-2|x|, in fp64, where the difference
    loses nothing fp32 keeps (and x - x**3/3 below 1e-4, where even fp64 would)."""
    if _INTERPRETED_IN_KERNEL:
        x64 = x.to(tl.float64)
        magnitude = tl.abs(x64)
        e = tl.exp(-2.0 * magnitude)
        t = tl.where(magnitude < 1e-4, magnitude * (1.0 - x64 * x64 / 3.0), (1.0 - e) / (1.0 + e))
        return tl.where(x64 < 0, -t, t).to(x.dtype)
    return libdevice.tanh(x)


@triton.jit
def dot(a, b):
    """a @ b accumulated in fp32, exact to the operands' precision.

    fp32 operands get true fp32 products (tl.dot would use tf32, 10-bit mantissas).
    bf16 operands are upcast to fp32 under the interpreter, whose bf16 tl.dot returns
    garbage (triton 3.6); on a GPU they stay bf16 tensor-core dots.
    """
    if _INTERPRETED_IN_KERNEL and a.dtype == tl.bfloat16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    if a.dtype == tl.float32:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


def _probe_interpreter() -> Optional[str]:
    """Why the interpreter cannot run seqops' kernels here, or None.

    The Triton 3.6 interpreter cannot take a loop bound that is a kernel argument under
    NumPy >= 2.4 (triton-lang/triton#9171); running a loop tells whichever pair is installed.
    """
    out = torch.zeros(16, dtype=torch.int32)
    try:
        _loop_probe_kernel[(1,)](out, 40, BLOCK=16)
    except Exception as error:  # the interpreter wraps what it hit in InterpreterError
        import numpy

        return (
            f"the Triton {triton.__version__} interpreter fails under NumPy {numpy.__version__} "
            f"({error}); install numpy<2.4 (triton-lang/triton#9171)"
        )
    if out[0].item() != 3:
        return f"the Triton interpreter ran a loop probe wrongly ({out[0].item()} trips instead of 3)"
    return None


@contextlib.contextmanager
def _outside_the_caller() -> Iterator[None]:
    """A context free of what the first kernel call may happen inside: torch.func
    transforms (which wrap new tensors), dispatch modes such as FakeTensorMode (which make
    them storage-less) and autograd recording."""
    from torch.utils._python_dispatch import _disable_current_modes

    with torch._C._DisableFuncTorch(), _disable_current_modes(), torch.no_grad():
        yield


_probe_result: list[Optional[str]] = []


def interpreter_problem() -> Optional[str]:
    """Why the kernels of this process cannot run, or None; probed once, on first need,
    outside the caller's context, so that where the first call happens cannot poison
    every later one."""
    if not INTERPRETED:
        return None
    if not _probe_result:
        with _outside_the_caller():
            _probe_result.append(_probe_interpreter())
    return _probe_result[0]


# SEQOPS_TENSOR_DESCRIPTORS=0 (read at import) keeps every launch on pointer loads: a switch
# to tell, on a GPU, whether a problem comes from the descriptor (TMA) path.
TENSOR_DESCRIPTORS_ALLOWED: bool = os.environ.get("SEQOPS_TENSOR_DESCRIPTORS", "1") != "0"


# Multiprocessors assumed where no GPU can be asked (the interpreter, recorded launches):
# an H100's or H200's, so that a launch is planned there as on one.
RECORDED_MULTIPROCESSORS = 132


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def multiprocessor_count(device: torch.device) -> int:
    """The multiprocessors of a CUDA device; RECORDED_MULTIPROCESSORS elsewhere."""
    if device.type != "cuda":
        return RECORDED_MULTIPROCESSORS
    return _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _has_tma(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def tensor_descriptors_run(device: torch.device) -> bool:
    """Whether a kernel launched on `device` can read through tensor descriptors: on a GPU
    with TMA (sm_90 and later), and under the interpreter, which runs them as loads (so
    that the tests run the same kernel code); never with SEQOPS_TENSOR_DESCRIPTORS=0."""
    if not TENSOR_DESCRIPTORS_ALLOWED:
        return False
    if INTERPRETED:
        return True
    if device.type != "cuda":
        return False
    return _has_tma(device.index if device.index is not None else torch.cuda.current_device())


def _torch_scratch(size: int, alignment: int, stream: Optional[int]) -> torch.Tensor:
    # torch's caching allocator aligns every block to 512 bytes, more than Triton asks for.
    return torch.empty(size, dtype=torch.int8, device="cuda")


def ensure_scratch_allocator() -> None:
    """A kernel that builds tensor descriptors on the device writes them to global scratch
    that Triton asks its allocator for at launch. Give Triton torch's caching allocator,
    unless one is set already in this context (the caller's own stays)."""
    if INTERPRETED:
        return
    from triton.runtime import _allocation

    if _allocation._allocator.get() is _allocation._NULL_ALLOCATOR:
        triton.set_allocator(_torch_scratch)


def fp32_products_in_tf32(dtype: torch.dtype) -> bool:
    """Whether a launch's fp32 products may run on tensor cores as TF32: only when the
    operands are fp32 and torch's own setting for fp32 matrix products allows it
    (`torch.set_float32_matmul_precision("high")` or `torch.backends.cuda.matmul.allow_tf32
    = True`; the default, "highest", keeps them exact). Read at each launch, so a kernel's
    products follow the same rule as the torch GEMMs around it (a layer's input projection,
    the weight gradients). The interpreter honours it too, rounding as a GPU would
    (dot_tf32_allowed), so that CI tests that path."""
    return dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest"


@triton.jit
def round_to_tf32(x):
    """fp32 x rounded to TF32 (10 mantissa bits), to nearest with ties away from zero, as
    the GPU's cvt.rna.tf32.f32 does; NaN stays NaN. Exact on the interpreter too."""
    bits = x.to(tl.uint32, bitcast=True)
    rounded = ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return tl.where(x != x, x, rounded)


@triton.jit
def dot_tf32_allowed(a, b, TF32: tl.constexpr):
    """dot(a, b); with TF32 (fp32_products_in_tf32), fp32 operands are first rounded to TF32
    and multiplied on tensor cores. The rounding is ours: Triton's "tf32" dot hands the
    fp32 bits to the MMA, which drops the low 13 (truncation, about twice the error of the
    rounding cuBLAS does for torch's TF32 GEMMs; triton-lang/triton#4574). Under the
    interpreter the dot of the rounded operands is exact, accumulated in fp32."""
    if TF32 and a.dtype == tl.float32:
        return tl.dot(round_to_tf32(a), round_to_tf32(b), input_precision="tf32")
    return dot(a, b)


@triton.jit
def arrive_and_wait(counter_ptr, target, max_spins):
    """Count this program in at `counter_ptr` and wait, up to max_spins polls, until the
    count reaches `target`; returns the count last seen (below target: the wait gave up,
    as it must where the programs awaited are not all resident, or under the interpreter,
    which runs programs one after another). The CTA barrier orders this program's stores
    before its release add; the acquire reads, and the barrier after them, order the
    stores of the programs counted before whatever this program loads next (loads of
    what they wrote go through L2, ".cg": L1 is not coherent across SMs)."""
    tl.debug_barrier()
    arrived = tl.atomic_add(counter_ptr, 1, sem="release") + 1
    spins = 0
    while (arrived < target) & (spins < max_spins):
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire")
        spins += 1
    tl.debug_barrier()
    return arrived
