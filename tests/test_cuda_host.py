"""Everything of the CUDA C++ backend that is not a kernel, checked without a GPU: the
dtype code table, launch geometry per row length, vector-load alignment, the plain values
filled from strided tensors, the extension's finding/building rules, setup.py's opt-in
build, and the backend's registration."""
import runpy
import sys
from pathlib import Path

import pytest
import setuptools
import torch

import seqops
from cuda_build import ONE_BUILD, built
from seqops import _ext, dispatch
from seqops.backends import cuda_softmax
from seqops.backends.cuda_values import DTYPE_CODES
from seqops.kernels.layout import softmax_row_operands

ROOT = Path(__file__).resolve().parent.parent
pytestmark = ONE_BUILD


# -- tables and geometry (through the compiled module's host code) --

def test_dtype_codes_agree_with_the_extension():
    _, module = built()
    assert module.dtype_codes() == {str(dtype).removeprefix("torch."): code for dtype, code in DTYPE_CODES.items()}


@pytest.mark.parametrize("n_cols, kernel, threads, per_lane", [
    (1, "warp_per_row", 128, 4), (128, "warp_per_row", 128, 4), (129, "warp_per_row", 128, 32),
    (1024, "warp_per_row", 128, 32), (1025, "block_per_row", 96, 0), (4096, "block_per_row", 256, 0),
    (16384, "block_per_row", 1024, 0), (16385, "online", 512, 0), (10**6, "online", 512, 0),
])
def test_launch_geometry_per_row_length(n_cols, kernel, threads, per_lane):
    _, module = built()
    plan = module.softmax_plan(37, n_cols)
    assert (plan["kernel"], plan["threads"], plan["values_per_lane"]) == (kernel, threads, per_lane)
    if kernel == "warp_per_row":
        # Four rows a block, a warp each; every column of a row has a lane slot.
        assert plan["rows_per_block"] == 4 and plan["blocks"] == 10 and 32 * per_lane >= n_cols
    else:
        assert plan["rows_per_block"] == 1 and plan["blocks"] == 37
    if kernel == "block_per_row":
        # Two chunks of 8 columns a thread cover the row, with less than a warp to spare.
        assert threads % 32 == 0 and threads * 16 >= n_cols > (threads - 32) * 16


@pytest.mark.parametrize("n_cols, kernel, threads", [
    (1024, "warp_per_row", 128), (1025, "block_per_row", 96), (4096, "block_per_row", 256),
    (4097, "online", 512), (16384, "online", 512),
])
def test_backward_geometry_holds_two_tensors_in_blocks_of_at_most_256(n_cols, kernel, threads):
    _, module = built()
    plan = module.softmax_plan(37, n_cols, backward=True)
    assert (plan["kernel"], plan["threads"]) == (kernel, threads)


def test_online_grid_keeps_the_rows_in_flight_within_half_the_l2():
    """As the Triton online kernels' bound (kernels/softmax/rows.py, online_programs), on an
    H100's or H200's 50 MiB and 132 SMs; the kernels stride over the rows past it."""
    _, module = built()
    gpu = dict(l2_bytes=50 * 2**20, multiprocessors=132)
    # fp32 in and out, 20000 columns: 160000 bytes a row; half of 50 MiB holds 163 rows.
    assert module.softmax_plan(4096, 20000, col_bytes=8, **gpu)["blocks"] == 163
    assert module.softmax_plan(100, 20000, col_bytes=8, **gpu)["blocks"] == 100
    # The backward's three tensors at 65536 fp32 columns: 33 rows, a quarter of the SMs: bounded.
    backward = module.softmax_plan(4096, 65536, backward=True, col_bytes=12, **gpu)
    assert (backward["kernel"], backward["blocks"], backward["splits"]) == ("online", 33, 1)
    # Rows held whole in a block, or an unknown GPU: a block a row.
    assert module.softmax_plan(4096, 16384, col_bytes=8, **gpu)["blocks"] == 4096
    assert module.softmax_plan(4096, 20000, col_bytes=8)["blocks"] == 4096


