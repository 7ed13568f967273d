"""The attention autotuner's key: the features and a class of length, so that a launch at
8192 keys is timed apart from one at 64 while lengths of one class share a timing; and
its choices cached on disk."""
import pytest

from seqops.kernels.attention import backward, forward, tuning


@pytest.mark.parametrize("L, S, bucket", [
    (1, 1, 128), (0, 5, 128), (128, 128, 128), (129, 7, 256), (7, 129, 256), (4096, 4096, 4096),
    (4097, 100, 8192), (16384, 16384, 16384), (10**6, 3, 16384),
])
def test_length_bucket(L, S, bucket):
    assert tuning.length_bucket(L, S) == bucket


@pytest.mark.parametrize("kernel", [forward.attention_forward_kernel, backward.attention_backward_dkdv_kernel,
                                    backward.attention_backward_dq_kernel, backward.attention_backward_fused_kernel])
def test_autotuned_kernels_key_on_the_length_class(kernel):
    assert "length_bucket" in kernel.keys and "length_bucket" in kernel.arg_names
