"""A call nothing will differentiate (inference, decoding) runs the body of its
torch.library op directly, skipping the op's dispatch, which cost most of a small call's
host time (seqops/ops/autograd.py); every other call goes through the op: with gradients
to take, under torch.compile, a dispatch mode (FakeTensorMode, a TorchDispatchMode), a
torch.func transform, or on a tensor subclass. Both ways give the same bits."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import seqops
from devices import skip_unless_runnable
from seqops.ops.additive import op as additive_op
from seqops.ops.attention import op as attention_op
from seqops.ops.recurrent import hidden_cell_op, hidden_layer_op
from seqops.ops.recurrent import op as recurrent_op
from seqops.ops.softmax import op as softmax_op


def dispatched_seqops_ops(run):
    """The names of the seqops torch.library ops the profiler saw dispatched while run()."""
    with torch.profiler.profile() as profile:
        run()
    return {event.name for event in profile.events() if event.name.startswith("seqops::")}


class SeenOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(str(func))
        return func(*args, **(kwargs or {}))


def test_every_op_family_keeps_the_body_of_its_op():
    """If a torch release stops keeping a custom op's function where op_body finds it,
    the fast path quietly ends: this says so."""
    functions = [softmax_op.differentiable_forward, softmax_op.differentiable_backward,
                 attention_op.differentiable_forward, additive_op.differentiable_forward,
                 recurrent_op.differentiable_cell, recurrent_op.differentiable_layer]
    functions += [cell.differentiable for cell in hidden_cell_op.CELLS.values()]
    functions += [layer.differentiable for layer in hidden_layer_op.LAYERS.values()]
    assert all(f.body is not None for f in functions)


def test_plain_calls_run_the_body_with_gradients_or_without():
    """Without gradients the body runs alone; with them, inside the autograd.Function that
    records the call (its forward and backward both skip the ops' dispatch), and the
    gradient is the op's."""
    skip_unless_runnable("cpu", "triton")
    x = torch.randn(5, 37)
    grad = torch.randn(5, 37)
    with seqops.backend("triton"):
        assert dispatched_seqops_ops(lambda: seqops.softmax(x, -1)) == set()
        with torch.no_grad():
            assert dispatched_seqops_ops(lambda: seqops.softmax(x.requires_grad_(), -1)) == set()
        fast = {}
        assert dispatched_seqops_ops(lambda: fast.update(
            grad=torch.autograd.grad(seqops.softmax(x, -1), x, grad)[0])) == set()
        with SeenOps() as mode:
            (dispatched,) = torch.autograd.grad(seqops.softmax(x, -1), x, grad)
    assert {"seqops.softmax.default", "seqops.softmax_backward.default"} <= mode.seen, mode.seen
    assert torch.equal(fast["grad"], dispatched)


def test_a_dispatch_mode_sees_the_op_and_gets_the_same_bits():
    skip_unless_runnable("cpu", "triton")
    q, k, v = (torch.randn(2, 3, 9, 16) for _ in range(3))
    with seqops.backend("triton"):
        fast = seqops.scaled_dot_product_attention(q, k, v, is_causal=True)
        with SeenOps() as mode:
            dispatched = seqops.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert any(name.startswith("seqops.attention_forward") for name in mode.seen), mode.seen
    assert torch.equal(fast, dispatched)


@pytest.mark.parametrize("subclass", ["parameter", "subclass"])
def test_only_plain_tensors_and_parameters_take_the_fast_path(subclass):
    skip_unless_runnable("cpu", "triton")

    class Marked(torch.Tensor):
        pass

    x = torch.randn(4, 33)
    x = torch.nn.Parameter(x, requires_grad=False) if subclass == "parameter" else x.as_subclass(Marked)
    with seqops.backend("triton"):
        seen = dispatched_seqops_ops(lambda: seqops.softmax(x, -1))
    assert seen == (set() if subclass == "parameter" else {"seqops::softmax"})
