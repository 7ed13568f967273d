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
