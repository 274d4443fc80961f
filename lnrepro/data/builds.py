"""Building a TFDS dataset once, safely, when several processes may ask for it at the same time."""

from __future__ import annotations

import glob
import os
import shutil
from typing import Callable

import tensorflow_datasets as tfds
from absl import logging

from lnrepro import locking


def build_once(builder: tfds.core.DatasetBuilder, build: Callable[[], None]) -> str:
    """Runs `build` unless `builder`'s dataset is prepared; returns the dataset directory.

    Under a lock beside the dataset, so concurrent first runs (a job array on a fresh data_dir)
    build it once and the others wait and read it. TFDS writes into an `incomplete.*` directory
    and renames it into place when complete, so a build killed halfway leaves no dataset; its
    leftover directory is removed here by the next build (no other build can be running then),
    and so is a damaged dataset directory, which TFDS would otherwise keep.
    """
    data_path = os.fspath(builder.data_path)
    config_dir = os.path.dirname(data_path)
    with locking.exclusive(f"{config_dir}.lock", f"building {builder.name}"):
        if not builder.is_prepared():
            for leftover in glob.glob(os.path.join(config_dir, "incomplete.*")):
                shutil.rmtree(leftover, ignore_errors=True)
            if os.path.exists(data_path):
                # A damaged dataset (its dataset_info.json gone, say): TFDS would leave it as
                # it is, so the advice to rebuild would do nothing. Remove it and rebuild.
                logging.warning("%s is not a complete dataset; rebuilding it.", data_path)
                shutil.rmtree(data_path)
            build()
    return data_path
