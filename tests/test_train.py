"""The trainer on the pi_mnist task, on a tiny dataset built by the real builder."""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pi_mnist as pi_mnist_config
from lnrepro import metrics, provenance, train
from lnrepro.tasks import pi_mnist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = ("examples_per_sec", "round_seconds")


def small_config(data_dir, **overrides):
    config = pi_mnist_config.get_config()
    config.data_dir = data_dir
    config.hidden_sizes = (32, 32)
    config.batch_size = 16
    config.num_epochs = 3
    config.eval_batch_size = 32
    config.learning_rate = 3e-3
    for key, value in overrides.items():
        config[key] = value
    return pi_mnist.resolve_config(config)


def build(load_split):
    return lambda config: pi_mnist.build_task(config, load_split=load_split)


def killed_after(rounds_done: int, load_split):
    """(build_task, Killed): a build_task whose run dies when round `rounds_done` starts (after
    that round's checkpoint), raising Killed."""
    class Killed(Exception):
        pass

    def build_task(cfg):
        task = pi_mnist.build_task(cfg, load_split=load_split)

        def chunks(epoch):
            if epoch == rounds_done:
                raise Killed()
            return task.train_chunks(epoch)
        return dataclasses.replace(task, train_chunks=chunks)
    return build_task, Killed


def killed_in_epoch_2(tiny, workdir):
    """(config, provenance entry of its start): a 2-epoch run in `workdir` killed after epoch 1."""
    data_dir, load_split = tiny
    config = small_config(data_dir, num_epochs=2)
    build_killed_in_epoch_2, Killed = killed_after(1, load_split)
    with pytest.raises(Killed):
        train.train_and_evaluate(config, workdir, build_killed_in_epoch_2)
    (first,) = metrics.read_provenance(workdir)
    return config, first


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.mark.parametrize("norm", ["none", "batch", "layer", "weight"])
def test_one_chunk_of_steps_gives_finite_params_and_lower_loss(tiny, norm):
    _, load_split = tiny
    config = small_config(tiny[0], norm=norm, steps_per_call=8)
    task = build(load_split)(config)
    mesh = train.make_mesh()
    state = train.create_train_state(jax.random.key(0), task.model, task.init_batch,
                                     train.make_optimizer(config))
    assert (state.batch_stats is not None) == (norm == "batch")  # LN keeps no state
    run_chunk = train.make_run_chunk(task, mesh)
    chunk = task.train_chunks(0)[0]
    state, step_metrics = run_chunk(state, task.device_data, train.shard_chunk(chunk, mesh),
                                    jax.random.key(1))
    losses = np.asarray(step_metrics["loss"])
    assert losses.shape == (8,)
    assert np.all(np.isfinite(losses))
    # At initialization the NLL of 10 classes is near log(10); a few Adam steps lower it.
    assert 1.0 < losses[0] < 4.0
    assert losses[-1] < losses[0]
    assert int(state.step) == 8
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))


