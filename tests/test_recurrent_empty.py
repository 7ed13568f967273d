"""seqops.nn.LSTM, GRU and RNN on an empty batch and on an empty sequence, on every
backend and variant: as torch's modules, an empty batch gives empty outputs and
gradients of the right shapes (the fused layers' stacking once failed to reshape them),
and a sequence of no steps is refused with torch's exception type."""
import copy

import pytest
import torch

import seqops
from devices import DEVICES, IMPLEMENTED, skip_unless_runnable

# (torch's module, constructor keywords): stacked, bidirectional and projected layers, so
# that every step of the stacking (concatenation, projection, dropout) sees the empty rows.
MODULES = {
    "lstm": (torch.nn.LSTM, dict(num_layers=2, bidirectional=True, dropout=0.5)),
    "lstm-proj-batch-first": (torch.nn.LSTM, dict(proj_size=3, batch_first=True)),
    "gru": (torch.nn.GRU, dict(num_layers=2, bidirectional=True)),
    "rnn-relu-batch-first": (torch.nn.RNN, dict(nonlinearity="relu", batch_first=True)),
}

# Each backend's variants of the multi-layer ops (None: its only one).
VARIANTS = {"triton": ("step", "sequence"), "cuda": ("step", "sequence")}


def backend_variants():
    return [pytest.param(backend, variant, id=f"{backend}-{variant}" if variant else backend)
            for backend in IMPLEMENTED for variant in VARIANTS.get(backend, (None,))]


def outputs(result):
    """(output, *final states) of an LSTM's, GRU's or RNN's result."""
    output, states = result
    return (output,) + (states if isinstance(states, tuple) else (states,))


@pytest.mark.parametrize("backend, variant", backend_variants())
@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_gives_empty_outputs_and_gradients(device, name, backend, variant):
    skip_unless_runnable(device, backend)
    torch_class, kwargs = MODULES[name]
    theirs = torch_class(4, 6, **kwargs).to(device).train()
    ours = seqops.patch(copy.deepcopy(theirs))
    shape = (0, 3, 4) if kwargs.get("batch_first") else (3, 0, 4)
    x_theirs = torch.randn(shape, device=device, requires_grad=True)
    x_ours = x_theirs.detach().clone().requires_grad_()
    expected = outputs(theirs(x_theirs))
    with seqops.backend(backend, variant=variant):
        got = outputs(ours(x_ours))
        sum(t.sum() for t in got).backward()
    assert [t.shape for t in got] == [t.shape for t in expected]
    assert all(t.numel() == 0 and t.dtype == e.dtype for t, e in zip(got, expected))
    sum(t.sum() for t in expected).backward()
    assert x_ours.grad is not None and x_ours.grad.shape == x_theirs.grad.shape
    for (label, p), q in zip(ours.named_parameters(), theirs.parameters()):
        # torch's own gradients for an empty batch: zeros (its weight products over no rows)
        assert p.grad is not None and torch.equal(p.grad, q.grad), label


@pytest.mark.parametrize("backend, variant", backend_variants())
@pytest.mark.parametrize("device", DEVICES)
def test_no_steps_is_refused_as_torch_refuses_it(device, backend, variant):
    skip_unless_runnable(device, backend)
    for torch_class, kwargs in MODULES.values():
        shape = (2, 0, 4) if kwargs.get("batch_first") else (0, 2, 4)
        theirs = torch_class(4, 6, **kwargs).to(device)
        with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
            theirs(torch.randn(shape, device=device))
        ours = seqops.patch(copy.deepcopy(theirs))
        with seqops.backend(backend, variant=variant), \
                pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
            ours(torch.randn(shape, device=device))
