"""Bad input to seqops.softmax gets a clear error naming the argument, on every backend."""
import pytest
import torch

import seqops
from devices import IMPLEMENTED, skip_unless_runnable


@pytest.fixture(params=IMPLEMENTED + ("auto",))
def backend(request):
    skip_unless_runnable("cpu", request.param)
    with seqops.backend(request.param):
        yield request.param


def test_input_must_be_a_tensor(backend):
    with pytest.raises(TypeError, match="argument 'input' must be a torch.Tensor, got list"):
        seqops.softmax([1.0, 2.0])


def test_integer_input_needs_dtype(backend):
    with pytest.raises(NotImplementedError, match=r"input must be floating point, got shape \(6,\), dtype torch\.int64.*pass dtype="):
        seqops.softmax(torch.arange(6))


def test_complex_input_is_refused(backend):
    with pytest.raises(NotImplementedError, match="input must be floating point"):
        seqops.softmax(torch.randn(3, dtype=torch.complex64))


@pytest.mark.parametrize("dtype, error", [(torch.int32, NotImplementedError), ("float32", TypeError),
                                          (torch.complex64, NotImplementedError)], ids=str)
def test_dtype_must_be_a_floating_dtype(backend, dtype, error):
    with pytest.raises(error, match="argument 'dtype' must be a floating-point torch.dtype or None"):
        seqops.softmax(torch.randn(3), -1, dtype)


@pytest.mark.parametrize("shape, dim", [((3, 4), 2), ((3, 4), -3), ((), 1), ((), -2)], ids=str)
def test_dim_out_of_range(backend, shape, dim):
    with pytest.raises(IndexError, match=r"dimension out of range \(expected to be in range of"):
        seqops.softmax(torch.randn(shape), dim)


@pytest.mark.parametrize("dim", [1.0, None, True, "x"], ids=str)
def test_dim_must_be_an_int(backend, dim):
    with pytest.raises(TypeError, match="argument 'dim' must be an int"):
        seqops.softmax(torch.randn(3, 4), dim)


@pytest.mark.parametrize("scale", [torch.tensor(2.0), "2", None, True], ids=str)
def test_scale_must_be_a_number(backend, scale):
    with pytest.raises(TypeError, match="argument 'scale' must be a real number"):
        seqops.softmax(torch.randn(3, 4), scale=scale)


def test_mask_must_be_bool(backend):
    with pytest.raises(TypeError, match=r"'mask' must be a bool tensor .*torch\.float32"):
        seqops.softmax(torch.randn(3, 4), mask=torch.zeros(3, 4))


@pytest.mark.parametrize("mask_shape", [(4, 3), (2, 3, 4), (5,)], ids=str)
def test_mask_must_broadcast_to_input(backend, mask_shape):
    with pytest.raises(RuntimeError, match=r"'mask' of shape .* does not broadcast to the input's shape \(3, 4\)"):
        seqops.softmax(torch.randn(3, 4), mask=torch.ones(mask_shape, dtype=torch.bool))


def test_mask_must_be_a_tensor(backend):
    with pytest.raises(TypeError, match="argument 'mask' must be a torch.Tensor"):
        seqops.softmax(torch.randn(3, 4), mask=[[True] * 4] * 3)


def test_causal_needs_two_dims(backend):
    with pytest.raises(ValueError, match=r"causal=True needs an input of at least 2 dims.*shape \(5,\)"):
        seqops.softmax(torch.randn(5), causal=True)


def test_causal_must_be_bool(backend):
    with pytest.raises(TypeError, match="argument 'causal' must be a bool"):
        seqops.softmax(torch.randn(3, 4), causal=1)


@pytest.mark.cuda
def test_mask_on_another_device():
    with pytest.raises(ValueError, match="'mask' is on cpu but 'input' is on cuda"):
        seqops.softmax(torch.randn(3, 4, device="cuda"), mask=torch.ones(3, 4, dtype=torch.bool))