def test_scan_of_steps_equals_steps_one_at_a_time(tiny):
    _, load_split = tiny
    config = small_config(tiny[0], norm="batch", steps_per_call=4)
    task = build(load_split)(config)
    mesh = train.make_mesh()
    make_state = lambda: train.create_train_state(jax.random.key(0), task.model,
                                                  task.init_batch, train.make_optimizer(config))
    run_chunk = train.make_run_chunk(task, mesh)
    chunk = task.train_chunks(0)[0]
    together, _ = run_chunk(make_state(), task.device_data, chunk, jax.random.key(1))
    one_by_one = make_state()
    for i in range(4):
        one_by_one, _ = run_chunk(one_by_one, task.device_data, chunk[i:i + 1],
                                  jax.random.key(1))
    for a, b in zip(jax.tree.leaves((together.params, together.batch_stats)),
                    jax.tree.leaves((one_by_one.params, one_by_one.batch_stats))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_epoch_chunks_are_a_seeded_permutation():
    chunks = pi_mnist.epoch_index_chunks(100, 8, 5, seed=3, epoch=1)
    assert [c.shape for c in chunks] == [(5, 8), (5, 8), (2, 8)]  # 12 steps, 4 examples left out
    flat = np.concatenate([c.ravel() for c in chunks])
    assert len(np.unique(flat)) == 96 and flat.max() < 100
    again = pi_mnist.epoch_index_chunks(100, 8, 5, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(chunks, again))
    other_epoch = pi_mnist.epoch_index_chunks(100, 8, 5, seed=3, epoch=2)
    assert not np.array_equal(chunks[0], other_epoch[0])


def test_full_tiny_run_writes_config_metrics_and_checkpoints(tiny, tmp_path):
    data_dir, load_split = tiny
    config = small_config(data_dir, norm="layer")
    rows = train.train_and_evaluate(config, str(tmp_path), build(load_split))
    files = sorted(os.listdir(tmp_path))
    assert len([f for f in files if "tfevents" in f]) == 1  # the TensorBoard view
    assert [f for f in files if "tfevents" not in f] == [".lock", "checkpoints", "config.json",
                                                          "metrics.jsonl", "provenance.json"]
    assert metrics.read_config(str(tmp_path))["norm"] == "layer"
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    steps_per_epoch = 256 // 16
    assert [r["step"] for r in rows] == [steps_per_epoch * e for e in (1, 2, 3)]
    for key in ("train_nll", "train_error", "valid_nll", "valid_error", "test_nll",
                "test_error", "examples_per_sec"):
        assert all(np.isfinite(r[key]) for r in rows), key
    # The tiny classes are easy: the run must learn them.
    assert rows[-1]["train_nll"] < rows[0]["train_nll"]
    assert rows[-1]["test_error"] < 0.5
    assert rows == metrics.read_metrics(str(tmp_path))


def test_killed_run_resumes_to_the_same_metrics(tiny, tmp_path, caplog):
    data_dir, load_split = tiny
    config = small_config(data_dir, norm="batch", batch_size=8, num_epochs=3)
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"), build(load_split))

    build_killed_in_epoch_3, Killed = killed_after(2, load_split)
    workdir = str(tmp_path / "killed")
    with pytest.raises(Killed):
        train.train_and_evaluate(config, workdir, build_killed_in_epoch_3)
    assert len(metrics.read_metrics(workdir)) == 2
    # A line written after the last checkpoint (a kill between the two) must be recomputed.
    with open(os.path.join(workdir, metrics.METRICS_FILE), "a") as f:
        f.write(json.dumps({"round": 2, "epoch": 3, "stale": True}) + "\n")
    with caplog.at_level(logging.WARNING):
        resumed = train.train_and_evaluate(config, workdir, build(load_split))
    assert f"Dropping epoch(s) [3] of {workdir}/metrics.jsonl: recorded after the last " \
        "checkpoint" in caplog.text  # never shortened without a message
    assert "changed since its last start" not in caplog.text  # the same process, same numerics
    assert without_timing(resumed) == without_timing(straight)
    # Provenance says what made each part: the first start (rounds 0-1) and the resume.
    assert [p["first_round"] for p in metrics.read_provenance(workdir)] == [0, 2]


def test_resume_on_other_cores_or_flags_says_it_is_not_bit_for_bit(tiny, tmp_path, caplog,
                                                                    monkeypatch):
    config, first = killed_in_epoch_2(tiny, str(tmp_path))
    _, load_split = tiny
    monkeypatch.setattr(provenance, "usable_cpus", lambda: 99)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    with caplog.at_level(logging.WARNING):
        rows = train.train_and_evaluate(config, str(tmp_path), build(load_split))
    assert len(rows) == 2  # it resumes, and says what changed
    assert (f"Resuming {tmp_path} with cpus_usable: {first['cpus_usable']} -> 99; xla_flags: "
            f"{first['xla_flags']!r} -> '--xla_cpu_multi_thread_eigen=false' changed since its "
            "last start: the rounds from here match an uninterrupted run to float32 rounding, "
            "not bit for bit.") in caplog.text


def test_resume_with_other_source_says_so(tiny, tmp_path, caplog, monkeypatch):
    config, first = killed_in_epoch_2(tiny, str(tmp_path))
    _, load_split = tiny
    assert first["source_sha256"] == provenance.source_digest()
    assert first["code_sha256"] == provenance.code_digest()
    monkeypatch.setattr(provenance, "source_digest", lambda: "0" * 64)
    monkeypatch.setattr(provenance, "code_digest", lambda: "1" * 64)
    with caplog.at_level(logging.WARNING):
        rows = train.train_and_evaluate(config, str(tmp_path), build(load_split))
    assert len(rows) == 2
    commit = metrics.commit_label(first)
    assert (f"Resuming {tmp_path} with lnrepro's source changed since its last start (sha256 "
            f"{first['source_sha256'][:12]} at {commit} -> 000000000000 at {commit}): the "
            "rounds from here are the new code's") in caplog.text
    assert [e["source_sha256"] for e in metrics.read_provenance(str(tmp_path))] == [
        first["source_sha256"], "0" * 64]


def test_resume_after_a_comment_only_change_says_nothing(tiny, tmp_path, caplog, monkeypatch):
    config, first = killed_in_epoch_2(tiny, str(tmp_path))
    _, load_split = tiny
    monkeypatch.setattr(provenance, "source_digest", lambda: "0" * 64)  # bytes changed, code not
    with caplog.at_level(logging.WARNING):
        rows = train.train_and_evaluate(config, str(tmp_path), build(load_split))
    assert len(rows) == 2
    assert "source changed" not in caplog.text
    assert [e["source_sha256"] for e in metrics.read_provenance(str(tmp_path))] == [
        first["source_sha256"], "0" * 64]


def test_code_digest_ignores_comments_docstrings_and_layout(tmp_path):
    package = tmp_path / "lnrepro"
    package.mkdir()
    (package / "ops.py").write_text('"""Ops."""\n\ndef f(x):\n    """Twice x."""\n'
                                    '    return 2 * x  # doubled\n')
    code, source = provenance.code_digest(str(package)), provenance.source_digest(str(package))
    (package / "ops.py").write_text('"""Ops, reworded."""\n# a new comment\ndef f(x):\n'
                                    '    """Twice x, reworded."""\n    return 2*x\n')
    assert provenance.source_digest(str(package)) != source
    assert provenance.code_digest(str(package)) == code
    (package / "ops.py").write_text('def f(x):\n    return 3 * x\n')
    assert provenance.code_digest(str(package)) != code
    # A body that is only a docstring hashes as `pass`: the same code as an empty body; a
    # module that is only a docstring as an empty file.
    (package / "ops.py").write_text('def f(x):\n    """Only a docstring."""\n')
    only_docstring = provenance.code_digest(str(package))
    (package / "ops.py").write_text('def f(x):\n    pass\n')
    assert provenance.code_digest(str(package)) == only_docstring != code
    (package / "__init__.py").write_text('"""The package."""\n')
    with_init = provenance.code_digest(str(package))
    (package / "__init__.py").write_text("")
    assert provenance.code_digest(str(package)) == with_init
    # Docstrings go at every depth: classes, methods, nested and async functions.
    nested = ('class A:\n    """{0}"""\n    def m(self):\n        """{0}"""\n'
              '        def inner():\n            """{0}"""\n            return 1\n'
              '        return inner\n\nasync def g():\n    """{0}"""\n    return 2\n')
    (package / "cells.py").write_text(nested.format("One."))
    first = provenance.code_digest(str(package))
    (package / "cells.py").write_text(nested.format("Another."))
    assert provenance.code_digest(str(package)) == first
    (package / "cells.py").write_text(nested.format("One.").replace("return 1", "return 3"))
    assert provenance.code_digest(str(package)) != first
    # A file that does not parse (a half-made edit) is hashed by its bytes; it stops no run.
    (package / "cells.py").write_text("def broken(:\n")
    broken = provenance.code_digest(str(package))
    (package / "cells.py").write_text("def broken(:  \n")
    assert provenance.code_digest(str(package)) != broken
    py = {"python": "3.12.1"}
    # The code digests decide where both entries have one from the same Python version ...
    assert not provenance.source_changed({**py, "source_sha256": "a", "code_sha256": "c"},
                                         {**py, "source_sha256": "b", "code_sha256": "c"})
    assert provenance.source_changed({**py, "source_sha256": "a", "code_sha256": "c"},
                                     {"python": "3.12.7", "source_sha256": "a",
                                      "code_sha256": "d"})
    # ... else the bytes do: ast.dump's text differs between versions, and older entries lack it.
    assert provenance.source_changed({**py, "source_sha256": "a", "code_sha256": "c"},
                                     {"python": "3.13.0", "source_sha256": "b",
                                      "code_sha256": "c"})
    assert provenance.source_changed({"source_sha256": "a"},
                                     {"source_sha256": "b", "code_sha256": "c"})


def test_source_digest_names_the_exact_source(tmp_path):
    package = tmp_path / "lnrepro"
    (package / "models").mkdir(parents=True)
    (package / "ops.py").write_text("x = 1\n")
    (package / "models" / "mlp.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code")
    digest = provenance.source_digest(str(package))
    # An editor's lock file (a dangling link) and other hidden names are not source.
    os.symlink("user@host.123", package / ".#ops.py")
    (package / ".scratch.py").write_text("z = 3\n")
    assert provenance.source_digest(str(package)) == digest
    assert len(digest) == 64 and digest == provenance.source_digest(str(package))
    (package / "notes.txt").write_text("still not code")
    assert provenance.source_digest(str(package)) == digest
    (package / "ops.py").write_text("x = 2\n")  # one byte
    assert provenance.source_digest(str(package)) != digest
    (package / "ops.py").write_text("x = 1\n")
    (package / "models" / "mlp.py").rename(package / "models" / "cnn.py")  # same bytes, renamed
    assert provenance.source_digest(str(package)) != digest
    assert provenance.source_changed({"source_sha256": "a"}, {"source_sha256": "b"})
    assert not provenance.source_changed({"source_sha256": "a"}, {"source_sha256": "a"})
    assert not provenance.source_changed({"commit": "abc"}, {"source_sha256": "b"})  # older record


def test_numerics_changes_compare_what_both_entries_recorded():
    before = {"backend": "cpu", "cpus_usable": 2, "packages": {"jax": "0.10.2", "numpy": "2.1"}}
    assert provenance.numerics_changes(before, {**before, "commit": "abc"}) == []
    now = {**before, "backend": "gpu", "xla_flags": "--x", "packages": {"jax": "0.11.0",
                                                                       "numpy": "2.1"}}
    assert provenance.numerics_changes(before, now) == ["backend: 'cpu' -> 'gpu'",
                                                        "jax: 0.10.2 -> 0.11.0"]
    # A record from before cpus_usable and xla_flags were kept: only what it has is compared.
    assert provenance.numerics_changes({"backend": "cpu"}, {**before, "cpus_usable": 1}) == []


def test_resume_with_a_different_config_is_refused(tiny, tmp_path):
    data_dir, load_split = tiny
    train.train_and_evaluate(small_config(data_dir, num_epochs=1), str(tmp_path),
                             build(load_split))
    with pytest.raises(metrics.WorkdirConfigMismatch, match=r"norm: 'layer' -> 'batch'"):
        train.train_and_evaluate(small_config(data_dir, num_epochs=1, norm="batch"),
                                 str(tmp_path), build(load_split))


def test_grad_norm_logging_changes_the_log_not_the_training(tiny, tmp_path):
    data_dir, load_split = tiny
    logged = train.train_and_evaluate(
        small_config(data_dir, norm="batch", num_epochs=2, log_grad_norm=True),
        str(tmp_path / "logged"), build(load_split))
    assert all(r["grad_norm_max"] > 0 for r in logged)
    # Off for the first epoch, then on after a resume: log_grad_norm may differ on resume.
    workdir = str(tmp_path / "switched")
    train.train_and_evaluate(
        small_config(data_dir, norm="batch", num_epochs=1, log_grad_norm=False), workdir,
        build(load_split))
    with open(os.path.join(workdir, metrics.CONFIG_FILE)) as f:
        record = json.load(f)
    record["num_epochs"] = 2  # extend the same run by an epoch
    with open(os.path.join(workdir, metrics.CONFIG_FILE), "w") as f:
        json.dump(record, f)
    switched = train.train_and_evaluate(
        small_config(data_dir, norm="batch", num_epochs=2, log_grad_norm=True), workdir,
        build(load_split))
    assert "grad_norm_max" not in switched[0] and switched[1]["grad_norm_max"] > 0
    # Same params, same metrics: only the logged diagnostic (and the first epoch's run length,
    # 1 before the extension) differ.
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("grad_norm_max", "num_rounds")}
                         for r in without_timing(rows)]
    assert drop(switched) == drop(logged)


