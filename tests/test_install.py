"""Install anywhere: package metadata, the pinned requirements, and the Makefile's three ways to
run (a CPU venv, a CUDA venv, the current environment as it is)."""

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _names(requirements) -> set[str]:
    """Distribution names of requirement lines, normalized (PEP 503)."""
    names = set()
    for line in requirements:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.sub(r"[-_.]+", "-", re.split(r"[<>=!\[; ]", line)[0]).lower())
    return names


def test_pyproject_declares_the_library_and_what_it_needs():
    project = _pyproject()["project"]
    assert project["name"] == "lnrepro"
    assert project["requires-python"] == ">=3.11,<3.14"
    with open(os.path.join(REPO, "requirements.txt")) as f:
        pinned = _names(f) - {"jaxlib"}  # jaxlib: jax's own pin
    extras = project["optional-dependencies"]
    assert pinned <= _names(project["dependencies"]) | _names(extras["test"]) | _names(
        extras["reports"])
    assert _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"] == ["lnrepro*"]
    # Every directory of the library is a package, so the install carries it.
    for root, dirs, files in os.walk(os.path.join(REPO, "lnrepro")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(f.endswith(".py") for f in files):
            assert "__init__.py" in files, root


@pytest.mark.parametrize("accel", ["cuda12", "cuda13"])
def test_cuda_requirements_pin_the_plugin_of_the_pinned_jax(accel):
    with open(os.path.join(REPO, "requirements.txt")) as f:
        jax_pin = re.search(r"^jax==(\S+)", f.read(), re.M)[1]
    with open(os.path.join(REPO, f"requirements-{accel}.txt")) as f:
        text = f.read()
    assert "-r requirements.txt" in text
    assert f"jax[{accel}]=={jax_pin}" in text


def test_lnrepro_imports_from_anywhere_once_installed(tmp_path):
    try:
        importlib.metadata.version("lnrepro")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("lnrepro is not pip-installed here (NO_VENV=1 runs it from the checkout)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", "import lnrepro.train, lnrepro.data.mnist; "
                             "print(lnrepro.train.__file__)"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == os.path.join(REPO, "lnrepro", "train.py")


def _make(*args: str) -> subprocess.CompletedProcess:
    # Without the variables of a calling make (`make test VENV=...` passes them down).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def _make_dry_run(*args: str) -> str:
    result = _make("-n", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_builds_a_cuda_venv_from_the_cuda_pins():
    commands = _make_dry_run("-B", "test", "ACCEL=cuda12")
    assert "-m venv .venv-cuda12" in commands
    assert "pip install --quiet -r requirements-cuda12.txt" in commands
    assert ".venv-cuda12/bin/python -m pytest" in commands


def test_make_no_venv_uses_the_given_python_and_installs_nothing():
    commands = _make_dry_run("test", "NO_VENV=1", f"PYTHON={sys.executable}")
    assert "-m pip install" not in commands and "-m venv" not in commands
    assert f"{sys.executable} -m pytest -q -m \"not slow\" tests" in commands


def test_make_refuses_an_unsupported_python(tmp_path):
    # A Python that reports 3.10 to the check the Makefile runs.
    fake = tmp_path / "python3.10"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; "
                    "sys.version_info = (3, 10, 0, \"final\", 0); exec(sys.argv[1])' \"$2\"\n")
    fake.chmod(0o755)
    result = _make("-s", "check-python", f"PYTHON={fake}")
    assert result.returncode != 0
    assert "is Python 3.10; lnrepro needs 3.11-3.13" in result.stderr
    ok = _make("-s", "check-python", f"PYTHON={sys.executable}")
    assert ok.returncode == 0, ok.stderr
