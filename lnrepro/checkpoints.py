"""Orbax checkpoints in workdir/checkpoints, one per round, so a killed run resumes.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a kill
mid-save leaves the previous checkpoint as the latest one. After each save we also write the
sha256 of every file of the checkpoint (`CHECKSUM_FILE`, inside its step directory); a restore
verifies them first, so a corrupted checkpoint (a flipped byte, a truncated file) is detected
rather than silently restored, and the run falls back to the newest checkpoint that verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

CHECKPOINT_DIR = "checkpoints"
CHECKSUM_FILE = "lnrepro_sha256.json"


class NoGoodCheckpointError(RuntimeError):
    """Checkpoints exist but none of them verifies or restores."""


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def step_dir(manager: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(os.fspath(manager.directory), str(step))


def file_checksums(directory: str) -> dict[str, str]:
    """relative path -> sha256 of every file below `directory` except the checksum file."""
    sums = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory)
            if relative.startswith(CHECKSUM_FILE):  # the checksums themselves, or their .tmp
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            sums[relative] = digest.hexdigest()
    return dict(sorted(sums.items()))


def verify(directory: str) -> str | None:
    """None if the checkpoint in `directory` matches its recorded checksums, else why not."""
    path = os.path.join(directory, CHECKSUM_FILE)
    if not os.path.exists(path):
        return "it has no checksum file (the run stopped before it was written)"
    with open(path) as f:
        expected = json.load(f)
    actual = file_checksums(directory)
    changed = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
    if changed:
        return f"{len(changed)} file(s) differ from their checksums: {', '.join(changed[:3])}"
    return None


def save(manager: ocp.CheckpointManager, round_index: int, state: Any) -> None:
    """Saves the state after `round_index` (0-based), waits until it is on disk, then records
    its checksums (process 0 of a multi-process run; the files are shared)."""
    manager.save(round_index, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    if jax.process_index() == 0:
        directory = step_dir(manager, round_index)
        sums = file_checksums(directory)
        tmp = os.path.join(directory, CHECKSUM_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(sums, f, indent=1)
        os.replace(tmp, os.path.join(directory, CHECKSUM_FILE))


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[int | None, Any]:
    """(last finished round, restored state) from the newest checkpoint that verifies, or
    (None, target) in a workdir without checkpoints.

    A checkpoint that fails its checksums or its restore is skipped with a warning that names
    it; if every checkpoint fails, NoGoodCheckpointError says what to do. `target` gives the
    structure, shapes and shardings to restore into.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None, target
    problems, bad_steps = [], []
    for step in steps:
        problem = verify(step_dir(manager, step))
        if problem is None:
            try:
                restored = manager.restore(step, args=ocp.args.StandardRestore(target))
            except Exception as error:  # orbax raises several types for a damaged checkpoint
                problem = f"it cannot be restored ({type(error).__name__}: {error})"
            else:
                for bad in bad_steps:  # make room for the rounds that are recomputed
                    manager.delete(bad)
                if bad_steps:
                    logging.warning("Resuming from the older checkpoint %s instead.",
                                    step_dir(manager, step))
                return step, restored
        problems.append(f"checkpoint {step_dir(manager, step)}: {problem}")
        logging.warning("Skipping checkpoint %s: %s.", step_dir(manager, step), problem)
        bad_steps.append(step)
    raise NoGoodCheckpointError(
        "no checkpoint in {} can be used: {}. Delete the workdir (or its checkpoints/ and "
        "metrics.jsonl) to start the run over.".format(manager.directory, "; ".join(problems)))
