"""What every driver does: define --config, --workdir and the multi-process flags, set up logging
(and jax.distributed when asked), resolve the config and hand it to the one trainer."""

import contextlib
import importlib.util
import logging as py_logging
import os
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from lnrepro import train


class _DropOrbaxInfo(py_logging.Filter):
    """Orbax logs every save step at INFO; keep its warnings, drop the rest."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def setup_logging() -> None:
    """INFO from our code; orbax's per-save INFO lines dropped."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_DropOrbaxInfo())


def setup_runtime(config, coordinator_address: str | None = None,
                  num_processes: int | None = None, process_id: int | None = None) -> None:
    """Starts JAX's multi-controller runtime when this is one process of several.

    With `coordinator_address` (then also num_processes and process_id), the processes are named
    explicitly: e.g. two on one machine with the coordinator on 127.0.0.1. With
    `config.distributed` alone, jax.distributed.initialize() reads them from the cluster
    environment (SLURM's srun, Open MPI, Kubernetes, Cloud TPU).
    """
    setup_logging()
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator_address needs --num_processes and --process_id.")
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif config.get("distributed", False):
        jax.distributed.initialize()
    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
                 jax.process_count())


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_file(spec: str):
    """'configs/pi_mnist.py[:arg]' -> that file's get_config(arg), as --config loads it (a
    relative path is taken from the current directory, else from the repository root)."""
    path, _, arg = spec.partition(":")
    if not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(REPO, path)
    module_spec = importlib.util.spec_from_file_location("lnrepro_config_file", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def unknown_overrides(argv: list[str]) -> str | None:
    """A message naming the --config.KEY flags of argv that the config file does not have
    (ml_collections would stop with a bare AttributeError), or None."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    keys = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    if spec is None or not keys:
        return None
    try:
        config = load_config_file(spec)
    except Exception:  # noqa: BLE001 - the flag parser reports a broken config file itself
        return None
    unknown = []
    for key in keys:
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                unknown.append(key)
                break
            node = node[part]
    if not unknown:
        return None
    return (f"unknown setting(s) {', '.join('config.' + k for k in unknown)} for {spec}; "
            f"its settings are: {', '.join(sorted(config.keys()))}.")


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
        with errors_last():
            config = task_module.resolve_config(config_flag.value)  # before anything runs
            setup_runtime(config, coordinator_flag.value, num_processes_flag.value,
                          process_id_flag.value)
            train.train_and_evaluate(config, workdir_flag.value, task_module.build_task)

    problem = unknown_overrides(sys.argv[1:])
    if problem:
        sys.exit(f"Error: {problem}")
    app.run(main)


@contextlib.contextmanager
def errors_last():
    """On an error, print its traceback and message and exit at once with status 1.

    A normal exit would then shut down JAX's and orbax's threads and event loops, which print
    screens of secondary tracebacks (`sys.meta_path is None`, `Event loop is closed`) below the
    real error; exiting here keeps the error the last thing on the screen.
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 - every error ends the run the same way
        traceback.print_exc()
        print(f"\nError: {type(error).__name__}: {error}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
