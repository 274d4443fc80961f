"""What the benchmark scripts share."""

from __future__ import annotations

import os

# The flags tests/conftest.py sets: compile fast, run slower code.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def fast_compile() -> None:
    """For --quick smoke runs, which time nothing meaningful and are dominated by compiles: skip
    LLVM's expensive passes. Takes effect only if no JAX backend exists yet."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + FAST_COMPILE_FLAGS).strip()
