"""The CUDA C++ whole-sequence LSTM (csrc/recurrent/lstm_sequence.cu, seqops/backends/
cuda_sequence.py; backend "cuda", variant "sequence").

Without a GPU, through the compiled module's host code: the launch plan (blocks of 8
units, the shared memory of their W_hh slices) and the limits that refuse a GPU too small
for it, the argument checks that refuse bad launches before any reaches a GPU, and the
registration. On a GPU (`cuda`): nn.LSTM on it against torch's module in float64 with the
error rule of tests/accuracy.py, padded and packed, both directions, two layers, 16-bit
dtypes, several blocks with a partial last one, and the launch count that does not grow
with the sequence length. No test here has run on a GPU yet."""
import pytest
import torch

import seqops
from cuda_build import ONE_BUILD, built, run_host_program
from devices import skip_unless_runnable
from seqops import dispatch
from test_lstm import compare, lstm_inputs, twins

pytestmark = ONE_BUILD

# An H100's or H200's: 132 multiprocessors, 227 KiB of opt-in shared memory a block; an A100's.
HOPPER = (132, 227 * 1024)
AMPERE = (108, 163 * 1024)
CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def plan(hidden, dtype, limits):
    _, module = built()
    return module.sequence_plan(hidden, CODES[dtype], 4, *limits)


# The tensor-core form's staging (fp16, bf16): 16 rows x (1024 + 8) two-byte columns of the
# exchanged operand, then the 8 warps' 16 x 36 fp32 partial sums.
MMA_STAGING = 16 * 1032 * 2 + 8 * 16 * 36 * 4


def test_plan_keeps_eight_units_a_block_and_their_w_hh_slice_in_shared_memory():
    # The issue's target: H = 768, bf16: 96 blocks, each with its 4 x 8 rows of W_hh
    # (rows of 768 + 8 elements for the tensor cores' bank spread), and the backward's 8
    # columns of 4 x 768 (+ 8) beside the staging: the larger of the two.
    p = plan(768, torch.bfloat16, HOPPER)
    assert (p["blocks"], p["threads"], p["units_per_block"]) == (96, 256, 8)
    assert p["shared_bytes"] == MMA_STAGING + 4 * 8 * (768 + 8) * 2 and p["reason"] is None
    # fp32 keeps the FMA form: the 64 x 33 fp32 staging tile, slices unpadded.
    assert plan(768, torch.float32, HOPPER)["shared_bytes"] == 64 * 33 * 4 + 4 * 8 * 768 * 4
    # Rows round up to the mma's k-step of 16: 1001 -> 1008 + 8 forward, 4004 -> 4016 + 8 backward.
    assert plan(1001, torch.float16, HOPPER)["shared_bytes"] == MMA_STAGING + max(32 * 1016, 8 * 4024) * 2
    # fp32 H = 1024: 128 blocks, 136 KiB each: fits a Hopper, not an A100's 108 SMs.
    assert plan(1024, torch.float32, HOPPER)["reason"] is None
    assert "multiprocessors" in plan(1024, torch.float32, AMPERE)["reason"]
    # A partial last block: 1001 units take 126 blocks.
    assert plan(1001, torch.float16, HOPPER)["blocks"] == 126


def test_plan_refuses_more_blocks_than_multiprocessors_or_slices_past_shared_memory():
    assert plan(1056, torch.bfloat16, HOPPER)["reason"] is None  # 132 blocks: one per SM
    assert "multiprocessors" in plan(1057, torch.bfloat16, HOPPER)["reason"]
    assert "shared memory" in plan(1024, torch.float32, (132, 100 * 1024))["reason"]


def _forward_values(**changes):
    values = dict(xw=0, xw_strides=(4, 1), h0=0, h0_strides=(1, 1), c0=0, c0_strides=(1, 1), w_hh=0,
                  w_hh_strides=(1, 1), w_hr=0, w_hr_strides=(0, 0), out=0, out_strides=(1, 1), h_raw=0,
                  h_raw_strides=(0, 0), cells=0, cells_strides=(1, 1), gates=0, gates_strides=(4, 1), offsets=0,
                  rows=0, prev=0, carried=0, steps=3, dtype=0, batch=2, hidden=1, proj=0, device=0, stream=0)
    values.update(changes)
    return values


