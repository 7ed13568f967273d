"""seqops.lstm_cell and seqops.nn.LSTM on the Triton backend given tensors that are views:
strided, transposed (column-major), expanded (stride 0) and offset into their storage, as
parameters, inputs and initial states, and output gradients that are expanded. The
kernels must index every tensor by its strides. Forward values and the gradient of every
tensor the op receives, against torch's own op in float64, within the error rule of
tests/accuracy.py (2x torch's own error in the same dtype)."""
import math

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import seqops
from accuracy import PooledResult, trials_needed
from devices import DEVICES, skip_unless_runnable


def layout(kind: str, shape: tuple) -> tuple:
    """(the shape of a leaf tensor, a function making from it the view of `shape` that the
    op receives)."""
    if kind == "contiguous":
        return shape, lambda t: t
    if kind == "transposed":  # column-major, as w.t().contiguous().t()
        return shape[::-1], lambda t: t.t()
    if kind == "strided":  # every other entry of the last dim, starting one entry in
        return (*shape[:-1], 2 * shape[-1] + 1), lambda t: t[..., 1::2]
    if kind == "offset":  # contiguous, but 3 entries into its storage
        return (math.prod(shape) + 3,), lambda t: t[3:].view(shape)
    if kind == "expanded-rows":  # stride 0 in every dim but the last
        return (1,) * (len(shape) - 1) + shape[-1:], lambda t: t.expand(shape)
    if kind == "expanded-columns":  # stride 0 in the last dim (a 1-D tensor: one value)
        return shape[:-1] + (1,), lambda t: t.expand(shape)
    raise ValueError(kind)


def draw(shape, parameter, device):
    """A fresh leaf: parameters uniform in [-0.5, 0.5] as tests/test_lstm.py draws them (gates
    away from saturation, so that an error is the sum of many roundings and its ratio to
    torch's is stable), data standard normal."""
    if parameter:
        return torch.rand(shape, dtype=torch.float64, device=device) - 0.5
    return torch.randn(shape, dtype=torch.float64, device=device)


def pooled_results(make_leaves, run, dtype, loss="weighted", min_trials=1) -> dict:
    """make_leaves() -> fresh float64 leaf tensors; run(leaves, ours) -> (the outputs of
    the op, the views of the leaves it received): seqops' op on the Triton backend when
    `ours`, else torch's own. Returns every output and the gradient of every tensor the
    op received (what the kernels compute; autograd carries it on to the leaves) by name,
    as PooledResults of ours against float64 torch (the reference) and torch in `dtype`
    (the yardstick), pooled over as many trials as small results need, at least
    min_trials. loss "weighted": random weights per output; "sum": plain sums, so that
    the gradients reaching the op are expanded."""
    pooled, trials, trial = {}, min_trials, 0
    while trial < trials:
        base = make_leaves()
        results = {}
        for name, cast, ours in (("reference", torch.float64, False), ("torch", dtype, False), ("ours", dtype, True)):
            leaves = [t.detach().to(cast).requires_grad_() for t in base]
            with seqops.backend("triton"):
                outs, received = run(leaves, ours)
            if loss == "sum":
                total = sum(o.sum() for o in outs)
            else:
                weights = torch.Generator(device=outs[0].device).manual_seed(1000 + trial)
                total = sum((o.double() * torch.randn(o.shape, generator=weights, dtype=torch.float64,
                                                      device=o.device)).sum() for o in outs)
            grads = torch.autograd.grad(total, received)
            names = [f"output {i}" for i in range(len(outs))] + [f"d input {i}" for i in range(len(received))]
            results[name] = dict(zip(names, list(outs) + list(grads)))
        for name, out in results["ours"].items():
            pooled.setdefault(name, PooledResult()).add(name, out, results["reference"][name], results["torch"][name])
        trials = max(trials, trials_needed(results["ours"]))
        trial += 1
    return pooled


def compare(make_leaves, run, dtype, reduced_length, loss="weighted", min_trials=1):
    """The error rule for every result of pooled_results."""
    for name, result in pooled_results(make_leaves, run, dtype, loss, min_trials).items():
        result.check("triton", name, dtype, reduced_length)


# ------------------------------------------------------------------------- the cell

# Two row blocks of the interpreter's 16 (the bias gradient is summed per row block), one of 32 units.
B, I, H = 19, 11, 29
CELL_SHAPES = {"input": (B, I), "h": (B, H), "c": (B, H), "w_ih": (4 * H, I), "w_hh": (4 * H, H),
               "b_ih": (4 * H,), "b_hh": (4 * H,)}

