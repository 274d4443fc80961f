"""Runs a sweep in one process: its runs grouped into vmapped programs, done runs skipped,
records copied to results/.

  python -m experiments.sweep --sweep=configs/pi_mnist_sweeps.py:fig6 \
      --workdir_root=runs/pi_mnist/fig6 --results_dir=results/pi_mnist/fig6

A sweep file's `get_config(name)` returns {'driver', 'task', 'base_config', 'runs': [{'name',
'overrides'}]}; 'task' is the module whose resolve_config and build_task define a run, 'driver'
the module that runs one alone (the equivalent command of each run, shown by --dry_run).
Runs that differ only in seed and optimizer settings train as the members of one group
(lnrepro.train.train_members: one vmapped program on an accelerator, turns through one compiled
program on the CPU): start-up, data loading and compiling are paid once per group, not per run.
Each member writes its own standard workdir (`<workdir_root>/<name>`), and the
sweep copies its record (config.json, metrics.jsonl, provenance.json, diverged.json) to
`<results_dir>/<name>/` when its program ends, so those small files can be committed while
checkpoints stay in the workdir. A run is done when its record there is finished or diverged.
An interrupted program resumes from its members' checkpoints the next time the sweep runs;
`--publish_only` copies the records of runs in progress (partial, and marked so by their round
count) without running anything, so they can be committed while the sweep goes on.
`--reuse_from=DIR` lets another sweep's records stand in for runs that train exactly the same
(e.g. Fig. 6's first seeds at the searched rate are the search's own runs): such a run takes a
copy of the record instead of training again.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import re
import shutil
import sys
import time
from typing import Any, Collection, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common
from lnrepro import metrics, train

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
_REUSE_FROM = flags.DEFINE_multi_string(
    "reuse_from", [], "A results directory (repeat the flag for more) whose finished or diverged "
    "records stand in for this sweep's runs that train exactly the same (the same whole config, "
    "as in the stale-record check): such a run gets a copy of the record, with copied_from.json "
    "naming its source, instead of training again.")
_MEMBERS_PER_PROGRAM = flags.DEFINE_integer(
    "members_per_program", 0, "At most this many runs train as the members of one group (runs "
    "of the same shapes that differ in seed and optimizer settings; one vmapped program on an "
    "accelerator, turns through one compiled program on the CPU). 0: all of a group.")


def run_command(driver: str, base_config: str, overrides: dict[str, Any], workdir: str) -> list:
    """The driver's command line: `python -m <driver> --config=... --config.k=v ...`."""
    args = [sys.executable, "-m", driver, f"--config={base_config}", f"--workdir={workdir}"]
    for key, value in overrides.items():
        if isinstance(value, (tuple, list)):
            value = "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        args.append(f"--config.{key}={value}")
    return args


# Beside a record that a sweep copied from another sweep's (--reuse_from): where it came from.
COPIED_FROM_FILE = "copied_from.json"


class StaleRecordError(ValueError):
    """A record in results_dir was made with other settings than the sweep now asks for."""


def resolved_config(sweep, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """The whole config a run of the sweep trains with: its base config file, the run's
    overrides, and the defaults its task fills in."""
    config = common.load_config_file(sweep.base_config)
    for key, value in overrides.items():
        config[key] = value
    return importlib.import_module(sweep.task).resolve_config(config)


def expected_config(sweep, overrides: dict[str, Any]) -> dict[str, Any]:
    """resolved_config as its config.json would record it."""
    return metrics.as_json(resolved_config(sweep, overrides).to_dict())


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


def is_done(results_dir: str, name: str) -> bool:
    """The run's record is finished, or it diverged (re-running would diverge again)."""
    record = metrics.load_run(os.path.join(results_dir, name))
    return record is not None and record.done


def publish(workdir: str, results_dir: str, name: str) -> None:
    """Copies the run's record (config.json, metrics.jsonl, provenance.json; not its
    checkpoints) from its workdir (or another record's directory) into results_dir/name."""
    target = os.path.join(results_dir, name)
    os.makedirs(target, exist_ok=True)
    # The files that make a record done (is_done) go last: a copy interrupted before it is whole
    # is not done, and is made again.
    last = (metrics.METRICS_FILE, metrics.DIVERGED_FILE)
    for filename in sorted(metrics.RECORD_FILES, key=lambda file: file in last):
        if not os.path.exists(os.path.join(workdir, filename)):
            continue  # provenance.json: absent from workdirs made before it was kept
        shutil.copyfile(os.path.join(workdir, filename), os.path.join(target, filename + ".tmp"))
        os.replace(os.path.join(target, filename + ".tmp"), os.path.join(target, filename))


def find_reusable(sweep, runs, results_dir: str, reuse_from: Sequence[str]) -> dict[str, str]:
    """name -> the directory of a done record under `reuse_from` that trained what the run
    trains, for each run not yet done in results_dir that has one. "What it trains" is the
    whole config, compared as check_record compares it: a setting that changes training
    (seed, rate, epochs, ...) must match, where the data lives and the rate table need not.
    Such a record is a run of this very training: Fig. 6's batch-128 seeds 0 and 1, run again
    on the machine that made the search, repeat the search's records bit for bit."""
    missing = [directory for directory in reuse_from if not os.path.isdir(directory)]
    if missing:
        raise ValueError(f"--reuse_from={missing[0]!r} is not a directory. Name a results "
                         f"directory of finished runs, e.g. results/pi_mnist/lr_search_full.")
    candidates = [(os.path.join(directory, record.name), record)
                  for directory in reuse_from for record in metrics.load_runs(directory)
                  if record.done]
    if not candidates:
        return {}
    reusable = {}
    for run in runs:
        expected = expected_config(sweep, dict(run["overrides"]))
        check_record(results_dir, run["name"], expected)  # never copy over a stale record
        if is_done(results_dir, run["name"]):
            continue
        for source, record in candidates:
            if not metrics.config_differences(record.config, expected,
                                              metrics.RESUMABLE_CHANGES):
                reusable[run["name"]] = source
                break
    return reusable


def copy_record(source: str, results_dir: str, name: str) -> None:
    """Publishes the record in `source` as run `name`'s, saying where it came from first (a copy
    interrupted before its record is whole is not done, and is copied again)."""
    target = os.path.join(results_dir, name)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, COPIED_FROM_FILE), "w") as f:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        json.dump({"copied_from": source, "copied_at": now}, f, indent=2)
        f.write("\n")
    publish(source, results_dir, name)


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


