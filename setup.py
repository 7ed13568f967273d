"""Install seqops.

Installing is pure Python and compiles nothing: `seqops/` is the package and `kernels/`
(the Triton kernels) is installed as `seqops.kernels`, so nothing named plain `kernels`
lands in site-packages.
"""
import re
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
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
        "seqops.ops", "seqops.ops.attention", "seqops.ops.recurrent", "seqops.ops.softmax",
        "seqops.kernels", "seqops.kernels.attention", "seqops.kernels.recurrent", "seqops.kernels.softmax",
    ],
    package_dir={"seqops.kernels": "kernels"},
    install_requires=[
        "torch>=2.6",
        "numpy",
        # Triton ships wheels for Linux only; elsewhere the torch backend runs.
        "triton; platform_system == 'Linux'",
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "transformers"],
        "bench": ["pytest-benchmark", "matplotlib"],
        # seqops.integrations.transformers: attn_implementation="seqops" in transformers models.
        "transformers": ["transformers"],
    },
)
