"""What every driver does: define --config, --workdir and the multi-process flags, set up logging
(and jax.distributed when asked), resolve the config and hand it to the one trainer."""

import logging as py_logging

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lnrepro import train


class _DropOrbaxInfo(py_logging.Filter):
    """Orbax logs every save step at INFO; keep its warnings, drop the rest."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def setup_runtime(config, coordinator_address: str | None = None,
                  num_processes: int | None = None, process_id: int | None = None) -> None:
    """Starts JAX's multi-controller runtime when this is one process of several.

    With `coordinator_address` (then also num_processes and process_id), the processes are named
    explicitly: e.g. two on one machine with the coordinator on 127.0.0.1. With
    `config.distributed` alone, jax.distributed.initialize() reads them from the cluster
    environment (SLURM's srun, Open MPI, Kubernetes, Cloud TPU).
    """
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_DropOrbaxInfo())
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator_address needs --num_processes and --process_id.")
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif config.get("distributed", False):
        jax.distributed.initialize()
    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
                 jax.process_count())


def run(task_module, config_help: str) -> None:
    """Defines the flags, then trains `task_module`'s experiment as configured.

    task_module provides resolve_config(config) and build_task(config) (lnrepro/tasks/).
    """
    config_flag = config_flags.DEFINE_config_file("config", None, config_help,
                                                  lock_config=True)
    workdir_flag = flags.DEFINE_string("workdir", None, "Where config.json, metrics.jsonl, "
                                       "provenance.json and checkpoints go; re-running resumes.")
    coordinator_flag = flags.DEFINE_string(
        "coordinator_address", None, "Multi-process without a cluster manager: host:port of "
        "process 0 (e.g. 127.0.0.1:12345); with --num_processes and --process_id. Under SLURM "
        "use --config.distributed=True instead.")
    num_processes_flag = flags.DEFINE_integer("num_processes", None, "Processes in all.")
    process_id_flag = flags.DEFINE_integer("process_id", None, "This process, 0-based; "
                                           "process 0 writes the record.")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        del argv
        setup_runtime(config_flag.value, coordinator_flag.value, num_processes_flag.value,
                      process_id_flag.value)
        config = task_module.resolve_config(config_flag.value)
        train.train_and_evaluate(config, workdir_flag.value, task_module.build_task)

    app.run(main)
