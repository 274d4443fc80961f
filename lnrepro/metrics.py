"""The workdir record: config.json, metrics.jsonl (one JSON line per evaluation), a progress line.

Plots and tables are rebuilt from metrics.jsonl alone, so every line carries what a reader needs
(the round, the step, the examples seen, wall time) next to the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Iterable

from absl import logging

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PROVENANCE_FILE = "provenance.json"
DIVERGED_FILE = "diverged.json"  # a run stopped because its loss or metrics stopped being finite
RECORD_FILES = (CONFIG_FILE, METRICS_FILE, PROVENANCE_FILE, DIVERGED_FILE)
# Settings that may differ between a run and its record without changing what it trains: where
# the data lives, a logged diagnostic (training is identical with it on or off), and the table a
# default learning rate is looked up in (config.json records the rate itself).
RESUMABLE_CHANGES = ("data_dir", "log_grad_norm", "searched_learning_rates")
# Settings that older records carry and no config has any more; none of them changed training.
RETIRED_SETTINGS = ("experiment",)
# Settings added after records were made, with the value those records ran with.
# matmul_precision: every record made before it existed ran on the CPU, where every precision
# computes true float32 products ("highest"; tests/test_train.py checks they train identically).
LEGACY_DEFAULTS = {"matmul_precision": "highest"}
# Metrics a row may lack although its round is complete (config.log_grad_norm may change).
OPTIONAL_METRICS = ("grad_norm_max",)


class WorkdirConfigMismatch(ValueError):
    """The workdir holds a run made with another config."""


def _json_default(value: Any):
    if hasattr(value, "tolist"):  # numpy and jax scalars and arrays
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def config_differences(old: dict[str, Any], new: dict[str, Any],
                       ignore: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
    """key -> (old, new) for the settings two JSON configs disagree on, `ignore` aside. A key
    that a config made before the key existed lacks counts as its LEGACY_DEFAULTS value (on
    either side); RETIRED_SETTINGS are not compared."""
    old = {k: v for k, v in old.items() if k not in RETIRED_SETTINGS}
    new = {k: v for k, v in new.items() if k not in RETIRED_SETTINGS}
    old = {**{k: v for k, v in LEGACY_DEFAULTS.items() if k in new}, **old}
    new = {**{k: v for k, v in LEGACY_DEFAULTS.items() if k in old}, **new}
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if k not in ignore and old.get(k) != new.get(k)}


def as_json(config: dict[str, Any]) -> dict[str, Any]:
    """The config as config.json stores it (tuples as lists, numpy scalars as numbers)."""
    return json.loads(json.dumps(config, default=_json_default, sort_keys=True))


def check_config(workdir: str, config: dict[str, Any], *, ignore: Iterable[str] = ()) -> None:
    """Raises WorkdirConfigMismatch if workdir's config.json (when there is one) differs from
    `config` in anything but `ignore`."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    differing = config_differences(read_config(workdir), as_json(config), ignore)
    if differing:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in differing.items())
        raise WorkdirConfigMismatch(
            f"{workdir} holds a run with a different config ({details}). Use a new --workdir, "
            f"or delete {workdir} to start this run over.")


def write_config(workdir: str, config: dict[str, Any], *, ignore: Iterable[str] = ()) -> None:
    """Writes config.json, or checks that a resumed run uses the same config.

    `ignore` names keys that may differ on resume (e.g. where the data lives).
    """
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, config, ignore=ignore)
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        _atomic_write(path, json.dumps(as_json(config), indent=2, sort_keys=True) + "\n")


