"""Multi-host for real: two processes on one machine under JAX's multi-controller runtime
(jax.distributed, coordinator on 127.0.0.1, one CPU device each) train data-parallel and match a
one-process run; only process 0 writes the record; a resumed run restores its checkpoint across
both processes and ends with the same metrics."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

from lnrepro import metrics, train
from tests import test_train, tiny_data

TWO_PROCESS_RUN = """
import json, sys
from experiments import common
from lnrepro import train
from tests import test_train, tiny_data
data_dir, workdir, address, process_id = sys.argv[1:5]
config = test_train.small_config(data_dir, norm="batch", num_epochs=2, batch_size=16)
common.setup_runtime(config, address, 2, int(process_id))
loader = tiny_data.tiny_loader(data_dir, tiny_data.make_tiny_mnist(data_dir))
rows = train.train_and_evaluate(config, workdir, test_train.build(loader))
import jax
print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(), "rows": rows}))
"""
COMPARED = ("train_loss_running", "train_nll", "train_error", "valid_nll", "test_nll",
            "test_error")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(data_dir: str, workdir: str) -> list[dict]:
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, **test_train.cpu_devices_env(1)}
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESS_RUN, data_dir, workdir, address,
                               str(i)], cwd=test_train.REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["process"] for o in outputs] == [0, 1]
    assert all(o["devices"] == 2 for o in outputs)
    # Both processes computed the same metrics. Process 0 returns the record (rounds before a
    # resume included), the other process the rounds it ran.
    record = {row["round"]: row for row in outputs[0]["rows"]}
    assert outputs[1]["rows"]
    for row in outputs[1]["rows"]:
        for key in COMPARED:
            assert row[key] == record[row["round"]][key], key
    return outputs[0]["rows"]


def _assert_rows_close(rows, reference):
    assert [r["round"] for r in rows] == [r["round"] for r in reference]
    for row, ref in zip(rows, reference):
        for key in COMPARED:
            # Two devices add BN's statistics and the gradients in another order.
            np.testing.assert_allclose(row[key], ref[key], rtol=2e-4, atol=1e-6, err_msg=key)


def test_two_processes_match_one_and_resume(tmp_path):
    data_dir = str(tmp_path / "data")
    loader = tiny_data.tiny_loader(data_dir, tiny_data.make_tiny_mnist(data_dir))
    config = test_train.small_config(data_dir, norm="batch", num_epochs=2, batch_size=16)
    one = train.train_and_evaluate(config, str(tmp_path / "one"), test_train.build(loader))

    workdir = str(tmp_path / "two")
    two = _run_two_processes(data_dir, workdir)
    _assert_rows_close(two, one)
    assert metrics.read_metrics(workdir) == two  # one writer: no duplicated lines
    (entry,) = metrics.read_provenance(workdir)
    assert entry["process_count"] == 2 and entry["device_count"] == 2

    # Kill after round 0: drop round 1's checkpoint and metric line, then run again.
    shutil.rmtree(os.path.join(workdir, "checkpoints", "1"))
    with open(os.path.join(workdir, metrics.METRICS_FILE)) as f:
        first_line = f.readline()
    with open(os.path.join(workdir, metrics.METRICS_FILE), "w") as f:
        f.write(first_line)
    resumed = _run_two_processes(data_dir, workdir)
    assert [p["first_round"] for p in metrics.read_provenance(workdir)] == [0, 1]
    without_timing = test_train.without_timing
    assert without_timing(resumed) == without_timing(two)
