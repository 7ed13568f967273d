"""The CUDA C++ whole-sequence GRU and RNNs (csrc/recurrent/hidden_sequence.cu,
seqops/backends/cuda_sequence.py; backend "cuda", variant "sequence").

Without a GPU, through the compiled module's host code: the launch plan (blocks of 8
units with their slice of W_hh's 3 or 1 gate rows in shared memory) and the limits that
refuse a GPU too small for it, the argument checks that refuse bad launches before any
reaches a GPU, and the registration. On a GPU (`cuda`): nn.GRU and nn.RNN on it against
torch's modules in float64 with the error rule of tests/accuracy.py, padded and packed,
both directions, two layers, 16-bit dtypes, several blocks with a partial last one, and
the launch count that does not grow with the sequence length. No test here has run on a
GPU yet."""
import pytest
import torch

import seqops
from cuda_build import ONE_BUILD, built
from devices import skip_unless_runnable
from seqops import dispatch
from test_cuda_lstm_sequence import AMPERE, CODES, HOPPER, ExtensionCalls
from test_gru_rnn_modules import LAYERS, layer_inputs
from test_lstm import compare, twins

pytestmark = ONE_BUILD


def plan(hidden, dtype, gates, limits):
    _, module = built()
    return module.sequence_plan(hidden, CODES[dtype], gates, *limits)


def test_plan_keeps_each_cells_gate_rows_of_eight_units_in_shared_memory():
    # Issue 16's GRU: H = 768, bf16: 96 blocks, 3 x 8 rows of 768 (+ 8) two-byte weights
    # beside the tensor-core form's staging (16 x 1032 two-byte columns, 8 warps' 16 x 36
    # fp32 partial sums); fp32 keeps the FMA form's 64 x 33 fp32 tile; an RNN's one gate
    # row a unit.
    gru = plan(768, torch.bfloat16, 3, HOPPER)
    assert (gru["blocks"], gru["threads"], gru["units_per_block"]) == (96, 256, 8) and gru["reason"] is None
    assert gru["shared_bytes"] == 16 * 1032 * 2 + 8 * 16 * 36 * 4 + 3 * 8 * (768 + 8) * 2
    assert plan(768, torch.float32, 1, HOPPER)["shared_bytes"] == 64 * 33 * 4 + 8 * 768 * 4
    # Past one block a multiprocessor, or past a block's shared memory, refused with the reason.
    assert plan(1056, torch.float32, 3, HOPPER)["reason"] is None
    assert "multiprocessors" in plan(1057, torch.float32, 1, HOPPER)["reason"]
    assert "multiprocessors" in plan(1024, torch.float32, 3, AMPERE)["reason"]
    assert "shared memory" in plan(1024, torch.float32, 3, (132, 64 * 1024))["reason"]
    with pytest.raises(RuntimeError, match="gates must be 1, 3 or 4, got 2"):
        plan(64, torch.float32, 2, HOPPER)


def _forward_values(**changes):
    values = dict(cell="gru_cell", xw=0, xw_strides=(3, 1), h0=0, h0_strides=(1, 1), w_hh=0, w_hh_strides=(1, 1),
                  b_hh=0, b_hh_stride=0, out=0, out_strides=(1, 1), saved=0, saved_strides=(4, 1), offsets=0, rows=0,
                  prev=0, carried=0, steps=3, dtype=0, batch=2, hidden=1, device=0, stream=0)
    values.update(changes)
    return values


def _backward_values(**changes):
    values = dict(cell="gru_cell", d_out=0, d_out_strides=(0, 0), d_h_n=0, d_h_n_strides=(0, 0), out=8,
                  out_strides=(1, 1), h0=8, h0_strides=(1, 1), saved=8, saved_strides=(4, 1), w_hh=8,
                  w_hh_strides=(1, 1), dgates=8, d_h0=8, carry=8, offsets=8, rows=8, prev=8, carried=8, steps=3,
                  dtype=0, batch=2, hidden=1, device=0, stream=0)
    values.update(changes)
    return values


def test_bad_launches_are_refused_before_they_reach_a_gpu():
    """The host checks run before any CUDA call: on this machine (no GPU) a bad argument
    is reported as one, not as a missing driver."""
    _, module = built()
    with pytest.raises(RuntimeError, match="bad argument: hidden_sequence: a schedule pointer is null"):
        module.hidden_sequence_forward(**_forward_values())
    with pytest.raises(RuntimeError, match="bad argument: hidden_sequence: negative number of steps"):
        module.hidden_sequence_forward(**_forward_values(steps=-1))
    with pytest.raises(RuntimeError, match="unknown dtype code 7"):
        module.hidden_sequence_forward(**_forward_values(dtype=7))
    with pytest.raises(RuntimeError, match="unknown cell 'lstm_cell'"):
        module.hidden_sequence_forward(**_forward_values(cell="lstm_cell"))
    schedule = dict(offsets=8, rows=8, prev=8, carried=8)
    with pytest.raises(RuntimeError, match="bad argument: hidden_sequence_forward: a tensor pointer is null"):
        module.hidden_sequence_forward(**_forward_values(**schedule))
    # The RNNs take b_hh apart from xw as the GRU does: past the checks, to the missing driver.
    tensors = dict(xw=8, h0=8, w_hh=8, out=8, saved=8)
    with pytest.raises(RuntimeError) as refused:
        module.hidden_sequence_forward(**_forward_values(cell="rnn_tanh_cell", b_hh=8, **schedule, **tensors))
    assert "bad argument" not in str(refused.value)
    # The GRU's backward reads out and h0 (h_prev) and its carry; the RNNs' need none of them.
    for missing in ("out", "h0", "carry", "saved", "dgates", "d_h0"):
        with pytest.raises(RuntimeError, match="bad argument: hidden_sequence_backward: a tensor pointer is null"):
            module.hidden_sequence_backward(**_backward_values(**{missing: 0}))
    for missing in ("saved", "dgates", "d_h0"):
        with pytest.raises(RuntimeError, match="bad argument: hidden_sequence_backward: a tensor pointer is null"):
            module.hidden_sequence_backward(**_backward_values(cell="rnn_relu_cell", out=0, h0=0, carry=0,
                                                               **{missing: 0}))