def test_rows_past_the_bound_split_into_parts_that_fit_the_l2_side_by_side():
    """As the Triton kernels' split_rows (same sizes: 4096-column steps, at most a part an
    SM), where the bound would leave under a quarter of the SMs busy."""
    _, module = built()
    gpu = dict(l2_bytes=50 * 2**20, multiprocessors=132)
    # fp32 in and out, 2**17 columns: 6 parts of 24576, 22 rows (132 blocks) at once.
    plan = module.softmax_plan(4096, 2**17, col_bytes=8, **gpu)
    assert (plan["kernel"], plan["splits"], plan["chunk"], plan["blocks"]) == ("online", 6, 24576, 132)
    assert module.softmax_plan(5, 2**17, col_bytes=8, **gpu)["blocks"] == 30  # 5 rows: their 30 parts at once
    # The backward's 12 bytes a column: 8 parts of 16384, 16 rows (128 blocks) at once.
    plan = module.softmax_plan(4096, 2**17, backward=True, col_bytes=12, **gpu)
    assert (plan["splits"], plan["chunk"], plan["blocks"]) == (8, 16384, 128)
    # More parts than SMs would be needed: a block a row, read twice.
    plan = module.softmax_plan(4096, 2**23, col_bytes=8, **gpu)
    assert (plan["splits"], plan["blocks"]) == (1, 4096)


def test_launch_geometry_caps_the_grid_and_strides_over_the_rest():
    _, module = built()
    assert module.softmax_plan(2**40, 70000)["blocks"] == 2**30
    assert module.softmax_plan(0, 10)["blocks"] == 0


def test_vector_loads_only_where_every_row_is_aligned():
    _, module = built()
    aligned = 1 << 20
    assert module.rows_vector_aligned(aligned, 0, 64, 8, 1, 2, 16)          # bf16 rows of 8
    assert not module.rows_vector_aligned(aligned, 0, 64, 9, 1, 2, 16)      # 18-byte row stride
    assert not module.rows_vector_aligned(aligned + 2, 0, 0, 8, 1, 2, 16)   # an offset view
    assert not module.rows_vector_aligned(aligned, 0, 0, 8, 2, 2, 16)       # strided columns
    assert module.rows_vector_aligned(aligned, 0, 0, 4, 1, 4, 16)           # fp32 rows of 4
    assert module.rows_vector_aligned(aligned + 8, 0, 0, 8, 1, 1, 8)        # the uint8 mask
    assert module.rows_vector_aligned(aligned, 0, 0, 0, 1, 2, 16)           # one row broadcast


# -- plain values from strided tensors (pure Python, no build needed) --

