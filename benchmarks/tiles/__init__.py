"""The attention tile table (kernels/tiles.py), generated from a recorded measurement.

Two steps, each one command (from the repository root, without TRITON_INTERPRET):

    python -m benchmarks.tiles measure [--jobs 2] [--archs 90 80] [--all-stages] [--kernels K ...]
        compiles every candidate tile (kernels/attention/tuning.py: CANDIDATE_TILES) of
        each autotuned attention kernel, for each class of launch the table is keyed by
        (dtype class, head-dim class, plain or heavy) that the kernels admit, at the
        kernel's deepest pipeline (--all-stages: at every num_stages it is tried at), for
        each arch, through Triton and ptxas (no GPU needed), and writes what each compiled
        to (registers, spilled bytes, shared memory, or the compile error) to
        benchmarks/results/static/attention_tiles.json (fp32 tiles of more than 64 x 64
        scores are recorded as not compiled: see measure.py). Slow: about 900 compiles,
        an hour on 2 cores; rerun it when the kernels, the candidates or the classes
        change, then generate. --kernels K ...: measure only those kernels and replace
        their builds in the committed measurement (the others', and the command and source
        digest they were measured at, are kept, the latter under "earlier"). The fused
        attention backward is compiled only at the tiles the dK/dV table keeps
        (measure.BOUNDED_BY): it holds all the dK/dV kernel holds and a dQ tile more.

    python -m benchmarks.tiles generate
        reads that file and writes kernels/tiles.py: for each kernel and class, the tiles
        that pass the rule in generate.RULE (they compiled for sm_90 at the kernel's
        deepest pipeline, spilling nothing and fitting its shared memory). Instant.

tests/test_tiles.py regenerates the table from the committed measurement and checks that
kernels/tiles.py is exactly that, and that the measurement is of the candidates, stages
and classes tuning.py has now.
"""