def read_config(workdir: str) -> dict[str, Any]:
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
        return json.load(f)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """All metric lines of a run ([] if none). A torn last line (a kill mid-write) is dropped."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def truncate_metrics(workdir: str, last_round: int) -> None:
    """Keeps the lines up to `last_round`: on resume, later rounds are recomputed."""
    rows = [r for r in read_metrics(workdir) if r["round"] <= last_round]
    _atomic_write(os.path.join(workdir, METRICS_FILE),
                  "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))


def append_metrics(workdir: str, row: dict[str, Any]) -> None:
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None  # JSON has no NaN or Infinity; plots skip missing values
    with open(os.path.join(workdir, METRICS_FILE), "a") as f:
        f.write(json.dumps(row, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_provenance(workdir: str) -> list[dict[str, Any]]:
    """The run's provenance entries, one per start or resume ([] for records made before
    provenance was kept)."""
    path = os.path.join(workdir, PROVENANCE_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def append_provenance(workdir: str, first_round: int, entry: dict[str, Any]) -> None:
    """Records what (re)started the run at `first_round`. Entries of earlier starts at that round
    or later are dropped, as their rounds are recomputed (see truncate_metrics)."""
    kept = [e for e in read_provenance(workdir) if e["first_round"] < first_round]
    kept.append({"first_round": first_round, **entry})
    _atomic_write(os.path.join(workdir, PROVENANCE_FILE),
                  json.dumps(kept, indent=2, default=_json_default) + "\n")


def read_diverged(workdir: str) -> dict[str, Any] | None:
    """Where and how the run diverged, or None."""
    path = os.path.join(workdir, DIVERGED_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_diverged(workdir: str, round_index: int, round_name: str, key: str,
                   value: float) -> None:
    """Records that the run stopped in `round_index` (0-based) because `key` became `value`
    (non-finite; written as a string, which JSON can hold)."""
    record = {"round": round_index, "round_name": round_name, "key": key,
              "value": repr(float(value))}
    _atomic_write(os.path.join(workdir, DIVERGED_FILE), json.dumps(record) + "\n")


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A finished or partial run as its record: config.json and metrics.jsonl."""
    name: str
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    # One entry per start or resume (lnrepro/provenance.py); empty for older records.
    provenance: tuple[dict[str, Any], ...] = ()
    # {'round', 'key', 'value'} when the run stopped on a non-finite number, else None.
    diverged: dict[str, Any] | None = None

    @property
    def num_rounds(self) -> int:
        """The rounds the run was configured for: epochs (pi-MNIST) or validation intervals
        (the reader), from its config."""
        if "num_epochs" in self.config:
            return self.config["num_epochs"]
        return self.config["num_updates"] // self.config["eval_every"]

    @property
    def done(self) -> bool:
        """Nothing left to run: finished, or stopped as diverged (re-running would diverge
        again: data order and initialization depend only on the seed)."""
        return self.finished or self.diverged is not None

    @property
    def finished(self) -> bool:
        """Every round the run was configured for is recorded, once each, in order, with every
        metric of the first round (a logged diagnostic aside), and every value is finite (a
        non-finite value is written as null)."""
        if [r["round"] for r in self.rows] != list(range(self.num_rounds)):
            return False
        required = set(self.rows[0]) - set(OPTIONAL_METRICS)
        return all(required <= set(row) and None not in row.values() for row in self.rows)

    @property
    def made_by(self) -> str:
        """What produced the record (provenance_label of each start, ' then ' between them)."""
        labels = list(dict.fromkeys(provenance_label(e) for e in self.provenance))
        return " then ".join(labels) if labels else provenance_label(None)

    def series(self, key: str, x: str = "round") -> tuple[list[float], list[float]]:
        """(x values, key values) over the rows that have `key`."""
        rows = [r for r in self.rows if r.get(key) is not None]
        return [r[x] for r in rows], [r[key] for r in rows]


def commit_label(entry: dict[str, Any]) -> str:
    """A provenance entry's commit, short: '962e2ca', '962e2ca+dirty' (uncommitted changes) or
    'no-git'."""
    return (entry.get("commit") or "no-git")[:7] + ("+dirty" if entry.get("dirty") else "")


def provenance_label(entry: dict[str, Any] | None) -> str:
    """A short name for what made a run, e.g. '962e2ca+dirty cpu highest' (commit, backend,
    matmul precision); 'unrecorded' for records made before provenance was kept."""
    if not entry:
        return "unrecorded"
    return f"{commit_label(entry)} {entry.get('backend')} {entry.get('matmul_precision')}"