def test_non_finite_loss_stops_with_a_clear_error(tiny, tmp_path):
    data_dir, load_split = tiny

    def build_poisoned(cfg):
        task = pi_mnist.build_task(cfg, load_split=load_split)
        poison = lambda data, idx: {"image": data["image"][idx] * jnp.nan,
                                    "label": data["label"][idx]}
        return dataclasses.replace(task, select_batch=poison)

    with pytest.raises(train.NonFiniteLossError, match="lower config.learning_rate"):
        train.train_and_evaluate(small_config(data_dir, num_epochs=1), str(tmp_path),
                                 build_poisoned)


def test_a_short_config_run_twice_gives_identical_metrics(tiny, tmp_path):
    """The same config in two fresh workdirs trains identically (data order, dropout and init all
    come from the seed), for BN at batch 4 (n - 1 variance, population statistics) and with the
    gradient-norm log on or off: two records of one config can only differ by what made them."""
    data_dir, load_split = tiny
    run = lambda name, log: without_timing(train.train_and_evaluate(
        small_config(data_dir, norm="batch", batch_size=4, num_epochs=2, log_grad_norm=log),
        str(tmp_path / name), build(load_split)))
    first, second, unlogged = run("first", True), run("second", True), run("unlogged", False)
    assert first == second
    assert [{k: v for k, v in r.items() if k != "grad_norm_max"} for r in first] == unlogged


