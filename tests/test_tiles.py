"""The attention tile table (kernels/tiles.py) is the one generated from the committed
measurement (benchmarks/results/static/attention_tiles.json) by benchmarks/tiles, and that
measurement is of the candidates, pipeline depths and classes the kernels have now.
Nothing here compiles: the measurement is recorded, and regenerating is instant."""
from pathlib import Path

import pytest

from benchmarks.tiles import generate

ROOT = Path(__file__).resolve().parents[1]


def test_tile_table_is_generated_from_the_recorded_measurement():
    measurement = generate.load()
    expected = generate.render(measurement, generate.MEASUREMENT.relative_to(ROOT).as_posix())
    assert generate.TABLE.read_text() == expected, (
        "kernels/tiles.py is not the table generated from the recorded measurement: "
        "run `python -m benchmarks.tiles generate` (and, if the kernels changed, `... measure` first)")


def test_measurement_is_of_the_current_candidates_and_classes():
    """A measurement of other candidates, depths or classes than tuning.py's would
    generate a table for kernels that no longer exist; every (kernel, class, candidate)
    has its one build at the depth and arch the rule reads."""
    pytest.importorskip("triton.backends.nvidia")
    from benchmarks.tiles import measure
    from seqops.kernels.attention import tuning

    measurement = generate.load()
    assert [tuple(tile) for tile in measurement["candidate_tiles"]] == tuning.CANDIDATE_TILES
    assert {kernel: tuple(stages) for kernel, stages in measurement["stages"].items()} == tuning.STAGES
    assert [tuple(key) for key in measurement["classes"]] == measure.admitted_classes()
    read_by_rule = sorted((b["kernel"], tuple(b["class"]), tuple(b["tile"])) for b in measurement["builds"]
                          if b["arch"] == generate.RULE_ARCH and b["stages"] == max(tuning.STAGES[b["kernel"]]))
    assert read_by_rule == sorted((kernel, key, tile) for kernel in tuning.STAGES
                                  for key in measure.admitted_classes() for tile in tuning.CANDIDATE_TILES)


def build(kernel, tile, stages=2, arch=90, spilled=0, shared=1024, error=None, key=("16-bit", 64, "plain")):
    return {"kernel": kernel, "class": list(key), "tile": list(tile), "stages": stages, "arch": arch,
            "registers": 128, "spilled_bytes": spilled, "shared_bytes": shared, "error": error}


SYNTHETIC = {
    "command": "python -m benchmarks.tiles measure --archs 90 80",
    "triton": "0.0",
    "stages": {"forward": [1, 2], "backward_dq": [1, 2]},
    "builds": [
        build("forward", (64, 64, 4)),
        build("forward", (16, 32, 4), key=("fp32", 128, "heavy")),
        build("forward", (32, 32, 4)),
        build("forward", (32, 32, 4), arch=80, spilled=64),          # sm_80 is recorded, not ruled on
        build("forward", (128, 64, 8), spilled=16),                  # spills on sm_90
        build("forward", (128, 64, 8), stages=1),                    # fits only at a shallower depth
        build("forward", (128, 128, 8), error="CompilationError: x"),
        build("forward", (64, 128, 8), shared=generate.RULE_SHARED_BYTES + 1),
        build("forward", (64, 128, 4), shared=generate.RULE_SHARED_BYTES),
        build("backward_dq", (16, 16, 4), spilled=8, key=("fp32", 128, "plain")),  # a class left with none
    ],
}


def test_rule_keeps_tiles_that_fit_sm90_at_the_deepest_pipeline():
    assert generate.tile_table(SYNTHETIC) == {
        "forward": {("16-bit", 64, "plain"): [(32, 32, 4), (64, 64, 4), (64, 128, 4)],
                    ("fp32", 128, "heavy"): [(16, 32, 4)]},
        "backward_dq": {},
    }


def test_rendered_table_is_the_rule_s_table_with_its_provenance():
    source = generate.render(SYNTHETIC, "somewhere/measured.json")
    namespace: dict = {}
    exec(compile(source, "tiles.py", "exec"), namespace)
    assert namespace["TILES"] == generate.tile_table(SYNTHETIC)
    header = namespace["__doc__"]
    assert "somewhere/measured.json" in header and generate.COMMAND in header and SYNTHETIC["command"] in header
    assert " ".join(header.split()).endswith(generate.RULE + ".")
