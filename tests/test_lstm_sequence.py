"""The sequence variant of the Triton LSTM (seqops.kernels.recurrent.sequence: one launch
per layer and direction for all steps) through seqops.nn.LSTM, forced with
seqops.backend("triton", variant="sequence"): outputs, h_n, c_n and every gradient
against torch's module in float64, within 2x the error of torch's module in the same
dtype (tests/accuracy.py); which variant runs which call; and that the number of kernel
launches does not grow with the sequence length.

Under the interpreter the kernels run as one program looping over every slice of 16
hidden units (H = 40: three slices, the last partial, W_hh re-read per step), or, when H
fits one slice (H = 9), with W_hh loaded once before the time loop. With a projection
(proj_size) each step has a second phase over slices of the projected features, behind a
grid barrier of its own. The multi-program grid barrier runs only on a GPU (the `cuda`
device parameter)."""
import pytest
import torch

import seqops
from accuracy import assert_within_torch_error
from devices import DEVICES, skip_unless_runnable
from seqops import dispatch
from test_lstm import compare, lstm_inputs, twins


class LaunchCounter:
    """Stands in for a module's `*_kernel`s: counts each launch by kernel name, then runs it."""

    def __init__(self, modules):
        self.modules, self.counts, self.originals = modules, {}, {}

    def __enter__(self):
        for module in self.modules:
            for name, kernel in vars(module).items():
                if name.endswith("_kernel") and hasattr(kernel, "__getitem__"):
                    self.originals[(module, name)] = kernel
                    setattr(module, name, _Counted(kernel, name, self.counts))
        return self

    def __exit__(self, *exc):
        for (module, name), kernel in self.originals.items():
            setattr(module, name, kernel)

    def total(self) -> int:
        return sum(self.counts.values())


class _Counted:
    def __init__(self, kernel, name, counts):
        self.kernel, self.name, self.counts = kernel, name, counts

    def __getitem__(self, grid):
        self.counts[self.name] = self.counts.get(self.name, 0) + 1
        return self.kernel[grid]


def recurrent_kernel_modules():
    from seqops.kernels.recurrent import sequence, step
    return [sequence, step]


def check_sequence(device, config, packed, T, B, I, H, dtype=torch.float32, min_trials=1):
    """compare() of test_lstm with the sequence variant forced, and proof that it ran."""
    modules = twins(torch.nn.LSTM, seqops.nn.LSTM, I, H, device=device, dtype=dtype, **config)
    make, call = lstm_inputs(config, packed, T=T, B=B, I=I, H=H, device=device)
    skip_unless_runnable(device, "triton")
    with LaunchCounter(recurrent_kernel_modules()) as launches:
        compare("triton", modules, make, call, dtype, H, min_trials, variant="sequence")
    assert launches.counts.get("lstm_sequence_forward_kernel", 0) > 0
    assert launches.counts.get("lstm_sequence_backward_kernel", 0) > 0
    assert "lstm_step_forward_kernel" not in launches.counts


BIDIRECTIONAL_2_LAYERS = dict(bias=True, batch_first=False, bidirectional=True, proj_size=0, num_layers=2)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("device", DEVICES)
def test_sequence_several_slices_bidirectional_two_layers(device, packed):
    """H = 40: three 16-unit slices (the last 8 units), h read in three chunks; packed
    lengths of 1, 2 and 4 make rows start late in the reversed direction."""
    check_sequence(device, BIDIRECTIONAL_2_LAYERS, packed, T=4, B=3, I=7, H=40)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("device", DEVICES)
def test_sequence_projection_several_slices_bidirectional_two_layers(device, packed):
    """proj_size 20 of H = 40: two 16-feature slices of the projection (the last 4
    features) against three of the hidden units; the second layer takes the first's
    projected, bidirectional output (40 features). Each bias-gradient entry sums about
    T x B terms: pool 3 trials (one trial failed at seed 1455371335, packed, d bias_hh_l0
    at 2.1x torch's 2.4e-7, with the kernels of 4975450 as with today's)."""
    config = dict(BIDIRECTIONAL_2_LAYERS, proj_size=20)
    check_sequence(device, config, packed, T=4, B=3, I=7, H=40, min_trials=3)


