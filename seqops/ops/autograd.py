"""How an op family's torch.library op becomes differentiable everywhere a PyTorch user
differentiates: reverse mode, forward mode, torch.func and torch.compile.

A torch.library custom op carries its backward (register_autograd), which is what
torch.compile traces. Its generated autograd wrapper has no `setup_context` and no `jvp`,
so torch.func transforms refuse it and forward-mode AD sees no formula. Eager calls
therefore go through an autograd.Function built from the same setup_context and backward,
plus a jvp; torch.compile, which cannot trace a user-defined jvp, calls the op itself.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.autograd import forward_ad


def _no_jvp(name: str) -> Callable:
    def jvp(ctx, *tangents):
        raise RuntimeError(f"{name}: forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) is not implemented "
                           "for this op; use reverse mode, or seqops.backend('torch')")

    return jvp


def _differentiating(args: tuple) -> bool:
    """Whether a call with these arguments may be differentiated: reverse mode (grad mode
    on and a tensor that requires grad), forward mode (inside a dual level) or a torch.func
    transform. Else (inference, decoding) the op runs without the autograd.Function, whose
    apply costs more host time than the rest of a small call (it binds the arguments to
    forward's signature through inspect on every call)."""
    if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return True
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def _plain_eager_call(args: tuple) -> bool:
    """Whether a call that will not be differentiated may skip the torch.library op and run
    its body directly: outside torch.compile, torch.jit tracing, every dispatch mode
    (FakeTensorMode, a TorchDispatchMode, export's modes) and torch function mode, on
    plain tensors (or parameters) only. That is, where the op's dispatch could only land
    in the body anyway; it costs tens of microseconds of Python a call (measured: 50 of the
    76 us host time of a small Triton softmax under no_grad, CPU)."""
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0
            or torch._C._is_torch_function_mode_enabled() or torch._C._get_tracing_state() is not None):
        return False
    return all(type(a) in _PLAIN_TENSOR_TYPES for a in args if isinstance(a, torch.Tensor))


_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def op_body(op: Callable) -> Optional[Callable]:
    """The function a torch.library custom op was made from (what its dispatch runs for a
    plain eager call), or None where torch keeps it elsewhere than CustomOpDef._init_fn."""
    body = getattr(op, "_init_fn", None)
    if not callable(body) or any(key is not None for key in getattr(op, "_backend_fns", {})):
        return None  # (kernels registered per device type: the dispatch picks among them)
    return body


def differentiable(name: str, op: Callable, setup_context: Callable, backward: Callable,
                   jvp: Optional[Callable] = None) -> Callable:
    """`op` (a torch.library custom op whose autograd was registered with the same
    setup_context and backward) as a function that every AD mode can differentiate.

    setup_context(ctx, inputs, output) saves what backward and jvp need (jvp's through
    ctx.save_for_forward); backward(ctx, *grads) and jvp(ctx, *input_tangents) follow
    torch.autograd.Function's rules. Without a jvp, forward-mode AD raises a clear error.
    vmap batches the op (the custom op's vmap rule where it has one, else torch's loop).
    """
    body = op_body(op)

    def run(*args):
        """The op, or its body where nothing could tell the two apart (_plain_eager_call,
        and no torch.func transform or forward-mode level, whose tensors the op's own rules
        must see): the forward of a call autograd records, and a call it does not."""
        if (body is not None and not torch._C._are_functorch_transforms_active() and forward_ad._current_level < 0
                and _plain_eager_call(args)):
            return body(*args)
        return op(*args)

    function = type(name, (torch.autograd.Function,), {
        "__doc__": f"{name} for eager calls: torch.func transforms and forward-mode AD.",
        "forward": staticmethod(run),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
        "jvp": staticmethod(jvp if jvp is not None else _no_jvp(name)),
        "generate_vmap_rule": True,
    })

    def apply(*args):
        if torch.compiler.is_compiling() or not _differentiating(args):
            return run(*args)
        return function.apply(*args)

    apply.function = function
    apply.body = body
    return apply


def without_double_backward(name: str, op: Callable) -> Callable:
    """`op`, a backward op whose kernels have no backward of their own, as a function
    that torch.func can take and whose gradient (a double backward) raises clearly."""

    def setup_context(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise RuntimeError(f"{name}: the fused kernels have no double backward (gradients of gradients); use "
                           "seqops.backend('torch') for those")

    return differentiable(name, op, setup_context, backward)


def register_vmap_by_loop(op: Callable) -> None:
    """torch.vmap of `op` (a custom op) as a loop over the vmapped dim, its outputs
    stacked: right for any op, fast for none. For the ops whose batching needs per-sample
    results the kernels cannot give in one launch (weight gradients, a mask's gradient)."""

    def rule(info, in_dims, *args):
        results = []
        for index in range(info.batch_size):
            results.append(op(*(arg.select(dim, index) if dim is not None else arg
                                for arg, dim in zip(args, in_dims))))
        if isinstance(results[0], torch.Tensor):
            return torch.stack(results), 0
        stacked = tuple(torch.stack(outputs) for outputs in zip(*results))
        return stacked, (0,) * len(stacked)

    torch.library.register_vmap(op, rule)


def to_front(tensor: torch.Tensor, dim: Optional[int], batch_size: int) -> torch.Tensor:
    """`tensor` with its vmapped dim first, or, when it has none, expanded to one."""
    if dim is None:
        return tensor.expand(batch_size, *tensor.shape)
    return tensor.movedim(dim, 0)
