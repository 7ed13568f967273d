"""fp32 products in TF32: the recurrent Triton kernels (LSTM, GRU and RNN cells, and the
LSTM's whole-sequence kernels) follow torch's fp32 matmul precision. By default
("highest") their fp32 products are exact (every other test); with
torch.set_float32_matmul_precision("high") they round their operands to TF32 and run on
tensor cores, as torch's own GEMMs then do.

On the CPU, torch's GEMMs never use TF32, so "torch with TF32" is emulated: a dispatch mode
that rounds every fp32 operand of a matrix product to TF32 (to nearest, ties away, as
cuBLAS's conversion does) before the exact product, forward and backward. Against it:

  - the output, against the float64 reference whose products take the same rounded
    operands, within 2x torch's fp32 error there: so the kernel rounds exactly the GEMM
    operands, and rounds them as the GPU does (a kernel that kept exact products errs ~1e3x
    more here; one that truncated, ~2x more);
  - the output and every gradient, against the exact float64 reference, within 2x the
    emulated torch's error (the error rule of tests/accuracy.py).

On a GPU the same tests compare with torch itself (cuBLAS TF32) under the same setting."""
import contextlib
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import seqops
from accuracy import PooledResult, floor, relative_error
from devices import DEVICES, skip_unless_runnable
from seqops.ops.recurrent import reference

aten = torch.ops.aten


def rounded_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """t (fp32 or fp64 holding fp32 values) rounded to TF32's 10 mantissa bits, to nearest
    with ties away from zero (cvt.rna.tf32.f32), in t's dtype; NaN kept."""
    single = t.float()
    bits = single.view(torch.int32)
    rounded = ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    return torch.where(single.isnan(), single, rounded).to(t.dtype)


class TF32Products(TorchDispatchMode):
    """Every matrix product of floating tensors takes TF32-rounded operands, forward and
    backward (autograd's products dispatch through the mode too)."""

    PRODUCTS = {aten.mm.default: (0, 1), aten.bmm.default: (0, 1), aten.addmm.default: (1, 2),
                aten.baddbmm.default: (1, 2)}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.PRODUCTS:
            args = list(args)
            for index in self.PRODUCTS[func]:
                if args[index].is_floating_point():
                    args[index] = rounded_to_tf32(args[index])
        return func(*args, **kwargs)


@contextlib.contextmanager
def without_onednn_tf32_note():
    """A CPU build of torch warns, as a TF32 setting reaches oneDNN, that oneDNN's TF32 is for
    Intel GPUs: true, and not what these tests are about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        yield


@contextlib.contextmanager
def matmul_precision(precision: str):
    previous = torch.get_float32_matmul_precision()
    with without_onednn_tf32_note():
        torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        with without_onednn_tf32_note():
            torch.set_float32_matmul_precision(previous)


# name -> (seqops' function, torch's, the reference, gates per hidden unit)
CELLS = {
    "lstm": (seqops.lstm_cell, torch.lstm_cell, reference.lstm_cell, 4),
    "gru": (seqops.gru_cell, torch.gru_cell, reference.gru_cell, 3),
    "rnn_tanh": (seqops.rnn_tanh_cell, torch.rnn_tanh_cell, reference.rnn_tanh_cell, 1),
}


def cell_leaves(cell, B, I, H, device):
    """float64 leaves holding fp32 values: x [B, I], the state ((h, c) for the LSTM, else h),
    w_ih, w_hh, b_ih, b_hh; weights scaled so that the gates are neither saturated nor linear."""
    G = CELLS[cell][3]
    tensors = [torch.randn(B, I), torch.randn(B, H), torch.randn(B, H), torch.randn(G * H, I) / I**0.5,
               torch.randn(G * H, H) / H**0.5, torch.randn(G * H) * 0.5, torch.randn(G * H) * 0.5]
    return [t.float().double().to(device) for t in tensors]


def call_cell(cell, fn, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """The cell's output as one tensor: (h', c') side by side for the LSTM."""
    if cell == "lstm":
        return torch.cat(fn(x, (h, c), w_ih, w_hh, b_ih, b_hh), dim=1)
    return fn(x, h, w_ih, w_hh, b_ih, b_hh)


def run(fn, leaves, dtype, weight, mode=contextlib.nullcontext):
    """fn's output and the gradients of (output * weight).sum() for leaves cast to dtype."""
    args = [t.detach().to(dtype).requires_grad_() for t in leaves]
    with mode():
        out = fn(*args)
        grads = torch.autograd.grad((out.double() * weight).sum(), args, allow_unused=True)
    return out, [g if g is not None else torch.zeros_like(a) for g, a in zip(grads, args)]


@contextlib.contextmanager
def emulated_tf32_products():
    """TF32Products, with oneDNN's fused CPU LSTM (a single op, its products out of the mode's
    reach) off, so that torch's nn.LSTM decomposes into products the mode rounds."""
    with without_onednn_tf32_note(), torch.backends.mkldnn.flags(enabled=False), TF32Products():
        yield


def emulated_on_cpu(device):
    """The mode that stands for torch's TF32 on this device: torch itself on a GPU."""
    return emulated_tf32_products if device == "cpu" else contextlib.nullcontext


