"""The torch.compile(fullgraph=True) check the ops' registration tests share: a function
of seqops ops compiles without a graph break and gives eager's output and gradients."""
import torch

import seqops

COMPILERS = ["aot_eager", "inductor"]
COMPILE_BACKENDS = ["triton", "torch", "reference"]


def assert_compiled_matches_eager(fn, args, wrt, backend, compiler, **tolerance):
    """fn(*args) eager and compiled by `compiler` under seqops `backend`: outputs, and the
    gradients w.r.t. `wrt` for one random output gradient, agree within `tolerance`
    (torch.testing.assert_close's rtol/atol; its defaults when not given)."""
    torch._dynamo.reset()
    with seqops.backend(backend):
        expected = fn(*args)
        out = torch.compile(fn, fullgraph=True, backend=compiler)(*args)
    torch.testing.assert_close(out, expected, **tolerance)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, wrt, grad), torch.autograd.grad(expected, wrt, grad),
                               **tolerance)