def plan_programs(sweep, runs, results_dir: str, members_per_program: int = 0,
                  copied: Collection[str] = ()
                  ) -> list[list[tuple[dict, ml_collections.ConfigDict]]]:
    """The runs still to do, as programs: [(run, its whole config)] per program.

    Runs that can share a program (equal `train.program_key`: the same shapes, norm, batch
    size, model, cell; they differ only in seed and optimizer settings) are grouped in the
    sweep's order, up to `members_per_program` members each (0: the whole group). A run whose
    record in results_dir is done (finished or diverged) or that is `copied` (find_reusable) is
    skipped; a stale record stops the sweep (check_record).
    """
    groups: dict[str, list] = {}
    for run in runs:
        config = resolved_config(sweep, dict(run["overrides"]))
        check_record(results_dir, run["name"], metrics.as_json(config.to_dict()))
        if run["name"] in copied:
            continue  # run_sweep logged where its record comes from
        if is_done(results_dir, run["name"]):
            logging.info("%s: done, skipped.", run["name"])
            continue
        groups.setdefault(train.program_key(config), []).append((run, config))
    programs = []
    for members in groups.values():
        size = members_per_program or len(members)
        programs += [members[i:i + size] for i in range(0, len(members), size)]
    # Programs start in the sweep's order of their first member, so that with small programs
    # the sweep's priority order (e.g. seed by seed) is kept.
    position = {run["name"]: i for i, run in enumerate(runs)}
    return sorted(programs, key=lambda program: position[program[0][0]["name"]])


def run_sweep(sweep, workdir_root: str, results_dir: str, dry_run: bool = False,
              only: str | None = None, shard: str | None = None,
              members_per_program: int = 0, reuse_from: Sequence[str] = ()) -> list[str]:
    """Runs every run not yet done (matching `only`, in `shard`), program after program in this
    one process (data loaded and each program compiled once), and publishes each member's
    record when its program ends. A run that a record under `reuse_from` already trained gets a
    copy of it first (find_reusable). Returns the names of the runs it ran."""
    task = importlib.import_module(sweep.task)
    runs = shard_runs(select_runs(sweep.runs, only), shard)
    reusable = find_reusable(sweep, runs, results_dir, reuse_from)
    for name, source in reusable.items():
        logging.info("%s: trains what %s trained; %s its record.", name, source,
                     "would copy" if dry_run else "copying")
        if not dry_run:
            copy_record(source, results_dir, name)
    programs = plan_programs(sweep, runs, results_dir, members_per_program, copied=reusable)
    ran = []
    for index, program in enumerate(programs):
        names = [run["name"] for run, _ in program]
        logging.info("[program %d/%d] %d member(s): %s", index + 1, len(programs),
                     len(program), ", ".join(names))
        if dry_run:
            for run, _ in program:
                logging.info("  %s", " ".join(run_command(
                    sweep.driver, sweep.base_config, dict(run["overrides"]),
                    os.path.join(workdir_root, run["name"]))))
            continue
        start = time.time()
        workdirs = [os.path.join(workdir_root, name) for name in names]
        train.train_members([config for _, config in program], workdirs, task.build_task)
        for name, workdir in zip(names, workdirs):
            publish(workdir, results_dir, name)
        logging.info("program %d/%d finished in %.0f s.", index + 1, len(programs),
                     time.time() - start)
        ran += names
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
    common.setup_logging()
    if _PUBLISH_ONLY.value:
        logging.info("published: %s", publish_all(_SWEEP.value, _WORKDIR_ROOT.value,
                                                  _RESULTS_DIR.value))
        return
    with common.errors_last():
        run_sweep(_SWEEP.value, _WORKDIR_ROOT.value, _RESULTS_DIR.value, _DRY_RUN.value,
                  _ONLY.value, _SHARD.value, _MEMBERS_PER_PROGRAM.value, _REUSE_FROM.value)


if __name__ == "__main__":
    # Required only when run: a test process that imports this module and parses other flags
    # must not need them.
    flags.mark_flags_as_required(["sweep", "workdir_root", "results_dir"])
    app.run(main)