def provenance_note(records: Iterable[RunRecord]) -> str:
    """One line for under a table: how many of its records each code/backend/precision made."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record.made_by] = counts.get(record.made_by, 0) + 1
    parts = [f"{label} ({n} run{'s' if n > 1 else ''})" for label, n in sorted(counts.items())]
    return "Made by (commit, backend, matmul precision): " + "; ".join(parts) + "."


def load_run(run_dir: str, name: str | None = None) -> RunRecord | None:
    """The record in run_dir, or None if it has no config.json, or neither a metric line nor a
    divergence record yet."""
    if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
        return None
    rows = read_metrics(run_dir)
    if not rows and not os.path.exists(os.path.join(run_dir, DIVERGED_FILE)):
        return None
    return RunRecord(name or run_dir, read_config(run_dir), rows,
                     tuple(read_provenance(run_dir)), read_diverged(run_dir))


def load_runs(results_dir: str) -> list[RunRecord]:
    """Every run directory below results_dir holding a config.json and at least one metric line,
    or a divergence record (a run that diverged in its first round has no metric line, and is a
    result all the same)."""
    records = []
    for root, _, files in sorted(os.walk(results_dir)):
        if METRICS_FILE in files or DIVERGED_FILE in files:
            record = load_run(root, os.path.relpath(root, results_dir))
            if record is not None:
                records.append(record)
    return records


class MixedSettingsError(ValueError):
    """Records that a table would pool as seeds of one setting differ in another setting."""


def group_runs(records: Iterable[RunRecord], keys: tuple[str, ...]
               ) -> dict[tuple, list[RunRecord]]:
    """Groups runs by the values of config `keys` (e.g. ('norm', 'batch_size')); seeds pool.

    Raises MixedSettingsError if two runs of a group differ in any setting but the seed (and
    RESUMABLE_CHANGES): pooling them would report one setting's numbers for another's.
    """
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(tuple(record.config.get(k) for k in keys), []).append(record)
    for value, runs in groups.items():
        for run in runs[1:]:
            differing = config_differences(runs[0].config, run.config,
                                           ignore=(*RESUMABLE_CHANGES, "seed", *keys))
            if differing:
                details = ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in differing.items())
                raise MixedSettingsError(
                    f"records {runs[0].name} and {run.name} both have "
                    f"{dict(zip(keys, value))} but differ in {details}: they are not seeds of "
                    f"one setting. Move the stale record out of the results directory.")
    return groups


def prefer_finished(runs: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(runs to report, runs left out): the finished runs when a group has any, so that a partial
    seed neither cuts the finished ones short nor pools its early epochs with their final ones;
    otherwise the partial runs still going (their epoch count then says how far they got).
    Diverged runs are always left out: their last numbers are from before they broke down. So
    a group whose runs all diverged has none to report."""
    finished = [run for run in runs if run.finished]
    going = [run for run in runs if not run.finished and run.diverged is None]
    diverged = [run for run in runs if run.diverged is not None]
    return (finished, going + diverged) if finished else (going, diverged)


class Progress:
    """One log line per round: metrics, throughput and an ETA from the rounds timed so far."""

    def __init__(self, total_rounds: int, first_round: int):
        self.total_rounds = total_rounds
        self.first_round = first_round
        self.start = time.time()

    def line(self, round_index: int, row: dict[str, Any], name: str | None = None) -> str:
        done = round_index - self.first_round + 1
        elapsed = time.time() - self.start
        eta = elapsed / max(done, 1) * (self.total_rounds - round_index - 1)
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in row.items() if k not in ("round", "num_rounds"))
        prefix = f"{name} " if name else ""
        return f"{prefix}[{round_index + 1}/{self.total_rounds}] {shown} eta={_duration(eta)}"

    def log(self, round_index: int, row: dict[str, Any], name: str | None = None) -> None:
        logging.info("%s", self.line(round_index, row, name))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