CELL_LAYOUTS = {
    "biases-strided": dict(b_ih="strided", b_hh="strided"),
    "biases-expanded": dict(b_ih="expanded-columns", b_hh="expanded-columns"),
    "biases-offset": dict(b_ih="offset", b_hh="offset"),
    "weights-transposed": dict(w_ih="transposed", w_hh="transposed"),
    "weights-strided-offset": dict(w_ih="strided", w_hh="offset"),
    "weights-expanded": dict(w_ih="expanded-columns", w_hh="expanded-columns"),
    "states-expanded": dict(h="expanded-rows", c="expanded-rows"),
    "inputs-strided-transposed-offset": dict(input="strided", h="transposed", c="offset"),
    "everything": dict(input="transposed", h="strided", c="expanded-rows", w_ih="offset", w_hh="transposed",
                       b_ih="expanded-columns", b_hh="strided"),
}


def cell_case(device, kinds):
    """make_leaves and run for lstm_cell with its arguments laid out as `kinds` says
    (argument name -> layout; contiguous where it says nothing)."""
    shapes_and_views = [layout(kinds.get(name, "contiguous"), shape) for name, shape in CELL_SHAPES.items()]

    def make():
        return [draw(shape, name.startswith(("w_", "b_")), device)
                for name, (shape, _) in zip(CELL_SHAPES, shapes_and_views)]

    def views(leaves):
        return [view(leaf) for leaf, (_, view) in zip(leaves, shapes_and_views)]

    return make, run_cell(views)


def run_cell(views):
    def run(leaves, ours):
        received = views(leaves)
        x, h, c, w_ih, w_hh, b_ih, b_hh = received
        return (seqops.lstm_cell if ours else torch.lstm_cell)(x, (h, c), w_ih, w_hh, b_ih, b_hh), received

    return run


@pytest.mark.parametrize("case", CELL_LAYOUTS)
@pytest.mark.parametrize("device", DEVICES)
def test_cell_views(device, case):
    skip_unless_runnable(device, "triton")
    make, run = cell_case(device, CELL_LAYOUTS[case])
    compare(make, run, torch.float32, I + H)


@pytest.mark.parametrize("dtype, loss", [(torch.bfloat16, "weighted"), (torch.float32, "sum"), (torch.float16, "sum")],
                         ids=["bfloat16", "float32-expanded-output-gradients", "float16-expanded-output-gradients"])
@pytest.mark.parametrize("device", DEVICES)
def test_cell_views_reduced_precision_and_expanded_output_gradients(device, dtype, loss):
    """Every argument a view, in bf16 and fp16 too; with loss "sum" the gradients reaching
    the backward kernel are expanded (stride 0)."""
    skip_unless_runnable(device, "triton")
    make, run = cell_case(device, CELL_LAYOUTS["everything"])
    compare(make, run, dtype, I + H, loss)


@pytest.mark.parametrize("device", DEVICES)
def test_cell_biases_interleaved_in_one_tensor(device):
    """The report that found this: b_ih = big[::2], b_hh = big[1::2]."""
    skip_unless_runnable(device, "triton")

    def make():
        return [draw(shape, index >= 3, device)
                for index, shape in enumerate(((B, I), (B, H), (B, H), (4 * H, I), (4 * H, H), (8 * H,)))]

    def views(leaves):
        return [*leaves[:5], leaves[5][::2], leaves[5][1::2]]

    compare(make, run_cell(views), torch.float32, I + H)


# ------------------------------------------------------------------------- the LSTM


def parameter_shapes(input_size, hidden_size, **config):
    return {name: tuple(p.shape) for name, p in torch.nn.LSTM(input_size, hidden_size, **config).named_parameters()}


def run_lstm(input_size, hidden_size, config, views, packed_lengths=None):
    """run(leaves, ours) for torch.nn.LSTM or seqops.nn.LSTM whose parameters are replaced
    (torch.func.functional_call) by the views; views(leaves) -> (x, h0, c0, parameters by
    name); x is packed (after the view) given packed_lengths."""
    theirs = torch.nn.LSTM(input_size, hidden_size, **config)
    mine = seqops.nn.LSTM(input_size, hidden_size, **config)

    def run(leaves, ours):
        x, h0, c0, parameters = views(leaves)
        module = (mine if ours else theirs).to(x.device)
        packed = x if packed_lengths is None else pack_padded_sequence(
            x, packed_lengths, batch_first=config.get("batch_first", False), enforce_sorted=False)
        out, (h_n, c_n) = functional_call(module, parameters, (packed, (h0, c0)))
        outs = (out.data if packed_lengths is not None else out), h_n, c_n
        return outs, [x, h0, c0, *parameters.values()]

    return run