def test_record_says_what_made_it(tiny, tmp_path):
    data_dir, load_split = tiny
    seen_precision = []

    def build_and_note_precision(config):
        seen_precision.append(jax.config.jax_default_matmul_precision)
        return build(load_split)(config)

    config = small_config(data_dir, num_epochs=1, matmul_precision="float32")
    train.train_and_evaluate(config, str(tmp_path), build_and_note_precision)
    assert seen_precision == ["float32"]  # the whole run, the task's set-up included
    (entry,) = metrics.read_provenance(str(tmp_path))
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert entry["commit"] == (head or None)
    assert isinstance(entry["dirty"], bool) or entry["commit"] is None
    assert entry["first_round"] == 0 and entry["matmul_precision"] == "float32"
    assert entry["backend"] == jax.default_backend()
    assert entry["device_kind"] == jax.devices()[0].device_kind
    assert entry["device_count"] == jax.device_count() and entry["process_count"] == 1
    assert entry["packages"]["jax"] == jax.__version__
    assert entry["cpus_usable"] == provenance.usable_cpus() >= 1
    assert entry["xla_flags"] == (os.environ.get("XLA_FLAGS") or None)  # tests/conftest.py's
    assert entry["python"] and entry["started"].endswith("+00:00")
    assert entry["source_sha256"] == provenance.source_digest()
    assert entry["code_sha256"] == provenance.code_digest()
    record = metrics.load_run(str(tmp_path))
    assert record.made_by == f"{(head or 'no-git')[:7]}{'+dirty' if entry['dirty'] else ''} " \
                             f"{jax.default_backend()} float32"
    assert metrics.provenance_note([record]).endswith("float32 (1 run).")


