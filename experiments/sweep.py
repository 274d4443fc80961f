"""Runs a sweep: one driver process per run, finished runs skipped, records copied to results/.

  python -m experiments.sweep --sweep=configs/pi_mnist_sweeps.py:fig6 \
      --workdir_root=runs/pi_mnist --results_dir=results/pi_mnist

A sweep file's `get_config(name)` returns {'driver', 'task', 'base_config', 'runs': [{'name',
'overrides'}]}; 'task' is the module whose resolve_config fills in a run's whole config.
The sweep copies each run's config.json and metrics.jsonl to `<results_dir>/<name>/` when the
driver exits, so those small files can be committed while checkpoints stay in the workdir. A run
is finished when its record there holds every round it was configured for. An interrupted run
resumes from its workdir's checkpoint the next time the sweep runs; `--publish_only` copies the
records of runs in progress (partial, and marked so by their round count) without running
anything, so they can be committed before a session ends.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common
from lnrepro import metrics

_SWEEP = config_flags.DEFINE_config_file("sweep", None, "Sweep file, e.g. "
                                         "configs/pi_mnist_sweeps.py:fig6.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", None, "Runs go to <workdir_root>/<name>.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Finished runs' config.json and "
                                   "metrics.jsonl are copied to <results_dir>/<name>/.")
_PUBLISH_ONLY = flags.DEFINE_bool("publish_only", False, "Copy the records of every run with a "
                                  "workdir (finished or not) to --results_dir; run nothing.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands without running them.")
_ONLY = flags.DEFINE_string("only", None, "Run only the runs whose name matches this regular "
                            "expression (re.search), e.g. 'bs128' or 'seed0$'.")
_SHARD = flags.DEFINE_string("shard", None, "INDEX/COUNT: run only every COUNT-th run, starting "
                             "at INDEX (0-based), to split a sweep over machines, e.g. "
                             "--shard=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.")
flags.mark_flags_as_required(["sweep", "workdir_root", "results_dir"])


def run_command(driver: str, base_config: str, overrides: dict[str, Any], workdir: str) -> list:
    """The driver's command line: `python -m <driver> --config=... --config.k=v ...`."""
    args = [sys.executable, "-m", driver, f"--config={base_config}", f"--workdir={workdir}"]
    for key, value in overrides.items():
        if isinstance(value, (tuple, list)):
            value = "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        args.append(f"--config.{key}={value}")
    return args


class StaleRecordError(ValueError):
    """A record in results_dir was made with other settings than the sweep now asks for."""


def expected_config(sweep, overrides: dict[str, Any]) -> dict[str, Any]:
    """The whole config a run of the sweep trains with (defaults filled in by its task), as its
    config.json would record it."""
    config = common.load_config_file(sweep.base_config)
    for key, value in overrides.items():
        config[key] = value
    task = importlib.import_module(sweep.task)
    return metrics.as_json(task.resolve_config(config).to_dict())


def check_record(results_dir: str, name: str, expected: dict[str, Any]) -> None:
    """Refuses a record whose config differs from the run's whole config (`expected_config`)
    in anything that changes training: skipping it as finished (or pooling it in the tables)
    would report numbers for settings the sweep no longer runs."""
    record = metrics.load_run(os.path.join(results_dir, name))
    if record is None:
        return
    differing = metrics.config_differences(record.config, expected, metrics.RESUMABLE_CHANGES)
    if differing:
        details = ", ".join(f"{k}: record {old!r}, sweep {new!r}"
                            for k, (old, new) in differing.items())
        raise StaleRecordError(
            f"{os.path.join(results_dir, name)} holds a record made with other settings "
            f"({details}). Move that directory away to re-run it with the sweep's settings, or "
            f"point --results_dir elsewhere.")


def is_finished(results_dir: str, name: str) -> bool:
    record = metrics.load_run(os.path.join(results_dir, name))
    return record is not None and record.finished


def publish(workdir: str, results_dir: str, name: str) -> None:
    """Copies the run's record (config.json, metrics.jsonl, provenance.json; not its
    checkpoints) into results_dir/name."""
    target = os.path.join(results_dir, name)
    os.makedirs(target, exist_ok=True)
    for filename in metrics.RECORD_FILES:
        if not os.path.exists(os.path.join(workdir, filename)):
            continue  # provenance.json: absent from workdirs made before it was kept
        shutil.copyfile(os.path.join(workdir, filename), os.path.join(target, filename + ".tmp"))
        os.replace(os.path.join(target, filename + ".tmp"), os.path.join(target, filename))


def select_runs(runs, only: str | None) -> list:
    """The runs whose name matches the regular expression `only` (all of them when None)."""
    if only is None:
        return list(runs)
    selected = [run for run in runs if re.search(only, run["name"])]
    if not selected:
        raise ValueError(f"--only={only!r} matches none of the sweep's runs: "
                         f"{[run['name'] for run in runs]}.")
    return selected


def shard_runs(runs, shard: str | None) -> list:
    """The runs of shard 'INDEX/COUNT': every COUNT-th run from INDEX on (all when None). The
    shards of one COUNT cover every run once, so COUNT machines can share a sweep, each writing
    its own runs' records."""
    if shard is None:
        return list(runs)
    match = re.fullmatch(r"(\d+)/(\d+)", shard)
    if not match or not int(match[1]) < int(match[2]):
        raise ValueError(f"--shard={shard!r}: expected INDEX/COUNT with 0 <= INDEX < COUNT, "
                         f"e.g. 0/4.")
    index, count = int(match[1]), int(match[2])
    return list(runs)[index::count]


def run_sweep(sweep, workdir_root: str, results_dir: str, dry_run: bool = False,
              only: str | None = None, shard: str | None = None) -> list[str]:
    """Runs every unfinished run (matching `only`, in `shard`) in order; returns the names of
    those it ran."""
    ran = []
    runs = shard_runs(select_runs(sweep.runs, only), shard)
    for index, run in enumerate(runs):
        name = run["name"]
        check_record(results_dir, name, expected_config(sweep, dict(run["overrides"])))
        if is_finished(results_dir, name):
            logging.info("[%d/%d] %s: finished, skipped.", index + 1, len(runs), name)
            continue
        workdir = os.path.join(workdir_root, name)
        command = run_command(sweep.driver, sweep.base_config, dict(run["overrides"]), workdir)
        logging.info("[%d/%d] %s: %s", index + 1, len(runs), name, " ".join(command))
        if dry_run:
            continue
        start = time.time()
        result = subprocess.run(command)
        if result.returncode != 0:
            raise RuntimeError(f"run {name} failed (exit {result.returncode}); its log is above. "
                               f"Re-running the sweep resumes it from {workdir}.")
        publish(workdir, results_dir, name)
        logging.info("%s finished in %.0f s.", name, time.time() - start)
        ran.append(name)
    return ran


def publish_all(sweep, workdir_root: str, results_dir: str) -> list[str]:
    """Copies the record of every run that has written metrics, finished or not."""
    published = []
    for run in sweep.runs:
        workdir = os.path.join(workdir_root, run["name"])
        if metrics.load_run(workdir) is not None:
            publish(workdir, results_dir, run["name"])
            published.append(run["name"])
    return published


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    if _PUBLISH_ONLY.value:
        logging.info("published: %s", publish_all(_SWEEP.value, _WORKDIR_ROOT.value,
                                                  _RESULTS_DIR.value))
        return
    run_sweep(_SWEEP.value, _WORKDIR_ROOT.value, _RESULTS_DIR.value, _DRY_RUN.value,
              _ONLY.value, _SHARD.value)


if __name__ == "__main__":
    app.run(main)