@pytest.mark.parametrize("mode", list(LAYERS))
def test_registered_ahead_of_the_step_variant_not_for_auto(mode):
    keys = [impl.key for impl in dispatch.implementations(mode) if impl.backend == "cuda"]
    assert keys.index(f"{mode}/cuda/sequence") < keys.index(f"{mode}/cuda/step")
    assert not dispatch.implementation(f"{mode}/cuda/sequence").priority  # never run on a GPU
    # On the CPU the CUDA backend refuses before its sequence kernels are asked.
    probe = torch.empty(3, 2, 4)
    reason = dispatch.backend_reason(mode, "cuda", torch.device("cpu"), probe, None, torch.zeros(1, 2, 5), [], True,
                                     1, 0.0, False, False)
    assert reason is not None


# -- on a GPU --

def check_on_gpu(monkeypatch, mode, config, packed, T, B, I, H, dtype=torch.float32, min_trials=1):
    skip_unless_runnable("cuda", "cuda")
    torch_class, seqops_class, kwargs = LAYERS[mode]
    modules = twins(torch_class, seqops_class, I, H, device="cuda", dtype=dtype, **kwargs, **config)
    make, call = layer_inputs(config, packed, T=T, B=B, I=I, H=H, device="cuda")
    calls = ExtensionCalls(monkeypatch, prefix="hidden_sequence_")
    compare("cuda", modules, make, call, dtype, H, min_trials, variant="sequence")
    assert calls.counts.get("hidden_sequence_forward", 0) > 0 and calls.counts.get("hidden_sequence_backward", 0) > 0


BIDIRECTIONAL_2_LAYERS = dict(bias=True, batch_first=False, bidirectional=True, num_layers=2)


@pytest.mark.cuda
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("mode", list(LAYERS))
def test_on_gpu_several_blocks_bidirectional_two_layers(monkeypatch, mode, packed):
    """H = 40: five blocks of 8 units, the staged h (and the GRU's 120 gate rows) in chunks
    of 32 columns; packed lengths make rows start late in the reversed direction."""
    check_on_gpu(monkeypatch, mode, BIDIRECTIONAL_2_LAYERS, packed, T=5, B=3, I=7, H=40)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["gru", "rnn_relu"])
def test_on_gpu_partial_block_more_rows_than_a_pass_batch_first_no_bias(monkeypatch, mode):
    """H = 13 (a partial second block), B = 70 (two passes of 64 rows)."""
    config = dict(bias=False, batch_first=True, bidirectional=True, num_layers=1)
    check_on_gpu(monkeypatch, mode, config, True, T=4, B=70, I=5, H=13)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", ["gru", "rnn_tanh"])
def test_on_gpu_reduced_precision(monkeypatch, mode, dtype):
    """Not the relu RNN in 16 bits: its gradient error there counts mask flips at 0
    (tests/test_gru_rnn_sequence.py says why)."""
    config = dict(bias=True, batch_first=True, bidirectional=True, num_layers=1)
    check_on_gpu(monkeypatch, mode, config, True, T=6, B=5, I=8, H=72, dtype=dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["gru", "rnn_tanh"])
def test_on_gpu_tensor_cores_over_several_mma_tiles_and_passes(monkeypatch, mode):
    """bf16, the tensor-core products: B = 70 packed (a pass of four 16-row mma tiles, then
    one of 6 rows), H = 13 (one k-step of 16, padded with zeros)."""
    config = dict(bias=True, batch_first=True, bidirectional=True, num_layers=1)
    check_on_gpu(monkeypatch, mode, config, True, T=4, B=70, I=5, H=13, dtype=torch.bfloat16)


@pytest.mark.cuda
def test_on_gpu_the_issue_shape_in_bf16(monkeypatch):
    """The GRU at B = 16, H = 768, bf16 (issue 16's comparison with cuDNN), 64 steps: 96
    blocks meeting at 63 grid barriers forward and 64 backward."""
    config = dict(bias=True, batch_first=False, bidirectional=False, num_layers=1)
    check_on_gpu(monkeypatch, "gru", config, False, T=64, B=16, I=32, H=768, dtype=torch.bfloat16)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", list(LAYERS))
def test_on_gpu_launches_do_not_grow_with_length(monkeypatch, mode):
    skip_unless_runnable("cuda", "cuda")
    torch_class, seqops_class, kwargs = LAYERS[mode]
    module = seqops_class(3, 24, **kwargs).to("cuda")
    calls = ExtensionCalls(monkeypatch, prefix="hidden_sequence_")

    def launches(T):
        calls.counts.clear()
        x = torch.randn(T, 2, 3, device="cuda", requires_grad=True)
        with seqops.backend("cuda", variant="sequence"):
            out, h_n = module(x)
            (out.sum() + h_n.sum()).backward()
        return dict(calls.counts)

    assert launches(8) == launches(64) == {"hidden_sequence_forward": 1, "hidden_sequence_backward": 1}