NAMES = ("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh")


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device", DEVICES)
def test_cell_products_round_to_tf32_when_torch_allows(device, cell):
    skip_unless_runnable(device, "triton")
    ours_fn, torch_fn, reference_fn, _ = CELLS[cell]
    B, I, H = 6, 37, 35  # past one interpreter tile (32) in every product's length
    pooled = {}
    for trial in range(2):
        leaves = cell_leaves(cell, B, I, H, device)
        weight = torch.randn(B, (2 if cell == "lstm" else 1) * H, dtype=torch.float64, device=device)

        def of(fn):
            return lambda *args: call_cell(cell, fn, *args)

        reference_out, reference_grads = run(of(reference_fn), leaves, torch.float64, weight)
        with matmul_precision("high"):
            # The float64 reference whose products take TF32-rounded operands (the same
            # rounding on the CPU and the GPU), and torch's fp32 op against it.
            rounded_out, _ = run(of(reference_fn), leaves, torch.float64, weight, TF32Products)
            torch_rounded_out, _ = run(of(torch_fn), leaves, torch.float32, weight, TF32Products)
            torch_out, torch_grads = run(of(torch_fn), leaves, torch.float32, weight, emulated_on_cpu(device))
            with seqops.backend("triton"):
                ours_out, ours_grads = run(of(ours_fn), leaves, torch.float32, weight)
        pooled.setdefault("output, against the rounded products", PooledResult()).add(
            "output", ours_out, rounded_out, torch_rounded_out)
        pooled.setdefault("output", PooledResult()).add("output", ours_out, reference_out, torch_out)
        for name, ours, ref, theirs in zip(NAMES, ours_grads, reference_grads, torch_grads):
            if cell != "lstm" and name == "c":
                continue
            pooled.setdefault(f"d {name}", PooledResult()).add(name, ours, ref, theirs)
    for name, result in pooled.items():
        result.check("triton", f"{cell} {name} (TF32)")


@pytest.mark.parametrize("device", DEVICES)
def test_default_precision_keeps_fp32_products_exact(device):
    """The same cell at the default precision errs ~1e3x less than with TF32: the setting is
    read at each launch, and "highest" is not TF32."""
    skip_unless_runnable(device, "triton")
    leaves = cell_leaves("lstm", 6, 37, 35, device)
    weight = torch.ones(6, 70, dtype=torch.float64, device=device)
    of = lambda fn: lambda *args: call_cell("lstm", fn, *args)  # noqa: E731
    reference_out, _ = run(of(reference.lstm_cell), leaves, torch.float64, weight)
    with seqops.backend("triton"):
        exact_out, _ = run(of(seqops.lstm_cell), leaves, torch.float32, weight)
        with matmul_precision("high"):
            tf32_out, _ = run(of(seqops.lstm_cell), leaves, torch.float32, weight)
    exact, tf32 = relative_error(exact_out, reference_out), relative_error(tf32_out, reference_out)
    assert exact < 8 * torch.finfo(torch.float32).eps, exact
    assert tf32 > 50 * exact + floor(torch.float32), (tf32, exact)


@pytest.mark.parametrize("device", DEVICES)
def test_lstm_sequence_kernels_round_to_tf32_when_torch_allows(device):
    """nn.LSTM on the sequence kernels (one launch a layer and direction), its recurrent
    products in TF32: output and every gradient within 2x torch's nn.LSTM with TF32 GEMMs;
    and its output far from the exact one (on the CPU its input projection, a torch GEMM,
    stays exact: only the kernels' products can make the difference)."""
    skip_unless_runnable(device, "triton")
    T, B, I, H = 3, 4, 9, 20
    torch_lstm = torch.nn.LSTM(I, H, device=device)
    ours_lstm = seqops.nn.LSTM(I, H, device=device)
    ours_lstm.load_state_dict(torch_lstm.state_dict())
    reference_lstm = seqops.nn.LSTM(I, H, device=device, dtype=torch.float64)
    reference_lstm.load_state_dict(torch_lstm.state_dict())
    pooled = {}
    for trial in range(2):
        x = torch.randn(T, B, I, dtype=torch.float64, device=device).float().double()
        weight = torch.randn(T, B, H, dtype=torch.float64, device=device)
        results = {}
        for name, module, dtype, backend, mode in (
                ("reference", reference_lstm, torch.float64, "reference", contextlib.nullcontext),
                ("torch", torch_lstm, torch.float32, None, emulated_on_cpu(device)),
                ("ours", ours_lstm, torch.float32, "sequence", contextlib.nullcontext)):
            module.zero_grad()
            inputs = x.detach().to(dtype).requires_grad_()
            chosen = (seqops.backend("triton", variant="sequence") if backend == "sequence"
                      else seqops.backend(backend) if backend else contextlib.nullcontext())
            with matmul_precision("high"), chosen, mode():
                out, _ = module(inputs)
                (out.double() * weight).sum().backward()
            results[name] = {"output": out, "d x": inputs.grad,
                             **{f"d {n}": p.grad for n, p in module.named_parameters()}}
        for name, ours in results["ours"].items():
            pooled.setdefault(name, PooledResult()).add(name, ours, results["reference"][name],
                                                        results["torch"][name])
    for name, result in pooled.items():
        result.check("triton", f"nn.LSTM {name} (TF32)")
    with torch.no_grad(), seqops.backend("triton", variant="sequence"):
        exact_out, _ = ours_lstm(x.float())
        with matmul_precision("high"):
            tf32_out, _ = ours_lstm(x.float())
    with torch.no_grad(), seqops.backend("reference"):
        reference_out, _ = reference_lstm(x)
    exact, tf32 = relative_error(exact_out, reference_out), relative_error(tf32_out, reference_out)
    assert tf32 > 20 * exact + floor(torch.float32), (tf32, exact)
