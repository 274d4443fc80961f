"""Orbax checkpoints in workdir/checkpoints, one per round, so a killed run resumes.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a kill
mid-save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, round_index: int, state: Any) -> None:
    """Saves the state after `round_index` (0-based) and waits until it is on disk."""
    manager.save(round_index, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[int | None, Any]:
    """(last finished round, restored state), or (None, target) in a fresh workdir.

    `target` gives the structure, shapes and shardings to restore into.
    """
    latest = manager.latest_step()
    if latest is None:
        return None, target
    try:
        restored = manager.restore(latest, args=ocp.args.StandardRestore(target))
    except Exception as error:  # orbax raises several types for a damaged checkpoint
        raise RuntimeError(
            f"checkpoint {latest} in {manager.directory} cannot be restored ({error}). Delete that "
            f"checkpoint directory to resume from the one before, or the workdir to start over."
        ) from error
    return latest, restored