@pytest.mark.parametrize("key, value, message", [
    ("norm", "group", "config.norm must be one of"),
    ("batch_size", 0, "config.batch_size must be >= 1"),
    ("learning_rate", -1.0, "config.learning_rate must be a number > 0"),
    ("bn_eval_statistics", "moving", "config.bn_eval_statistics must be one of"),
    ("matmul_precision", "fast", "config.matmul_precision must be one of"),
])
def test_bad_config_values_are_refused(key, value, message):
    config = pi_mnist_config.get_config()
    config[key] = value
    with pytest.raises(ValueError, match=message):
        pi_mnist.resolve_config(config)


def test_batch_norm_needs_two_examples():
    config = pi_mnist_config.get_config("norm=batch,batch_size=1")
    with pytest.raises(ValueError, match="batch norm needs config.batch_size >= 2"):
        pi_mnist.resolve_config(config)


def test_config_argument_overrides_are_parsed_as_literals():
    config = pi_mnist_config.get_config(
        "norm=batch, batch_size=4,hidden_sizes=(32, 16),distributed=False,learning_rate=1e-3")
    assert config.norm == "batch" and config.batch_size == 4
    assert tuple(config.hidden_sizes) == (32, 16)
    assert config.distributed is False  # not bool("False")
    assert config.learning_rate == 1e-3  # a placeholder field takes a float
    with pytest.raises(ValueError, match="unknown config key 'nrom'"):
        pi_mnist_config.get_config("nrom=layer")
    with pytest.raises(TypeError):
        pi_mnist_config.get_config("batch_size=large")
    with pytest.raises(ValueError, match="unknown preset 'layer'"):
        pi_mnist_config.get_config("layer")


