"""What every driver does: define --config and --workdir, set up logging (and multi-host when
configured), resolve the config and hand it to the one trainer."""

import logging as py_logging

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lnrepro import train


class _DropOrbaxInfo(py_logging.Filter):
    """Orbax logs every save step at INFO; keep its warnings, drop the rest."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def setup_runtime(config) -> None:
    """Initializes jax.distributed when `config.distributed` is set (one process per host; the
    coordinator comes from the cluster environment, see jax.distributed.initialize)."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_DropOrbaxInfo())
    if config.get("distributed", False):
        jax.distributed.initialize()
    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
                 jax.process_count())


def run(task_module, config_help: str) -> None:
    """Defines --config and --workdir, then trains `task_module`'s experiment as configured.

    task_module provides resolve_config(config) and build_task(config) (lnrepro/tasks/).
    """
    config_flag = config_flags.DEFINE_config_file("config", None, config_help,
                                                  lock_config=True)
    workdir_flag = flags.DEFINE_string("workdir", None, "Where config.json, metrics.jsonl and "
                                       "checkpoints go; re-running resumes.")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        del argv
        setup_runtime(config_flag.value)
        config = task_module.resolve_config(config_flag.value)
        train.train_and_evaluate(config, workdir_flag.value, task_module.build_task)

    app.run(main)
