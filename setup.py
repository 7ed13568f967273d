"""Install seqops.

Installing is pure Python and compiles nothing: `seqops/` is the package and `kernels/`
(the Triton kernels) is installed as `seqops.kernels`, so nothing named plain `kernels`
lands in site-packages. The CUDA C++ extension (csrc/) is built on first CUDA use
(seqops/_ext.py), or ahead of time with
    SEQOPS_BUILD_EXT=1 pip install --no-build-isolation -e .
which needs nvcc and pybind11 (`pip install seqops[cuda]`), not a GPU.
"""
import importlib.util
import os
import re
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent


class BuildCudaExtension(build_ext):
    """Builds seqops._cuda_ext with seqops/_ext.py's nvcc build (the one the first CUDA call
    would run), loaded from its file so that setup.py imports neither seqops nor torch."""

    def build_extension(self, ext):
        spec = importlib.util.spec_from_file_location("seqops_ext_build", ROOT / "seqops" / "_ext.py")
        builder = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = builder  # its dataclasses look their module up there
        spec.loader.exec_module(builder)
        target = Path(self.get_ext_fullpath(ext.name))
        result = builder.build(target.parent, max_jobs=self.parallel or None)
        if result.path != target:
            result.path.replace(target)


BUILD_EXT = os.environ.get("SEQOPS_BUILD_EXT", "0") not in ("", "0")
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "seqops" / "__init__.py").read_text()).group(1)

setup(
    name="seqops",
    version=VERSION,
    description="Fused GPU kernels for sequence models: LSTM cell, attention, softmax (Triton and CUDA C++)",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=[
        "seqops", "seqops.backends", "seqops.integrations", "seqops.nn",
        "seqops.ops", "seqops.ops.additive", "seqops.ops.attention", "seqops.ops.recurrent", "seqops.ops.softmax",
        "seqops.kernels", "seqops.kernels.additive", "seqops.kernels.attention", "seqops.kernels.recurrent", "seqops.kernels.softmax",
    ],
    package_dir={"seqops.kernels": "kernels"},
    ext_modules=[Extension("seqops._cuda_ext", sources=[])] if BUILD_EXT else [],
    cmdclass={"build_ext": BuildCudaExtension} if BUILD_EXT else {},
    install_requires=[
        "torch>=2.6",
        "numpy",
        # Triton ships wheels for Linux only; elsewhere the torch backend runs.
        "triton; platform_system == 'Linux'",
    ],
    extras_require={
        # pybind11 and nvidia-cutlass (CuTe headers): CI builds the CUDA extension and its
        # CuTe instance files (tests/test_cuda_build.py) without a GPU.
        "test": ["pytest", "pytest-xdist", "pytest-benchmark", "pybind11", "nvidia-cutlass", "transformers"],
        # To build the CUDA C++ extension: pybind11, and CUTLASS/CuTe headers.
        "cuda": ["nvidia-cutlass", "pybind11"],
        "bench": ["pytest-benchmark", "matplotlib"],
        # seqops.integrations.transformers: attn_implementation="seqops" in transformers models.
        "transformers": ["transformers"],
    },
)
