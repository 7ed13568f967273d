"""seqops under FakeTensorMode (what torch.compile and torch.export trace with): every op
gives outputs of torch's shapes and dtypes without running a kernel, and the Triton
backend's first use inside such a context (or inside torch.func) does not poison it for
the rest of the process."""
import os
import subprocess
import sys

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import seqops
from devices import DEVICES, IMPLEMENTED, skip_unless_runnable


def calls(device):
    q, k, v = torch.randn(2, 3, 7, 16), torch.randn(2, 3, 9, 16), torch.randn(2, 3, 9, 8)
    x, h, c = torch.randn(4, 5), torch.randn(4, 6), torch.randn(4, 6)
    w_ih, w_hh, b = torch.randn(24, 5), torch.randn(24, 6), torch.randn(24)
    lstm = seqops.nn.LSTM(5, 6, num_layers=2, bidirectional=True)
    seq = torch.randn(3, 4, 5)
    return {
        "softmax": (lambda *a: seqops.softmax(*a, -1, causal=True), (torch.randn(2, 5, 9),)),
        "attention": (lambda *a: seqops.scaled_dot_product_attention(*a, is_causal=True), (q, k, v)),
        "lstm_cell": (lambda *a: seqops.lstm_cell(a[0], (a[1], a[2]), *a[3:]), (x, h, c, w_ih, w_hh, b, b)),
        "lstm": (lambda a: lstm(a)[0], (seq,)),
    }


def flat(result):
    return result if isinstance(result, (tuple, list)) else (result,)


@pytest.mark.parametrize("op", ["softmax", "attention", "lstm_cell", "lstm"])
@pytest.mark.parametrize("backend", IMPLEMENTED)
@pytest.mark.parametrize("device", DEVICES)
def test_fake_outputs_have_torchs_shapes(device, backend, op):
    skip_unless_runnable(device, backend)
    fn, args = calls(device)[op]
    with seqops.backend(backend):
        real = flat(fn(*(a.to(device) for a in args)))
        mode = FakeTensorMode(allow_non_fake_inputs=True)  # the LSTM module's parameters stay real
        with mode:
            fake = flat(fn(*(mode.from_tensor(a.to(device)) for a in args)))
    assert [(t.shape, t.dtype, t.device) for t in fake] == [(t.shape, t.dtype, t.device) for t in real]


RECURRENT_MODULES = {"lstm": seqops.nn.LSTM, "gru": seqops.nn.GRU, "rnn": seqops.nn.RNN}


def packed_module_and_input(name, device, enforce_sorted=False):
    """A 2-layer bidirectional module of `name` and a packed batch of 3 sequences (lengths
    unsorted unless enforce_sorted, so that sorted/unsorted indices matter)."""
    module = RECURRENT_MODULES[name](5, 6, num_layers=2, bidirectional=True).to(device)
    lengths = torch.tensor([4, 3, 2] if enforce_sorted else [2, 4, 3])
    return module, pack_padded_sequence(torch.randn(4, 3, 5, device=device), lengths, enforce_sorted=enforce_sorted)


def output_shapes(module, packed):
    output, state = module(packed)
    return [(t.shape, t.dtype, t.device) for t in (output.data, *(state if isinstance(state, tuple) else (state,)))]


def faked(mode, packed, fake_sizes):
    """`packed` with fake data, and fake batch sizes and indices too when fake_sizes."""
    data, *rest = packed
    if fake_sizes:
        rest = [None if t is None else mode.from_tensor(t) for t in rest]
    return PackedSequence(mode.from_tensor(data), *rest)


@pytest.mark.parametrize("name", list(RECURRENT_MODULES))
@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_recurrent_module_under_fake_mode(device, backend, name):
    """A PackedSequence with fake data (batch sizes and indices real, both sortings): the
    module's outputs have the real call's shapes; the batch size is read without
    indexing batch_sizes into a fake tensor."""
    skip_unless_runnable(device, backend)
    for enforce_sorted in (False, True):
        module, packed = packed_module_and_input(name, device, enforce_sorted)
        with seqops.backend(backend):
            real = output_shapes(module, packed)
            mode = FakeTensorMode(allow_non_fake_inputs=True)
            with mode:
                fake = output_shapes(module, faked(mode, packed, fake_sizes=False))
        assert fake == real, enforce_sorted


@pytest.mark.parametrize("name", list(RECURRENT_MODULES))
@pytest.mark.parametrize("device", DEVICES)
def test_packed_recurrent_module_with_fake_batch_sizes_on_the_fused_op(device, name):
    """Everything fake, batch_sizes too (as torch.compile traces a PackedSequence input): the
    fused layer ops need no data to give shapes, and the batch size comes from the length
    of sorted_indices. (torch's own GRU/LSTM and the reference step through batch_sizes'
    data, so they cannot run on fake batch sizes.)"""
    skip_unless_runnable(device, "triton")
    module, packed = packed_module_and_input(name, device)
    with seqops.backend("triton"):
        real = output_shapes(module, packed)
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        with mode:
            fake = output_shapes(module, faked(mode, packed, fake_sizes=True))
    assert fake == real


@pytest.mark.parametrize("name", list(RECURRENT_MODULES))
def test_fake_batch_sizes_without_sorted_indices_raise_saying_why(name):
    """enforce_sorted=True leaves no sorted_indices: the batch size is only in batch_sizes'
    data, which a fake tensor has not. A clear error, not DataDependentOutputException."""
    module, packed = packed_module_and_input(name, "cpu", enforce_sorted=True)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with seqops.backend("torch"), mode, pytest.raises(RuntimeError, match="enforce_sorted=False"):
        module(faked(mode, packed, fake_sizes=True))


def test_first_triton_call_inside_fake_mode_or_torch_func_does_not_poison_later_calls():
    """In a fresh process, the first Triton calls happen under FakeTensorMode and inside
    torch.func.jvp; a plain call afterwards runs the kernel and is right."""
    code = (
        "import torch, seqops\n"
        "from torch._subclasses.fake_tensor import FakeTensorMode\n"
        "x = torch.randn(3, 5)\n"
        "with seqops.backend('triton'):\n"
        "    with FakeTensorMode() as mode:\n"
        "        assert seqops.softmax(mode.from_tensor(x), -1).shape == (3, 5)\n"
        "    torch.func.jvp(lambda a: seqops.softmax(a, -1), (x,), (torch.ones_like(x),))\n"
        "    y = seqops.softmax(x, -1)\n"
        "torch.testing.assert_close(y, torch.softmax(x, -1))\n"
        "print('ok')\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
