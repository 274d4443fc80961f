"""Test-wide settings, applied before JAX is imported by any test module."""

import os

import pytest

# The tests are dominated by XLA compile time, not run time: skip LLVM's expensive passes (about
# 40% off the suite on 2 cores). Numbers stay IEEE float32; benchmarks never run with this.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

# The float64-reference tests need true float32 matmuls. A GPU's default is TF32 (a 10-bit
# mantissa), which misses their tolerances; pin "highest" so the suite means the same on every
# backend. Subprocesses started by the tests inherit it.
os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(data_dir, load_split) of the tiny MNIST-shaped dataset (tests/tiny_data.py), built once."""
    from tests import tiny_data  # imported here: the settings above must come first
    data_dir = str(tmp_path_factory.mktemp("tiny_mnist"))
    config = tiny_data.make_tiny_mnist(data_dir)
    return data_dir, tiny_data.tiny_loader(data_dir, config)
