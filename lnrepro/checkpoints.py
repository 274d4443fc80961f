"""Orbax checkpoints in workdir/checkpoints, one per round, so a killed run resumes.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a kill
mid-save leaves the previous checkpoint as the latest one. After each save we also write the
sha256 of every file of the checkpoint (`CHECKSUM_FILE`, inside its step directory); a restore
verifies them first, so a corrupted checkpoint (a flipped byte, a truncated file) is detected
rather than silently restored, and the run falls back to the newest checkpoint that verifies
(`verified_steps`, `restore`).
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
        return ("it has no checksum file (the run stopped before it was written, or an older "
                "lnrepro made it)")
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
    if not manager.save(round_index, args=ocp.args.StandardSave(state), force=True):
        raise RuntimeError(f"orbax did not save checkpoint {round_index} in "
                           f"{manager.directory}: a newer one is there. Delete the workdir's "
                           f"checkpoints/ and metrics.jsonl to start the run over.")
    manager.wait_until_finished()
    if jax.process_index() == 0:
        directory = step_dir(manager, round_index)
        sums = file_checksums(directory)
        tmp = os.path.join(directory, CHECKSUM_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(sums, f, indent=1)
        os.replace(tmp, os.path.join(directory, CHECKSUM_FILE))


def verified_steps(manager: ocp.CheckpointManager) -> list[int]:
    """The steps whose checkpoints match their checksums, newest first. Each one that does not
    is named in a warning; if checkpoints exist but none verifies, NoGoodCheckpointError says
    what to do."""
    steps = sorted(manager.all_steps(), reverse=True)
    good, problems = [], []
    for step in steps:
        problem = verify(step_dir(manager, step))
        if problem is None:
            good.append(step)
        else:
            problems.append(f"checkpoint {step_dir(manager, step)}: {problem}")
            logging.warning("Skipping checkpoint %s: %s.", step_dir(manager, step), problem)
    if steps and not good:
        raise NoGoodCheckpointError(
            "no checkpoint in {} can be used: {}. Delete the workdir (or its checkpoints/ and "
            "metrics.jsonl) to start the run over.".format(manager.directory, "; ".join(problems)))
    return good


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
    """The state saved at `step` (verified first), restored into `target`'s structure, shapes
    and shardings. Checkpoints after `step` are deleted, with a warning: their rounds are
    recomputed, and their step numbers must be free for the new saves."""
    problem = verify(step_dir(manager, step))
    if problem is not None:
        raise NoGoodCheckpointError(f"checkpoint {step_dir(manager, step)}: {problem}.")
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as error:  # orbax raises several types for a state it cannot restore
        raise NoGoodCheckpointError(
            f"checkpoint {step_dir(manager, step)} cannot be restored into this run's state "
            f"({type(error).__name__}: {error}). An older lnrepro with another optimizer state "
            f"may have made it: delete the workdir (or its checkpoints/ and metrics.jsonl) to "
            f"start the run over.") from error
    newer = [s for s in manager.all_steps() if s > step]
    if newer:
        logging.warning("Resuming from the older checkpoint %s; deleting the later %s.",
                        step_dir(manager, step), newer)
        for s in newer:
            manager.delete(s)
    return restored


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[int | None, Any]:
    """(last finished round, restored state) from the newest checkpoint that verifies and
    restores, or (None, target) in a workdir without checkpoints. Checkpoints that fail are
    skipped with a warning; if all fail, NoGoodCheckpointError says what to do."""
    problems = []
    for step in verified_steps(manager):
        try:
            return step, restore(manager, step, target)
        except Exception as error:  # orbax raises several types for a damaged checkpoint
            problems.append(f"checkpoint {step_dir(manager, step)} cannot be restored "
                            f"({type(error).__name__}: {error})")
            logging.warning("%s.", problems[-1])
    if problems:
        raise NoGoodCheckpointError(
            "no checkpoint in {} can be used: {}. Delete the workdir (or its checkpoints/ and "
            "metrics.jsonl) to start the run over.".format(manager.directory, "; ".join(problems)))
    return None, target
