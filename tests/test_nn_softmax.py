"""seqops.nn.Softmax as a drop-in for torch.nn.Softmax, and seqops.patch."""
import pytest
import torch

import seqops
from devices import DEVICES, IMPLEMENTED, skip_unless_runnable


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("backend", IMPLEMENTED)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_layer(device, backend, dim):
    skip_unless_runnable(device, backend)
    x = torch.randn(6, 7, 40, device=device, requires_grad=True)
    ours, theirs = seqops.nn.Softmax(dim), torch.nn.Softmax(dim)
    with seqops.backend(backend):
        out = ours(x)
    expected = theirs(x)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad), torch.autograd.grad(expected, x, grad))


@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4])
def test_implicit_dim_as_torch(ndim):
    x = torch.randn((3,) * ndim)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax has been deprecated"):
        out = seqops.nn.Softmax()(x)
    with pytest.warns(UserWarning):
        expected = torch.nn.Softmax()(x)
    torch.testing.assert_close(out, expected)


def test_is_a_torch_softmax_with_the_same_face():
    ours, theirs = seqops.nn.Softmax(dim=2), torch.nn.Softmax(dim=2)
    assert isinstance(ours, torch.nn.Softmax)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict() == theirs.state_dict() == {}
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


def test_patch_swaps_softmax_layers_in_place():
    class Subclassed(torch.nn.Softmax):
        pass

    model = torch.nn.Sequential(
        torch.nn.Linear(8, 8),
        torch.nn.Softmax(dim=-1),
        torch.nn.Sequential(torch.nn.Softmax(dim=0), Subclassed(dim=1)),
    ).eval()
    x = torch.randn(5, 8)
    expected = model(x)
    patched = seqops.patch(model, softmax=True)
    assert patched is model
    assert type(model[1]) is seqops.nn.Softmax and model[1].dim == -1
    assert type(model[2][0]) is seqops.nn.Softmax and model[2][0].dim == 0
    assert type(model[2][1]) is Subclassed, "subclasses of torch layers are left alone"
    assert not model[1].training
    torch.testing.assert_close(model(x), expected)


def test_patch_of_a_bare_layer_returns_the_replacement():
    replacement = seqops.patch(torch.nn.Softmax(dim=1), softmax=True)
    assert type(replacement) is seqops.nn.Softmax and replacement.dim == 1