def gathered_rows(tensor: torch.Tensor, values: dict, name: str) -> torch.Tensor:
    """[n_rows, n_cols] read from tensor's storage exactly as the kernels address it:
    the pointer, then row (a, b, c) and column strides."""
    storage = torch.empty(0, dtype=tensor.dtype).set_(tensor.untyped_storage())
    base = (values[name] - storage.data_ptr()) // tensor.element_size()
    sa, sb, sc, scol = values[f"{name}_strides"]
    rows = torch.arange(values["n_rows"])
    c, rest = rows % values["rows_c"], rows // values["rows_c"]
    offsets = base + (rest // values["rows_b"]) * sa + (rest % values["rows_b"]) * sb + c * sc
    offsets = offsets[:, None] + torch.arange(values["n_cols"])[None, :] * scol
    return storage[offsets]


@pytest.mark.parametrize("case", ["contiguous", "transposed", "sliced", "dim_not_last", "zero_dim"])
def test_forward_values_address_the_tensors_in_place(case):
    base = torch.randn(4, 6, 9, 10)
    x, dim = {
        "contiguous": (base, 3),
        "transposed": (base.transpose(1, 3), 3),
        "sliced": (base[:, 1:5, ::2, 3:], 3),
        "dim_not_last": (base.permute(0, 2, 1, 3), 1),
        "zero_dim": (torch.tensor(2.5), 0),
    }[case]
    y = torch.empty(x.shape, dtype=torch.bfloat16)
    values = cuda_softmax.forward_values(x, y, None, dim, 0.5, False)
    assert values["x"] == x.data_ptr(), "an expressible layout is read in place, not copied"
    assert values["x_dtype"] == 0 and values["y_dtype"] == 2 and values["mask"] == 0 and values["scale"] == 0.5
    rows = x.movedim(dim, -1).reshape(-1, x.shape[dim] if x.dim() else 1)
    assert torch.equal(gathered_rows(x, values, "x"), rows)
    y.copy_(torch.arange(y.numel()).reshape(y.shape))
    assert torch.equal(gathered_rows(y, values, "y"), y.movedim(dim, -1).reshape(rows.shape))


def test_a_layout_that_does_not_collapse_is_copied_once():
    x = torch.randn(3, 4, 5, 6, 7).permute(2, 0, 4, 1, 3)  # leading dims merge to four, not three
    y = torch.empty(x.shape)
    values = cuda_softmax.forward_values(x, y, None, 4, 1.0, False)
    assert values["x"] != x.data_ptr() and values["x_strides"] == values["y_strides"]
    # The values hold the copy (it must outlive the launch); gather from it through y's layout.
    copy = values.operands[0]
    assert copy.data_ptr() == values["x"]
    assert torch.equal(gathered_rows(copy, values, "x"), x.reshape(-1, 6))


def test_mask_broadcast_and_causal_reach_the_kernels_as_strides_and_causal_rows():
    x = torch.randn(2, 3, 5, 7)
    mask = torch.rand(5, 7) > 0.5
    values = cuda_softmax.forward_values(x, torch.empty_like(x), mask, 3, 1.0, True)
    assert values["causal_rows"] == 5 and values["mask"] == mask.data_ptr()
    assert values["mask_strides"] == (0, 0, 7, 1), "the mask's batch dims broadcast through stride 0"
    assert torch.equal(gathered_rows(mask.view(torch.uint8), values, "mask").bool(), mask.expand(x.shape).reshape(-1, 7))
    # Causal along a dim other than the last becomes part of the mask.
    (_, _), mask_rows, causal_rows, layout = softmax_row_operands([x, torch.empty_like(x)], None, True, 2, target=1)
    assert causal_rows == 0
    values = {"mask": mask_rows.data_ptr(), "mask_strides": layout.strides[2], "n_rows": layout.n_rows,
              "n_cols": layout.n_cols, "rows_b": layout.rows_b, "rows_c": layout.rows_c}
    keep = torch.ones(5, 7, dtype=torch.bool).tril().expand(x.shape).movedim(2, -1).reshape(-1, 5)
    assert torch.equal(gathered_rows(mask_rows, values, "mask").bool(), keep)


def test_backward_values_address_each_tensor_with_its_own_strides():
    y = torch.randn(6, 11, 13).softmax(-1).transpose(0, 1)
    grad_y = torch.randn(13, 11, 6).permute(1, 2, 0)
    dx = torch.empty(y.shape, dtype=torch.float16)
    values = cuda_softmax.backward_values(grad_y, y, dx, None, 1, 2.0, False)
    assert (values["dy"], values["y"], values["dx"]) == (grad_y.data_ptr(), y.data_ptr(), dx.data_ptr())
    assert values["dx_dtype"] == 1 and values["mask"] == 0
    assert torch.equal(gathered_rows(grad_y, values, "dy"), grad_y.movedim(1, -1).reshape(-1, 6))
    assert torch.equal(gathered_rows(y, values, "y"), y.movedim(1, -1).reshape(-1, 6))


@pytest.mark.parametrize("batch, hidden, row_blocks, unit_blocks", [
    (1, 1, 1, 1), (16, 32, 1, 1), (17, 33, 2, 2), (37, 70, 3, 3), (0, 5, 0, 1)])
def test_lstm_cell_geometry(batch, hidden, row_blocks, unit_blocks):
    _, module = built()
    plan = module.lstm_cell_plan(batch, hidden)
    assert (plan["row_blocks"], plan["unit_blocks"], plan["threads"]) == (row_blocks, unit_blocks, 128)
    assert plan["rows_per_block"] * row_blocks >= batch and plan["units_per_block"] * unit_blocks >= hidden


def matrix(tensor: torch.Tensor, values: dict, name: str, rows: int, cols: int, vector=False) -> torch.Tensor:
    """[rows, cols] (or [cols] for a vector) read from tensor's storage as the LSTM
    kernels address it: the pointer, then (row, column) strides, or one stride."""
    storage = torch.empty(0, dtype=tensor.dtype).set_(tensor.untyped_storage())
    base = (values[name] - storage.data_ptr()) // tensor.element_size()
    if vector:
        return storage[base + torch.arange(cols) * values[f"{name}_stride"]]
    s_row, s_col = values[f"{name}_strides"]
    return storage[base + torch.arange(rows)[:, None] * s_row + torch.arange(cols)[None, :] * s_col]


def test_lstm_cell_values_address_every_view_in_place():
    from seqops.backends import cuda_recurrent

    B, I, H = 5, 7, 3
    x = torch.randn(I, B).t()
    h0 = torch.randn(B, 2 * H)[:, ::2]
    c0 = torch.randn(1, H).expand(B, H)
    w_ih = torch.randn(4 * H * I + 3)[3:].view(4 * H, I)
    w_hh = torch.randn(H, 4 * H).t()
    b_ih, b_hh = torch.randn(8 * H)[::2], torch.randn(1).expand(4 * H)
    h1, c1 = torch.empty(B, H, dtype=torch.float16), torch.empty(B, H, dtype=torch.float16)
    gates = torch.randn(B, 4 * H)  # compared below: torch.empty's bytes may hold NaNs, never equal to themselves
    values = cuda_recurrent.forward_values(x, h0, c0, w_ih, w_hh, b_ih, b_hh, h1, c1, gates)
    assert (values["batch"], values["input_size"], values["hidden"], values["dtype"]) == (B, I, H, 0)
    for name, t in (("x", x), ("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh), ("gates", gates)):
        assert values[name] == t.data_ptr(), f"{name} is read in place"
        assert torch.equal(matrix(t, values, name, *t.shape), t), name
    for name, t in (("b_ih", b_ih), ("b_hh", b_hh)):
        assert torch.equal(matrix(t, values, name, 1, 4 * H, vector=True), t), name
    no_bias = cuda_recurrent.forward_values(x, h0, c0, w_ih, w_hh, None, b_hh, h1, c1, gates)
    assert no_bias["b_ih"] == 0 and no_bias["b_ih_stride"] == 0 and no_bias["b_hh"] == b_hh.data_ptr()

    d_h1 = torch.randn(1, 1).expand(B, H)
    dgates, d_c0, d_h0 = torch.empty(B, 4 * H), torch.empty(B, H), torch.empty(B, H)
    values = cuda_recurrent.backward_values(d_h1, None, gates, c1, c0, w_hh, dgates, d_c0, d_h0, None)
    assert values["d_c1"] == 0 and values["dbias"] == 0 and values["hidden"] == H
    assert torch.equal(matrix(d_h1, values, "d_h1", B, H), d_h1)
    assert torch.equal(matrix(w_hh, values, "w_hh", 4 * H, H), w_hh)


# -- finding and building the extension --

@pytest.mark.parametrize("text, archs", [
    ("8.0;9.0a", ["80", "90a"]), ("80;90a", ["80", "90a"]), ("sm_80,sm_90a", ["80", "90a"]),
    ("8.6+PTX 9.0", ["86+PTX", "90"]), ("9", ["90"]), ("10.0a", ["100a"]),
])
def test_arch_lists_in_either_spelling(text, archs):
    assert _ext.parse_archs(text) == archs


def test_bad_arch_lists_say_what_they_could_not_read():
    with pytest.raises(_ext.ExtensionUnavailable, match="cannot read CUDA arch 'ampere'"):
        _ext.parse_archs("8.0;ampere")


def test_arch_choice_honours_seqops_then_torch_variables(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6")
    monkeypatch.delenv("SEQOPS_CUDA_ARCHS", raising=False)
    assert _ext.target_archs() == ["86"]
    monkeypatch.setenv("SEQOPS_CUDA_ARCHS", "90a")
    assert _ext.target_archs() == ["90a"]
    assert _ext.gencode_flags(["80", "90a+PTX"]) == [
        "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90a,code=sm_90a",
        "-gencode", "arch=compute_90a,code=compute_90a"]


def test_cache_key_changes_with_archs_and_sources(tmp_path, monkeypatch):
    if _ext.find_nvcc() is None:
        pytest.skip("nvcc is not installed")
    nvcc = _ext.find_nvcc()
    assert _ext.build_key(["80"], nvcc) != _ext.build_key(["80", "90a"], nvcc)
    assert _ext.build_key(["80"], nvcc) == _ext.build_key(["80"], nvcc)
    (tmp_path / "a.cu").write_text("// one")
    first = _ext.source_hash(tmp_path)
    (tmp_path / "a.cu").write_text("// two")
    assert _ext.source_hash(tmp_path) != first


def test_cutlass_headers_come_from_the_nvidia_cutlass_wheel_when_installed(tmp_path, monkeypatch):
    package = tmp_path / "cutlass_library"
    (package / "source" / "include" / "cute").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _ext.cutlass_include() == package / "source" / "include"


def test_processes_building_at_once_build_once(tmp_path, monkeypatch):
    """The cache folder's lock: a second process waits for the first's build and finds it."""
    import threading
    import time

    builds = []

    def slow_build(folder, archs):
        builds.append(folder)
        time.sleep(0.3)  # long enough for every other thread to look for the module meanwhile
        (folder / "_cuda_ext.so").write_text("")
        return _ext.BuildResult(folder / "_cuda_ext.so", "", 0.0)

    monkeypatch.setenv("SEQOPS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SEQOPS_CUDA_EXT_DIR", raising=False)
    monkeypatch.setattr(_ext, "module_file", lambda folder: next(iter(sorted(folder.glob("_cuda_ext*.so"))), None)
                        if folder != _ext.PACKAGE_DIR else None)
    monkeypatch.setattr(_ext, "find_nvcc", lambda: "nvcc")
    monkeypatch.setattr(_ext, "build_key", lambda archs, nvcc: "key")
    monkeypatch.setattr(_ext, "build", slow_build)
    monkeypatch.setattr(_ext, "import_module", lambda path: path)
    threads = [threading.Thread(target=_ext._find_or_build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == [tmp_path / "cuda_ext" / "key"]


def test_building_without_nvcc_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(_ext, "find_nvcc", lambda: None)
    with pytest.raises(_ext.ExtensionUnavailable, match="nvcc not found .*SEQOPS_CUDA_EXT_DIR"):
        _ext.build(tmp_path)


def test_a_prebuilt_folder_is_found_and_a_missing_one_named(tmp_path, monkeypatch):
    result, _ = built()
    monkeypatch.setenv("SEQOPS_CUDA_EXT_DIR", str(result.path.parent))
    assert _ext._find_or_build().source_hash == _ext.source_hash()
    monkeypatch.setenv("SEQOPS_CUDA_EXT_DIR", str(tmp_path))
    with pytest.raises(_ext.ExtensionUnavailable, match=f"SEQOPS_CUDA_EXT_DIR={tmp_path} holds no _cuda_ext"):
        _ext._find_or_build()


def test_a_driver_older_than_the_runtime_linked_in_is_named_as_the_reason():
    class Module:
        def __init__(self, status):
            self.status = status

        def cuda_status(self):
            return self.status

    old_driver = Module({"runtime_version": 13000, "driver_version": 12040, "device_count": 0,
                         "error": "cudaErrorInsufficientDriver: CUDA driver version is insufficient"})
    assert _ext.runtime_problem(old_driver) == (
        "the seqops CUDA extension cannot use the GPU: cudaErrorInsufficientDriver: CUDA driver version is "
        "insufficient (it carries CUDA runtime 13.0; the driver supports up to 12.4; an older nvcc builds for older "
        "drivers)")
    assert _ext.runtime_problem(Module({"runtime_version": 13000, "driver_version": 13000, "device_count": 1,
                                        "error": ""})) is None


def test_a_module_built_from_other_sources_is_not_trusted():
    class Stale:
        source_hash = "0" * 16

    assert not _ext._current(Stale())


def test_plain_install_compiles_nothing_and_the_opt_in_builds_the_extension(monkeypatch):
    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(sys, "argv", ["setup.py", "--name"])
    monkeypatch.delenv("SEQOPS_BUILD_EXT", raising=False)
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    assert seen["ext_modules"] == [] and seen["cmdclass"] == {}
    assert seen["extras_require"]["cuda"] == ["nvidia-cutlass", "pybind11"]
    monkeypatch.setenv("SEQOPS_BUILD_EXT", "1")
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    assert [ext.name for ext in seen["ext_modules"]] == ["seqops._cuda_ext"] and "build_ext" in seen["cmdclass"]


# -- registration --

def test_cuda_backend_on_a_cpu_tensor_says_why_and_auto_never_picks_it():
    with seqops.backend("cuda"):
        with pytest.raises(seqops.BackendUnavailable, match="backend 'cuda' cannot run this call: the CUDA C\\+\\+ "
                                                            "kernels take CUDA tensors, got tensors on cpu"):
            seqops.softmax(torch.randn(3, 4))
    assert all(impl.backend != "cuda" for impl in dispatch._auto_order[("softmax", "cpu")])
    order = [impl.backend for impl in dispatch._auto_order[("softmax", "cuda")]]
    assert order.index("cuda") > order.index("triton"), "the CUDA kernels rank below Triton until measured"
    assert dispatch.implementation("softmax/cuda/fused").supports is not None
    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    with seqops.backend("cuda"):
        with pytest.raises(seqops.BackendUnavailable, match="kernels take CUDA tensors, got tensors on cpu"):
            seqops.lstm_cell(x, (h, c), torch.randn(16, 3), torch.randn(16, 4))
    order = [impl.backend for impl in dispatch._auto_order[("lstm_cell", "cuda")]]
    assert order.index("cuda") > order.index("triton")


def test_tests_reaching_an_op_the_cuda_backend_lacks_skip_and_other_refusals_fail(tmp_path):
    """conftest.py's rule: on a GPU, tests run over every backend skip an op the CUDA C++
    backend does not implement yet; the same refusal from another backend still fails."""
    import shutil
    import subprocess

    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path)
    (tmp_path / "test_refusals.py").write_text(
        "import seqops\n"
        "def test_cuda_lacks_attention():\n"
        "    raise seqops.BackendUnavailable(\"seqops.attention: backend 'cuda' cannot run this call: "
        "backend 'cuda' has no implementation of attention\")\n"
        "def test_triton_lacks_attention():\n"
        "    raise seqops.BackendUnavailable(\"seqops.attention: backend 'triton' cannot run this call: "
        "backend 'triton' has no implementation of attention\")\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "1 failed, 1 skipped" in result.stdout, result.stdout[-2000:]


# -- the GRU and Elman RNN cells (csrc/recurrent/hidden_cell.cu) --

@pytest.mark.parametrize("cell, gates, saved_per_unit", [("gru_cell", 3, 4), ("rnn_tanh_cell", 1, 1),
                                                         ("rnn_relu_cell", 1, 1)])
def test_hidden_cell_values_address_every_view_in_place(cell, gates, saved_per_unit):
    from seqops.backends import cuda_recurrent

    B, I, H = 5, 7, 3
    G = gates
    x = torch.randn(I, B).t()
    h0 = torch.randn(1, H).expand(B, H)
    w_ih = torch.randn(G * H * I + 3)[3:].view(G * H, I)
    w_hh = torch.randn(H, G * H).t()
    b_ih, b_hh = torch.randn(2 * G * H)[::2], torch.randn(1).expand(G * H)
    # Outputs filled, not empty: uninitialised memory may hold NaNs, which torch.equal calls unequal.
    h1 = torch.randn(B, H, dtype=torch.bfloat16)
    saved = torch.randn(B, saved_per_unit * H)
    values = cuda_recurrent.hidden_cell_forward_values(cell, x, h0, w_ih, w_hh, b_ih, b_hh, h1, saved)
    assert (values["cell"], values["batch"], values["input_size"], values["hidden"], values["dtype"]) == (
        cell, B, I, H, 0)
    for name, t in (("x", x), ("h0", h0), ("w_ih", w_ih), ("w_hh", w_hh), ("h1", h1), ("saved", saved)):
        assert values[name] == t.data_ptr(), f"{name} is read in place"
        assert torch.equal(matrix(t, values, name, *t.shape), t), name
    for name, t in (("b_ih", b_ih), ("b_hh", b_hh)):
        assert torch.equal(matrix(t, values, name, 1, G * H, vector=True), t), name
    no_bias = cuda_recurrent.hidden_cell_forward_values(cell, x, h0, w_ih, w_hh, None, None, h1, saved)
    assert (no_bias["b_ih"], no_bias["b_ih_stride"], no_bias["b_hh"], no_bias["b_hh_stride"]) == (0, 0, 0, 0)

    d_h1 = torch.randn(H, B, dtype=torch.float16).t()
    dgates, d_h0 = torch.randn(B, saved_per_unit * H), torch.randn(B, H)
    values = cuda_recurrent.hidden_cell_backward_values(cell, d_h1, h0, saved, w_hh, dgates, d_h0)
    assert (values["cell"], values["batch"], values["hidden"], values["dtype"]) == (cell, B, H, 1)
    for name, t in (("d_h1", d_h1), ("saved", saved), ("w_hh", w_hh), ("dgates", dgates), ("d_h0", d_h0)):
        assert values[name] == t.data_ptr() and torch.equal(matrix(t, values, name, *t.shape), t), name
    if cell == "gru_cell":
        assert torch.equal(matrix(h0, values, "h0", B, H), h0)
    else:
        assert values["h0"] == 0, "the RNNs' backward never reads h0"


def test_hidden_cell_bad_arguments_are_refused_before_any_launch():
    """The launchers' checks, run here without a GPU: they refuse before touching one."""
    _, module = built()
    s = (1, 1)
    forward = dict(x=16, x_strides=s, h0=16, h0_strides=s, w_ih=16, w_ih_strides=s, w_hh=16, w_hh_strides=s, b_ih=0,
                   b_ih_stride=0, b_hh=0, b_hh_stride=0, h1=16, h1_strides=s, saved=16, saved_strides=s, dtype=0,
                   batch=3, input_size=4, hidden=5, device=0, stream=0)
    with pytest.raises(module.CudaError, match="hidden_cell_forward: unknown cell 'lstm_cell'"):
        module.hidden_cell_forward("lstm_cell", **forward)
    with pytest.raises(module.CudaError, match="unknown dtype code 3"):
        module.hidden_cell_forward("gru_cell", **{**forward, "dtype": 3})
    with pytest.raises(module.CudaError, match="bad argument: hidden_cell_forward: a tensor pointer is null"):
        module.hidden_cell_forward("rnn_tanh_cell", **{**forward, "saved": 0})
    with pytest.raises(module.CudaError, match="bad argument: hidden_cell_forward: negative size"):
        module.hidden_cell_forward("gru_cell", **{**forward, "hidden": -1})
    with pytest.raises(module.CudaError, match="hidden_cell_forward: batch or hidden size past the launch grid"):
        module.hidden_cell_forward("gru_cell", **{**forward, "hidden": 32 * 65535 + 1})
    backward = dict(d_h1=16, d_h1_strides=s, h0=0, h0_strides=s, saved=16, saved_strides=s, w_hh=16,
                    w_hh_strides=s, dgates=16, dgates_strides=s, d_h0=16, d_h0_strides=s, dtype=2, batch=3, hidden=5,
                    device=0, stream=0)
    with pytest.raises(module.CudaError, match="bad argument: hidden_cell_backward: a tensor pointer is null"):
        module.hidden_cell_backward("gru_cell", **backward)  # the GRU's backward reads h0
    if not torch.cuda.is_available():
        # The RNNs' backward takes no h0: the checks pass, and the launch finds no GPU.
        with pytest.raises(module.CudaError, match="hidden_cell_backward: the CUDA runtime failed"):
            module.hidden_cell_backward("rnn_relu_cell", **backward)
        # The Python side's values are what the bindings take, and pass their checks.
        from seqops.backends import cuda_recurrent

        x, h0, w_ih, w_hh = torch.randn(3, 4), torch.randn(3, 5), torch.randn(15, 4), torch.randn(15, 5)
        h1, saved, dgates, d_h0 = torch.empty(3, 5), torch.empty(3, 20), torch.empty(3, 20), torch.empty(3, 5)
        values = cuda_recurrent.hidden_cell_forward_values("gru_cell", x, h0, w_ih, w_hh, None, None, h1, saved)
        with pytest.raises(module.CudaError, match="hidden_cell_forward: the CUDA runtime failed"):
            module.hidden_cell_forward(**values, device=0, stream=0)
        values = cuda_recurrent.hidden_cell_backward_values("gru_cell", h1, h0, saved, w_hh, dgates, d_h0)
        with pytest.raises(module.CudaError, match="hidden_cell_backward: the CUDA runtime failed"):
            module.hidden_cell_backward(**values, device=0, stream=0)


@pytest.mark.parametrize("cell", ["gru_cell", "rnn_tanh_cell", "rnn_relu_cell"])
def test_cuda_backend_refuses_cpu_hidden_cells_and_auto_ranks_it_last(cell):
    G = 3 if cell == "gru_cell" else 1
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    with seqops.backend("cuda"):
        with pytest.raises(seqops.BackendUnavailable, match="backend 'cuda' cannot run this call: the CUDA C\\+\\+ "
                                                            "kernels take CUDA tensors, got tensors on cpu"):
            getattr(seqops, cell)(x, h, torch.randn(G * 4, 3), torch.randn(G * 4, 4))
    assert dispatch.implementation(f"{cell}/cuda/step").supports is not None
    order = [impl.backend for impl in dispatch._auto_order[(cell, "cuda")]]
    assert order.index("cuda") > order.index("triton"), "the CUDA kernels rank below Triton until measured"
    assert all(impl.backend != "cuda" for impl in dispatch._auto_order.get((cell, "cpu"), []))


class EmulatedHiddenCellKernels:
    """The extension's hidden_cell_forward and hidden_cell_backward as their contract says
    (csrc/recurrent/params.h), in torch on the CPU, reading and writing the raw pointers
    through the strides they receive. It checks the Python side around the kernels (the
    values, the GRU's two sides of gate gradients, the GEMMs and sums after the kernel)
    without a GPU; it says nothing of the kernels themselves."""

    DTYPES = {0: torch.float32, 1: torch.float16, 2: torch.bfloat16}

    @staticmethod
    def view(pointer, strides, shape, dtype):
        import ctypes

        assert pointer, "a tensor the kernel reads or writes is null"
        extent = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
        size = torch.empty(0, dtype=dtype).element_size()
        memory = (ctypes.c_byte * (extent * size)).from_address(pointer)
        return torch.frombuffer(memory, dtype=dtype).as_strided(shape, strides)

    def hidden_cell_forward(self, cell, x, x_strides, h0, h0_strides, w_ih, w_ih_strides, w_hh, w_hh_strides, b_ih,
                            b_ih_stride, b_hh, b_hh_stride, h1, h1_strides, saved, saved_strides, dtype, batch,
                            input_size, hidden, device, stream):
        T, B, I, H = self.DTYPES[dtype], batch, input_size, hidden
        G = 3 if cell == "gru_cell" else 1
        h = self.view(h0, h0_strides, (B, H), T).float()
        gi = self.view(x, x_strides, (B, I), T).float() @ self.view(w_ih, w_ih_strides, (G * H, I), T).float().t()
        gh = h @ self.view(w_hh, w_hh_strides, (G * H, H), T).float().t()
        if b_ih:
            gi = gi + self.view(b_ih, (b_ih_stride,), (G * H,), T).float()
        if b_hh:
            gh = gh + self.view(b_hh, (b_hh_stride,), (G * H,), T).float()
        if cell == "gru_cell":
            r, z = torch.sigmoid(gi[:, :H] + gh[:, :H]), torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            out, values = n + z * (h - n), torch.cat([r, z, n, gh[:, 2 * H:]], dim=1)
        else:
            out = torch.relu(gi + gh) if cell == "rnn_relu_cell" else torch.tanh(gi + gh)
            values = out
        self.view(h1, h1_strides, (B, H), T).copy_(out)
        self.view(saved, saved_strides, values.shape, torch.float32).copy_(values)

    def hidden_cell_backward(self, cell, d_h1, d_h1_strides, h0, h0_strides, saved, saved_strides, w_hh,
                             w_hh_strides, dgates, dgates_strides, d_h0, d_h0_strides, dtype, batch, hidden, device,
                             stream):
        T, B, H = self.DTYPES[dtype], batch, hidden
        dh = self.view(d_h1, d_h1_strides, (B, H), T).float()
        if cell == "gru_cell":
            assert h0, "the GRU's backward reads h0"
            h = self.view(h0, h0_strides, (B, H), T).float()
            r, z, n, hn = self.view(saved, saved_strides, (B, 4 * H), torch.float32).split(H, dim=1)
            d_n = dh * (1 - z) * (1 - n * n)
            d_z = dh * (h - n) * z * (1 - z)
            d_r = d_n * hn * r * (1 - r)
            grads, through = torch.cat([d_r, d_z, d_n, d_n * r], dim=1), torch.cat([d_r, d_z, d_n * r], dim=1)
            direct = dh * z
        else:
            out = self.view(saved, saved_strides, (B, H), torch.float32)
            grads = torch.where(out > 0, dh, 0.0) if cell == "rnn_relu_cell" else dh * (1 - out * out)
            through, direct = grads, 0.0
        self.view(dgates, dgates_strides, grads.shape, torch.float32).copy_(grads)
        w = self.view(w_hh, w_hh_strides, (through.shape[1], H), T).float()
        self.view(d_h0, d_h0_strides, (B, H), torch.float32).copy_(through @ w + direct)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("cell", ["gru_cell", "rnn_tanh_cell", "rnn_relu_cell"])
def test_hidden_cell_python_side_over_emulated_kernels(monkeypatch, cell, bias, dtype):
    """The CUDA Impl's forward and backward, the kernels emulated (EmulatedHiddenCellKernels),
    on strided views, against torch's cell and its autograd."""
    from seqops.backends import cuda_recurrent

    monkeypatch.setattr(_ext, "load", EmulatedHiddenCellKernels)
    monkeypatch.setattr(cuda_recurrent, "launch_place", lambda device: {"device": 0, "stream": 0})
    B, I, H = 6, 5, 7
    G = 3 if cell == "gru_cell" else 1
    args = [torch.randn(I, B).t(), torch.randn(B, 2 * H)[:, ::2], torch.randn(I, G * H).t() / I**0.5,
            torch.randn(2 * G * H, H)[::2] / H**0.5, torch.randn(2 * G * H)[1::2], torch.randn(1).expand(G * H)]
    args = [t.to(dtype) for t in args[:4 + 2 * bias]] + [None, None] * (not bias)
    h1, saved = cuda_recurrent.hidden_cell_forward(cell, *args)
    theirs = [t.detach().double().requires_grad_() if t is not None else None for t in args]
    want = getattr(torch, cell)(*theirs)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(h1.double(), want.detach(), **tolerance)
    d_h1 = torch.randn(B, H).to(dtype)
    got = cuda_recurrent.hidden_cell_backward(cell, d_h1, *args[:4], saved, bias)
    wanted = torch.autograd.grad(want, [t for t in theirs if t is not None], d_h1.double())
    assert (got[4] is None and got[5] is None) if not bias else len(wanted) == 6
    for name, g, w in zip(("d_input", "d_h0", "d_w_ih", "d_w_hh", "d_b_ih", "d_b_hh"), got, wanted):
        assert g.dtype == dtype and g.shape == w.shape, name
        torch.testing.assert_close(g.double(), w, **tolerance, msg=lambda m: f"{name}: {m}")
