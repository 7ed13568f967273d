"""The CUDA C++ backend (csrc/). No kernels are written yet: it registers only why it cannot
run, so that an explicit choice of it says so."""
from __future__ import annotations

from seqops import dispatch

dispatch.register_backend("cuda", lambda device: "the CUDA C++ backend has no kernels yet (csrc/ is empty)")