@pytest.mark.parametrize("device", DEVICES)
def test_sequence_projection_weights_on_chip(device):
    """H = 9, proj_size 5: one slice each, W_hh [36, 5] loaded once, reversed and packed.
    Each weight-gradient entry sums about T x B terms: pool 8 trials (as test_cell_layers)."""
    config = dict(bias=True, batch_first=True, bidirectional=True, proj_size=5, num_layers=1)
    check_sequence(device, config, True, T=5, B=4, I=6, H=9, min_trials=8)


@pytest.mark.parametrize("device", DEVICES)
def test_sequence_weights_on_chip_batch_first_no_bias(device):
    """H = 9 fits one slice: W_hh is loaded once, before the time loop. Each weight-gradient
    entry sums about T x B terms: pool 8 trials (one trial failed at seed 486904617, d
    weight_hh at 2.6x torch's error of 7.5e-8)."""
    config = dict(bias=False, batch_first=True, bidirectional=True, proj_size=0, num_layers=1)
    check_sequence(device, config, True, T=6, B=4, I=5, H=9, min_trials=8)


@pytest.mark.parametrize("shape", [(1, 3), (4, 1)], ids=lambda s: f"T{s[0]}-B{s[1]}")
@pytest.mark.parametrize("device", DEVICES)
def test_sequence_length_one_and_batch_one(device, shape):
    T, B = shape
    config = dict(bias=True, batch_first=False, bidirectional=True, proj_size=0, num_layers=1)
    # Few rows a step: each trial's error is a few roundings; pool 4 (as test_lstm does).
    check_sequence(device, config, False, T=T, B=B, I=6, H=20, min_trials=4)


