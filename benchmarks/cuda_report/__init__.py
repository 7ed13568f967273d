"""The CUDA instance report: every instance file of csrc/ (csrc/<family>/instances/*.cu, one
CuTe template instantiation each, a minute or so of nvcc apiece) compiled for sm_80 and
sm_90a on a machine without a GPU, with what ptxas says of each kernel in it (registers,
shared memory, stack, spilled bytes), and the counts of its tensor-core and copy instructions read from
its SASS (cuobjdump -sass; the sm_90a attention forward must hold wgmma).

    python -m benchmarks.cuda_report            # check (what CI runs)
    python -m benchmarks.cuda_report --write    # and rewrite the committed report

The committed report (benchmarks/results/static/cuda_instances.{json,md}) files each
object under seqops._ext.object_key (the file's text, csrc's headers, the CUTLASS and
nvcc versions, the options and the arch), so a check compiles only the instance files
changed since it was written. The check fails when one does not compile, has no kernel,
spills registers or draws a ptxas warning. The rest of csrc/ is compiled, linked and
imported on every CI run (tests/test_cuda_build.py)."""