def lstm_case(device, config, input_size, hidden_size, T, batch, x_kind, state_kinds, parameter_kind):
    """make_leaves and views for an LSTM whose input has layout x_kind (or
    "swapped-batch-and-time": batch-major under batch_first as the transpose of a
    time-major tensor, time-major as the transpose of a batch-major one), initial states
    (h0, c0) layouts state_kinds, and each parameter the layout parameter_kind(its name)."""
    directions = 2 if config.get("bidirectional") else 1
    state = config.get("proj_size") or hidden_size
    states = (config.get("num_layers", 1) * directions, batch)
    x_shape = (batch, T, input_size) if config.get("batch_first") else (T, batch, input_size)
    if x_kind == "swapped-batch-and-time":  # batch_first's dims as a transpose of the other order
        x_layout = (x_shape[1], x_shape[0], x_shape[2]), lambda t: t.transpose(0, 1)
    else:
        x_layout = layout(x_kind, x_shape)
    layouts = [x_layout, layout(state_kinds[0], (*states, state)), layout(state_kinds[1], (*states, hidden_size))]
    names = list(parameter_shapes(input_size, hidden_size, **config).items())
    layouts += [layout(parameter_kind(name), shape) for name, shape in names]

    def make():
        return [draw(shape, index >= 3, device) for index, (shape, _) in enumerate(layouts)]

    def views(leaves):
        made = [view(leaf) for leaf, (_, view) in zip(leaves, layouts)]
        return made[0], made[1], made[2], {name: t for (name, _), t in zip(names, made[3:])}

    return make, views


# Two layers, both directions, a projection. Sizes within one interpreter tile (32 hidden
# units, 16 rows), so that they cost no more launches than smaller ones, yet large enough
# that every result has a few hundred entries: the error ratio of small samples is noise.
DEEP = dict(num_layers=2, bidirectional=True, proj_size=13)
SIZES = (13, 29, 5, 16)  # input_size, hidden_size, steps, batch
# Trials pooled per check: an LSTM's errors come from fewer independent roundings than its
# entries (they flow through the same states), so one trial's ratio is still noisy.
LSTM_TRIALS = 2


def unsorted_lengths(steps, batch):
    """Lengths for packing, unsorted and including `steps`."""
    return torch.tensor([max(1, steps - 2 * (i % 3)) for i in range(batch)][::-1])


@pytest.mark.parametrize("weight_kind, bias_kind, batch_first, packed", [
    ("transposed", "strided", False, False), ("transposed", "strided", True, True),
    ("strided", "offset", False, True), ("strided", "offset", True, False),
], ids=["transposed-strided-padded", "transposed-strided-batch_first-packed", "strided-offset-packed",
        "strided-offset-batch_first-padded"])
@pytest.mark.parametrize("device", DEVICES)
def test_lstm_parameter_views_and_strided_inputs(device, weight_kind, bias_kind, batch_first, packed):
    """Every weight (w_hr included) and bias a view; the input strided, or under batch_first
    batch-major as a transpose of a time-major tensor; the initial states strided and
    offset."""
    skip_unless_runnable(device, "triton")
    I_, H_, T, B_ = SIZES
    config = dict(DEEP, batch_first=batch_first)
    x_kind = "swapped-batch-and-time" if batch_first else "strided"
    make, views = lstm_case(device, config, I_, H_, T, B_, x_kind, ("strided", "offset"),
                            lambda name: bias_kind if name.startswith("bias") else weight_kind)
    lengths = unsorted_lengths(T, B_) if packed else None
    compare(make, run_lstm(I_, H_, config, views, lengths), torch.float32, H_, min_trials=LSTM_TRIALS)


@pytest.mark.parametrize("loss", ["weighted", "sum"])
@pytest.mark.parametrize("device", DEVICES)
def test_lstm_expanded_initial_states_and_recurrent_weights(device, loss):
    """h0, c0 = torch.zeros(1, 1, H).expand(L * D, B, H) as a user writes it (with random
    values here), read by both layers from one storage; w_hh with stride 0 along its
    columns, which the step kernels read (the other weights stay dense: a model whose
    every weight has equal columns is so symmetric that its errors cancel or not by
    chance, and no ratio of them is stable). loss "sum": the gradients reaching the
    backward (output, h_n, c_n) are expanded."""
    skip_unless_runnable(device, "triton")
    I_, H_, _, B_ = SIZES
    config = dict(num_layers=2, proj_size=DEEP["proj_size"])
    make, views = lstm_case(device, config, I_, H_, 3, B_, "contiguous", ("expanded-rows", "expanded-rows"),
                            lambda name: "expanded-columns" if name.startswith("weight_hh") else "contiguous")
    compare(make, run_lstm(I_, H_, config, views), torch.float32, H_, loss, min_trials=LSTM_TRIALS)