def test_paper_defaults_are_filled_in():
    bs4 = pi_mnist.resolve_config(pi_mnist_config.get_config("norm=batch,batch_size=4"))
    assert bs4.bn_unbiased_variance and bs4.normalize_logits  # sec. 6.6
    assert bs4.steps_per_call == 128
    ln = pi_mnist.resolve_config(pi_mnist_config.get_config("norm=layer"))
    assert not ln.normalize_logits and not ln.bn_unbiased_variance


def _run_cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "experiments.pi_mnist", *args], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=120)


def test_cli_rejects_an_unknown_config_key(tmp_path):
    result = _run_cli(["--config=configs/pi_mnist.py", "--config.nrom=layer",
                       f"--workdir={tmp_path}"])
    assert result.returncode != 0
    assert "nrom" in result.stderr


def test_cli_missing_dataset_says_to_run_make_data(tmp_path):
    result = _run_cli(["--config=configs/pi_mnist.py", f"--config.data_dir={tmp_path}/none",
                       f"--workdir={tmp_path}/run"])
    assert result.returncode != 0
    assert "make data" in result.stderr


SHARDED_RUN = """
import json, sys, jax
from lnrepro import train
from lnrepro.tasks import pi_mnist
from tests import test_train, tiny_data
data_dir, workdir = sys.argv[1], sys.argv[2]
config = test_train.small_config(data_dir, norm="batch", num_epochs=1, batch_size=16)
loader = tiny_data.tiny_loader(data_dir, tiny_data.make_tiny_mnist(data_dir))
rows = train.train_and_evaluate(config, workdir, test_train.build(loader))
print(json.dumps({"devices": jax.device_count(), "row": rows[-1]}))
"""


def cpu_devices_env(devices: int) -> dict[str, str]:
    """Environment for a subprocess with `devices` CPU devices: the CPU platform forced (a GPU
    machine would otherwise run on its GPU), the caller's XLA_FLAGS and PYTHONPATH extended."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags.strip(), "PYTHONPATH": path}


def test_sharded_training_matches_one_device(tiny, tmp_path):
    """Two CPU devices, the batch split over them: BN's statistics still cover the global batch,
    so the run matches a one-device run."""
    data_dir, _ = tiny
    outputs = {}
    for devices in (1, 2):
        env = cpu_devices_env(devices)
        result = subprocess.run([sys.executable, "-c", SHARDED_RUN, data_dir,
                                 str(tmp_path / f"d{devices}")], cwd=REPO, capture_output=True,
                                text=True, env={**os.environ, **env}, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[devices] = json.loads(result.stdout.strip().splitlines()[-1])
    assert outputs[2]["devices"] == 2
    one, two = outputs[1]["row"], outputs[2]["row"]
    for key in ("train_loss_running", "train_nll", "test_nll", "valid_nll"):
        np.testing.assert_allclose(two[key], one[key], rtol=2e-4, err_msg=key)


def test_bn_with_batch_statistics_at_eval_ignores_padded_rows():
    """bn_eval_statistics='batch': the zero rows that pad the last evaluation batch (weight 0)
    must not enter BN's statistics, so the real rows' logits do not change when padding is
    added; LN never looks at other rows in the first place."""
    from lnrepro.models import mlp
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((6, 784)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 6), jnp.int32)
    model = mlp.MLP(hidden_sizes=(16,), norm="batch", normalize_logits=True,
                    bn_eval_statistics="batch")
    real = {"image": images, "label": labels, "weight": jnp.ones(6)}
    padded = {"image": jnp.pad(images, ((0, 4), (0, 0))), "label": jnp.pad(labels, (0, 4)),
              "weight": jnp.pad(jnp.ones(6), (0, 4))}
    variables = model.init(jax.random.key(0), real, train=False)
    logits_real = model.apply(variables, real, train=False)
    logits_padded = model.apply(variables, padded, train=False)
    np.testing.assert_allclose(np.asarray(logits_padded[:6]), np.asarray(logits_real),
                               rtol=1e-5, atol=1e-5)
    unmasked = model.apply(variables, {k: v for k, v in padded.items() if k != "weight"},
                           train=False)
    assert not np.allclose(np.asarray(unmasked[:6]), np.asarray(logits_real), atol=1e-3)