def test_bad_launches_are_refused_before_they_reach_a_gpu():
    """The host checks run before any CUDA call: on this machine (no GPU) a bad argument
    is reported as one, not as a missing driver."""
    _, module = built()
    with pytest.raises(RuntimeError, match="bad argument: lstm_sequence: a schedule pointer is null"):
        module.lstm_sequence_forward(**_forward_values())
    with pytest.raises(RuntimeError, match="bad argument: lstm_sequence: negative number of steps"):
        module.lstm_sequence_forward(**_forward_values(steps=-1))
    with pytest.raises(RuntimeError, match="unknown dtype code 7"):
        module.lstm_sequence_forward(**_forward_values(dtype=7))
    schedule = dict(offsets=8, rows=8, prev=8, carried=8)
    with pytest.raises(RuntimeError, match="bad argument: lstm_sequence_forward: a tensor pointer is null"):
        module.lstm_sequence_forward(**_forward_values(**schedule))
    with pytest.raises(RuntimeError, match="bad argument: lstm_sequence_backward: a tensor pointer is null"):
        module.lstm_sequence_backward(d_out=0, d_out_strides=(0, 0), d_h_n=0, d_h_n_strides=(0, 0), d_c_n=0,
                                      d_c_n_strides=(0, 0), gates=8, gates_strides=(4, 1), cells=8,
                                      cells_strides=(1, 1), c0=8, c0_strides=(1, 1), w_hh=8, w_hh_strides=(1, 1),
                                      w_hr=0, w_hr_strides=(0, 0), dgates=8, d_total=0, d_h0=0, d_c0=8, carry=8,
                                      steps=3, dtype=0, batch=2, hidden=1, proj=0, device=0, stream=0, **schedule)


def test_tensor_core_products_match_cute_and_the_plain_sum(tmp_path):
    """tests/cuda_programs/recurrent_mma_products.cu, compiled for the host and run here:
    the fp16/bf16 products' fragment maps are CuTe's for mma.m16n8k16, their fragment
    loads are free of bank conflicts, and the products as the sequence and cell kernels
    compose them (chunks, warps over k-steps or over units, the reduction and sums tiles,
    the cells' backward from fp32 tiles) are the plain sums at K of 1 to 1500."""
    run_host_program(tmp_path, "recurrent_mma_products")


def test_registered_ahead_of_the_step_variant():
    keys = [impl.key for impl in dispatch.implementations("lstm") if impl.backend == "cuda"]
    assert keys.index("lstm/cuda/sequence") < keys.index("lstm/cuda/step")
    assert not dispatch.implementation("lstm/cuda/sequence").priority  # not for `auto`: never run on a GPU


def test_projection_plan_and_refusals():
    """With proj_size P, a block keeps W_hr's slice beside W_hh's: the backward's 4H x 8
    columns of W_hh and P x 8 of W_hr (the larger of the two directions') a block; the
    host checks refuse a projection without its tensors, or not below the hidden size."""
    _, module = built()
    p = module.sequence_plan(768, CODES[torch.bfloat16], 4, *HOPPER, 256)
    assert p["shared_bytes"] == MMA_STAGING + 8 * ((4 * 768 + 8) + (256 + 8)) * 2 and p["reason"] is None
    p = module.sequence_plan(768, CODES[torch.float32], 4, *HOPPER, 256)
    assert p["shared_bytes"] == 64 * 33 * 4 + 8 * (4 * 768 + 256) * 4
    assert "shared memory" in module.sequence_plan(1024, CODES[torch.float32], 4, 132, 150 * 1024, 1000)["reason"]
    schedule = dict(offsets=8, rows=8, prev=8, carried=8)
    tensors = dict(xw=8, h0=8, c0=8, w_hh=8, out=8, cells=8, gates=8)
    with pytest.raises(RuntimeError, match="lstm_sequence_forward: a tensor pointer is null"):
        module.lstm_sequence_forward(**_forward_values(**schedule, **tensors, hidden=4, proj=2))
    with pytest.raises(RuntimeError, match="the projection's size must be below the hidden size"):
        module.lstm_sequence_forward(**_forward_values(**schedule, **tensors, w_hr=8, h_raw=8, hidden=4, proj=4))
    backward = dict(d_out=0, d_out_strides=(0, 0), d_h_n=0, d_h_n_strides=(0, 0), d_c_n=0, d_c_n_strides=(0, 0),
                    gates=8, gates_strides=(4, 1), cells=8, cells_strides=(1, 1), c0=8, c0_strides=(1, 1), w_hh=8,
                    w_hh_strides=(1, 1), w_hr=8, w_hr_strides=(1, 1), dgates=8, d_total=0, d_h0=8, d_c0=8, carry=8,
                    steps=3, dtype=0, batch=2, hidden=4, proj=2, device=0, stream=0, **schedule)
    with pytest.raises(RuntimeError, match="lstm_sequence_backward: a tensor pointer is null"):
        module.lstm_sequence_backward(**backward)


# -- on a GPU --

class ExtensionCalls:
    """Counts the sequence kernels' launches: the extension's calls made by cuda_sequence
    whose names start with `prefix`."""

    def __init__(self, monkeypatch, prefix="lstm_sequence_"):
        from seqops import _ext
        from seqops.backends import cuda_sequence

        self.counts = {}
        module = _ext.load()
        counts = self.counts

        class Counted:
            def __getattr__(self, name):
                function = getattr(module, name)
                if not name.startswith(prefix):
                    return function

                def call(*args, **kwargs):
                    counts[name] = counts.get(name, 0) + 1
                    return function(*args, **kwargs)

                return call

        monkeypatch.setattr(cuda_sequence._ext, "load", lambda: Counted())


