"""The static report: every Triton kernel launch seqops's launchers make, compiled for
sm_80 and sm_90 on a machine without a GPU, with what ptxas and the PTX say about each
(registers, spilled bytes, shared memory, tensor-core and async-copy instruction counts).

    python -m benchmarks.static_report            # check (what CI runs)
    python -m benchmarks.static_report --write    # and rewrite the committed report

Run without TRITON_INTERPRET. The committed report
(benchmarks/results/static/triton_kernels.{json,md}) files each build under Triton's own
compile-cache key (kernel sources and everything they call, signature, constants,
options, Triton and ptxas versions), so a check compiles only the launches whose key the
report lacks: those of kernels changed since it was written. The check fails when a
build does not compile, a fixed launch spills registers, a 16-bit attention tile of
64 rows or more has no wgmma on sm_90, or a launch that reads through tensor descriptors
has no TMA load on sm_90 (report.Entry.verdict)."""