@pytest.mark.parametrize("proj_size", [0, 13], ids=lambda p: f"proj{p}")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_sequence_reduced_precision(device, dtype, proj_size):
    config = dict(bias=True, batch_first=True, bidirectional=True, proj_size=proj_size, num_layers=1)
    check_sequence(device, config, True, T=4, B=5, I=8, H=40, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_sequence_launches_do_not_grow_with_length(device):
    """One nn.LSTM forward and backward: the sequence variant launches as many kernels
    for 64 steps as for 8 (the step variant, counted the same way, one per step)."""
    skip_unless_runnable(device, "triton")
    module = seqops.nn.LSTM(3, 9).to(device)

    def launches(T, variant):
        x = torch.randn(T, 2, 3, device=device, requires_grad=True)
        with seqops.backend("triton", variant=variant), LaunchCounter(recurrent_kernel_modules()) as counter:
            out, (h_n, c_n) = module(x)
            (out.sum() + h_n.sum() + c_n.sum()).backward()
        return counter.counts

    short, long = launches(8, "sequence"), launches(64, "sequence")
    assert short == long == {"lstm_sequence_forward_kernel": 1, "lstm_sequence_backward_kernel": 1}
    step = launches(8, "step")
    assert step == {"lstm_step_forward_kernel": 8, "lstm_step_backward_kernel": 8}


def lstm_call(proj_size=0, hidden=9, device="cpu"):
    x = torch.randn(3, 2, 4, device=device)
    state = proj_size or hidden
    hx = (torch.zeros(1, 2, state, device=device), torch.zeros(1, 2, hidden, device=device))
    weights = [torch.randn(4 * hidden, 4), torch.randn(4 * hidden, state)]
    if proj_size:
        weights.append(torch.randn(proj_size, hidden))
    return (x, None, hx, weights, False, 1, 0.0, False, False, proj_size)


def test_triton_prefers_sequence_with_and_without_projection():
    skip_unless_runnable("cpu", "triton")
    with seqops.backend("triton"):
        assert dispatch.select("lstm", torch.device("cpu"), *lstm_call()).variant == "sequence"
        assert dispatch.select("lstm", torch.device("cpu"), *lstm_call(proj_size=3)).variant == "sequence"
    with seqops.backend("triton", variant="step"):
        assert dispatch.select("lstm", torch.device("cpu"), *lstm_call()).variant == "step"
    with seqops.backend("triton", variant="sequence"):
        # An op without that variant runs as the backend would.
        cell = (torch.randn(2, 4), torch.randn(2, 9), torch.randn(2, 9), torch.randn(36, 4), torch.randn(36, 9), None, None)
        assert dispatch.select("lstm_cell", torch.device("cpu"), *cell).key == "lstm_cell/triton/step"
    with pytest.raises(ValueError, match="explicit backend"):
        with seqops.backend("auto", variant="step"):
            pass


def test_auto_ranks_sequence_over_step_and_both_as_step_was_against_torch():
    ranked = [(impl.backend, impl.variant) for impl in dispatch._auto_order[("lstm", "cuda")]]
    assert ranked.index(("triton", "sequence")) == ranked.index(("triton", "step")) - 1
    step = dispatch.implementation("lstm/triton/step").priority
    sequence = dispatch.implementation("lstm/triton/sequence").priority
    torch_rank = dispatch.implementation("lstm/torch/composite").priority
    assert set(sequence) == set(step)
    for device_type in step:
        assert (sequence[device_type] > torch_rank.get(device_type, 0)) == (step[device_type] > torch_rank.get(device_type, 0))


def test_every_hidden_size_takes_the_sequence_variant_on_chip_or_not(monkeypatch):
    """No hidden size sends the call to the step variant: past MAX_ON_CHIP_HIDDEN, or with
    more slices than programs, W_hh is re-read every step (plans as for a GPU with
    RECORDED_MULTIPROCESSORS, not the interpreter's one program)."""
    skip_unless_runnable("cpu", "triton")
    from seqops.kernels.recurrent import sequence_grid as grid
    monkeypatch.setattr(grid, "INTERPRETED", False)
    big = grid.MAX_ON_CHIP_HIDDEN[torch.float32] + 1
    with seqops.backend("triton"):
        assert dispatch.select("lstm", torch.device("cpu"), *lstm_call(hidden=big)).variant == "sequence"
    fits = grid.plan(grid.MAX_ON_CHIP_HIDDEN[torch.float32], torch.float32, torch.device("meta"))
    assert fits.on_chip and fits.block_k == grid.MAX_ON_CHIP_HIDDEN[torch.float32]
    for hidden in (big, 768, 16 * grid.RECORDED_MULTIPROCESSORS + 1):
        p = grid.plan(hidden, torch.float32, torch.device("meta"))
        assert not p.on_chip and p.block_k == grid.REREAD_CHUNK
        assert p.programs == min(-(-hidden // grid.SLICE_UNITS), grid.RECORDED_MULTIPROCESSORS)


@pytest.mark.cuda
def test_sequence_rereads_weights_that_do_not_fit_on_chip_on_a_gpu():
    """H = 200 in fp32: 13 programs, W_hh re-read every step, h exchanged across the grid
    barrier of a real GPU; bidirectional, packed, against torch in float64."""
    config = dict(bias=True, batch_first=False, bidirectional=True, proj_size=0, num_layers=1)
    check_sequence("cuda", config, True, T=5, B=3, I=8, H=200)


class _GridRecorder:
    def __init__(self, kernel, grids):
        self.kernel, self.grids = kernel, grids

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


@pytest.mark.parametrize("programs", [2, 3])
def test_sequence_forward_split_over_programs_matches_one_program(monkeypatch, programs):
    """A single step needs no grid barrier, so the interpreter can run the forward kernel
    as a GPU would split it: H = 40 over 3 programs (one slice each, W_hh on chip, h in one
    64-feature chunk) or 2 (program 0 owns slices 0 and 2, W_hh re-read in 16-feature
    chunks, as one program does). Within the error rule against float64; with the same
    chunks, bitwise those of one program, since a unit's arithmetic does not depend on
    which program runs it."""
    skip_unless_runnable("cpu", "triton")
    from seqops.kernels.recurrent import sequence, sequence_grid
    H, B = 40, 5
    xw, h0, c0 = torch.randn(B, 4 * H), torch.randn(B, H), torch.randn(B, H)
    w_hh = (torch.rand(4 * H, H) - 0.5) * 0.5
    one = sequence.lstm_sequence_forward(xw, [B], h0, c0, w_hh, None, False)
    grids = []
    monkeypatch.setattr(sequence_grid, "multiprocessors", lambda device: programs)
    monkeypatch.setattr(sequence, "lstm_sequence_forward_kernel",
                        _GridRecorder(sequence.lstm_sequence_forward_kernel, grids))
    assert sequence_grid.plan(H, xw.dtype, xw.device).on_chip == (programs == 3)
    split = sequence.lstm_sequence_forward(xw, [B], h0, c0, w_hh, None, False)
    assert grids == [(programs,)]
    for name, a, b in zip(("out", "h_n", "c_n", "gates", "cells"), one, split):
        assert programs == 3 or torch.equal(a, b), name

    def step(xw, h0, c0, w_hh):
        i, f, g, o = (xw + h0 @ w_hh.t()).chunk(4, 1)
        c = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    reference = step(xw.double(), h0.double(), c0.double(), w_hh.double())
    theirs = step(xw, h0, c0, w_hh)
    assert_within_torch_error("h", split[0], reference[0], theirs[0])
    assert_within_torch_error("c", split[4], reference[1], theirs[1])


@pytest.mark.parametrize("projected", [False, True], ids=["plain", "projected"])
def test_a_barrier_that_cannot_be_passed_raises_instead_of_hanging(monkeypatch, projected):
    """Programs that are not all resident never meet at a grid barrier. The interpreter
    runs programs one after another, so a grid of 2 over 2 steps is exactly that: program
    0 polls in vain, flags the timeout and finishes; the launcher raises rather than
    return what it computed. (On a GPU the same happens if another kernel holds
    multiprocessors; the limit there is GPU_MAX_SPINS polls.)"""
    skip_unless_runnable("cpu", "triton")
    from seqops.kernels.recurrent import sequence, sequence_grid
    H, P, B = 40, 20 if projected else 40, 3
    xw, h0, c0 = torch.randn(2 * B, 4 * H), torch.randn(B, P), torch.randn(B, H)
    w_hh, w_hr = torch.randn(4 * H, P), (torch.randn(P, H) if projected else None)
    monkeypatch.setattr(sequence_grid, "multiprocessors", lambda device: 2)
    with pytest.raises(RuntimeError, match="lstm_sequence_forward: a grid barrier timed out: its 2 programs"):
        sequence.lstm_sequence_forward(xw, [B, B], h0, c0, w_hh, w_hr, False)
    # One step, unprojected: no barrier at all, so the split grid runs (see above).
    if not projected:
        sequence.lstm_sequence_forward(xw[:B], [B], h0, c0, w_hh, None, False)
    monkeypatch.undo()
    out, h_n, c_n, gates, cells, h_raw = sequence.lstm_sequence_forward(xw, [B, B], h0, c0, w_hh, w_hr, False)
    monkeypatch.setattr(sequence_grid, "multiprocessors", lambda device: 2)
    with pytest.raises(RuntimeError, match="lstm_sequence_backward: a grid barrier timed out"):
        sequence.lstm_sequence_backward(torch.randn_like(out), None, None, out, gates, cells, h_raw, h0, c0, w_hh,
                                        w_hr, [B, B], False)