def check_on_gpu(monkeypatch, config, packed, T, B, I, H, dtype=torch.float32, min_trials=1):
    skip_unless_runnable("cuda", "cuda")
    modules = twins(torch.nn.LSTM, seqops.nn.LSTM, I, H, device="cuda", dtype=dtype, **config)
    make, call = lstm_inputs(config, packed, T=T, B=B, I=I, H=H, device="cuda")
    calls = ExtensionCalls(monkeypatch)
    compare("cuda", modules, make, call, dtype, H, min_trials, variant="sequence")
    assert calls.counts.get("lstm_sequence_forward", 0) > 0 and calls.counts.get("lstm_sequence_backward", 0) > 0


BIDIRECTIONAL_2_LAYERS = dict(bias=True, batch_first=False, bidirectional=True, proj_size=0, num_layers=2)


@pytest.mark.cuda
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_on_gpu_several_blocks_bidirectional_two_layers(monkeypatch, packed):
    """H = 40: five blocks of 8 units, the staged h in two chunks of 32 columns; packed
    lengths make rows start late in the reversed direction."""
    check_on_gpu(monkeypatch, BIDIRECTIONAL_2_LAYERS, packed, T=5, B=3, I=7, H=40)


@pytest.mark.cuda
def test_on_gpu_partial_block_more_rows_than_a_pass_batch_first_no_bias(monkeypatch):
    """H = 13 (a partial second block), B = 70 (two passes of 64 rows)."""
    config = dict(bias=False, batch_first=True, bidirectional=True, proj_size=0, num_layers=1)
    check_on_gpu(monkeypatch, config, True, T=4, B=70, I=5, H=13)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_on_gpu_reduced_precision(monkeypatch, dtype):
    config = dict(bias=True, batch_first=True, bidirectional=True, proj_size=0, num_layers=1)
    check_on_gpu(monkeypatch, config, True, T=6, B=5, I=8, H=72, dtype=dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_on_gpu_tensor_cores_over_several_mma_tiles_and_passes(monkeypatch, dtype):
    """16 bits, the tensor-core products: B = 70 packed (a pass of four 16-row mma tiles,
    then one of 6 rows, rows dropping out as sequences end), H = 13 (one k-step of 16,
    padded with zeros; the backward's 52 gate rows, four)."""
    config = dict(bias=True, batch_first=True, bidirectional=True, proj_size=0, num_layers=1)
    check_on_gpu(monkeypatch, config, True, T=4, B=70, I=5, H=13, dtype=dtype)


@pytest.mark.cuda
def test_on_gpu_tensor_cores_past_a_staged_chunk(monkeypatch):
    """bf16 H = 1040: the forward's K (1040) is staged in two chunks of 1024 columns, the
    backward's (4160) in five; 130 blocks, so on a GPU of at least 130 multiprocessors."""
    skip_unless_runnable("cuda", "cuda")
    if torch.cuda.get_device_properties(0).multi_processor_count < 130:
        pytest.skip("H = 1040 takes 130 blocks, one a multiprocessor")
    config = dict(bias=True, batch_first=False, bidirectional=False, proj_size=0, num_layers=1)
    check_on_gpu(monkeypatch, config, False, T=3, B=3, I=9, H=1040, dtype=torch.bfloat16)


@pytest.mark.cuda
def test_on_gpu_the_issue_shape_in_bf16(monkeypatch):
    """B = 16, H = 768, bf16 (issue "Whole-sequence LSTM"), 64 steps: 96 blocks meeting at
    63 grid barriers forward and 64 backward."""
    config = dict(bias=True, batch_first=False, bidirectional=False, proj_size=0, num_layers=1)
    check_on_gpu(monkeypatch, config, False, T=64, B=16, I=32, H=768, dtype=torch.bfloat16)


@pytest.mark.cuda
def test_on_gpu_launches_do_not_grow_with_length(monkeypatch):
    skip_unless_runnable("cuda", "cuda")
    module = seqops.nn.LSTM(3, 24).to("cuda")
    calls = ExtensionCalls(monkeypatch)

    def launches(T):
        calls.counts.clear()
        x = torch.randn(T, 2, 3, device="cuda", requires_grad=True)
        with seqops.backend("cuda", variant="sequence"):
            out, (h_n, c_n) = module(x)
            (out.sum() + h_n.sum() + c_n.sum()).backward()
        return dict(calls.counts)

    assert launches(8) == launches(64) == {"lstm_sequence_forward": 1, "lstm_sequence_backward": 1}


@pytest.mark.cuda
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_on_gpu_projection_bidirectional_two_layers(monkeypatch, packed):
    """proj_size 20 of H = 40: five blocks of units, three of them also own 8 features of
    the projection (the third partial), two idle in the features' phases; the second layer
    takes the first's projected, bidirectional output."""
    config = dict(BIDIRECTIONAL_2_LAYERS, proj_size=20)
    check_on_gpu(monkeypatch, config, packed, T=5, B=3, I=7, H=40, min_trials=3)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_on_gpu_projection_reduced_precision(monkeypatch, dtype):
    config = dict(bias=True, batch_first=True, bidirectional=True, proj_size=13, num_layers=1)
    check_on_gpu(monkeypatch, config, True, T=6, B=5, I=8, H=72, dtype=dtype)
