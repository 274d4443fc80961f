"""What every driver does before training: logging, and multi-host set-up when configured."""

import logging as py_logging

import jax
from absl import logging


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
