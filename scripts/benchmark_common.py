"""What the benchmark scripts share: their common flags, the header line, random stand-ins for the
two experiments' data, and the timed run.

A timed run is built by the trainer (lnrepro/train.py), not copied from it: its Task is the
experiment's own (`pi_mnist.build_task`) or made of its task module's parts (the reader's model
and member stacking), its initial state and rng come from `train.create_member_states` and each
call from `train.make_train_chunk`: the functions a round of `train.train_members` calls. Only
the loop around them is here: a round's chunks made on the host beforehand (data loading is not
timed), every call timed under the config's matmul precision, the results blocked.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from typing import Any, Callable, Iterable

import jax
import numpy as np
from absl import app, flags

from configs import attentive_reader as reader_config_file
from configs import pi_mnist as pi_mnist_config_file
from lnrepro import train
from lnrepro.tasks import attentive_reader, pi_mnist

# The flags every benchmark script takes, defined here once: the scripts' tests import them all
# into one process, where a flag name can be defined only once.
REPEATS = flags.DEFINE_integer(
    "repeats", None, "Timed repetitions of every configuration, interleaved round-robin; the "
    "medians are printed (default: the script's, in its docstring).", lower_bound=1)
QUICK = flags.DEFINE_bool("quick", False, "Tiny models and few steps: a smoke test of the "
                          "script, not a measurement.")

# The flags tests/conftest.py sets: compile fast, run slower code.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def fast_compile() -> None:
    """For --quick smoke runs, which time nothing meaningful and are dominated by compiles: skip
    LLVM's expensive passes. Takes effect only if no JAX backend exists yet."""
    flags_now = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" not in flags_now:
        os.environ["XLA_FLAGS"] = (flags_now + " " + FAST_COMPILE_FLAGS).strip()


def start(argv: list[str], repeats: int, quick_repeats: int) -> tuple[bool, int]:
    """(--quick, the repetitions: --repeats, or the script's default) at the start of a script's
    main, which takes no positional arguments. --quick also compiles fast (fast_compile)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if QUICK.value:
        fast_compile()
    return QUICK.value, REPEATS.value or (quick_repeats if QUICK.value else repeats)


def machine() -> str:
    """What the timings depend on: the jax version, backend, devices, cpus and load average."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} "
            f"devices), {os.cpu_count()} cpus, load average {load}")


# pi-MNIST: the MLP of configs/pi_mnist.py on random data of MNIST's shapes.
MLP_QUICK_HIDDEN = (16, 16)


def mlp_hidden_sizes(quick: bool) -> tuple[int, ...]:
    """The MLP's hidden sizes: configs/pi_mnist.py's, or tiny ones for --quick."""
    return MLP_QUICK_HIDDEN if quick else tuple(pi_mnist_config_file.get_config().hidden_sizes)


def mlp_config(norm: str, batch_size: int, steps_per_call: int, hidden_sizes,
               log_grad_norm: bool | None = None, seed: int = 0):
    """configs/pi_mnist.py with these settings, resolved by the task (steps_per_call 0: its
    default for the batch size; log_grad_norm None: the config's default)."""
    config = pi_mnist_config_file.get_config()
    if log_grad_norm is not None:
        config.log_grad_norm = log_grad_norm
    config.norm = norm
    config.batch_size = batch_size
    config.steps_per_call = steps_per_call
    config.hidden_sizes = tuple(hidden_sizes)
    config.seed = seed
    return pi_mnist.resolve_config(config)


def random_mnist(num_examples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 images [N, 784] in [0, 1) and int32 labels [N]."""
    rng = np.random.default_rng(seed)
    return {"image": rng.random((num_examples, 784), dtype=np.float32),
            "label": rng.integers(0, 10, size=num_examples).astype(np.int32)}


def mlp_task(config, data: dict[str, np.ndarray]) -> train.Task:
    """`pi_mnist.build_task` with `data` as the training set: round r is a shuffled epoch of it,
    cut into chunks of config.steps_per_call steps. (Its evaluation sets, a few examples, are not
    used: nothing is evaluated.)"""
    few = (data["image"][:8], data["label"][:8])
    splits = {"train": (data["image"], data["label"]), "validation": few, "test": few}
    return pi_mnist.build_task(config, load_split=lambda _, split: splits[split])


# The attentive reader of configs/attentive_reader.py on random batches of one shape per size.
READER_SIZES = {
    "cpu": dict(config_arg=None, features=64, batch=32, document=96, query=16, vocab=200,
                updates=3),
    "paper": dict(config_arg="paper", features=240, batch=64, document=200, query=32,
                  vocab=5000, updates=1),
}
READER_QUICK_SIZES = {
    "quick": dict(config_arg=None, features=8, batch=4, document=12, query=4, vocab=30,
                  updates=2),
}


def reader_config(size: dict, cell: str, bn_everywhere: bool = False, seed: int = 0):
    """configs/attentive_reader.py (with the size's preset) at the size's features and batch."""
    config = reader_config_file.get_config(size["config_arg"])
    config.cell, config.bn_everywhere = cell, bn_everywhere
    config.features = size["features"]
    config.batch_size = size["batch"]
    config.seed = seed
    return config


def random_reader_batch(size: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The reader task's batch layout: tokens with end padding, random lengths between half and
    all of the padded length (one example at the full length, as in bucketing)."""
    b, t, q, vocab = size["batch"], size["document"], size["query"], size["vocab"]

    def tokens_and_mask(length: int):
        lengths = rng.integers((length + 1) // 2, length + 1, size=b)
        lengths[0] = length
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
        tokens = rng.integers(2, vocab, size=(b, length)).astype(np.int32) * mask.astype(np.int32)
        return tokens, mask

    document, document_mask = tokens_and_mask(t)
    query, query_mask = tokens_and_mask(q)
    return {"document": document, "document_mask": document_mask, "query": query,
            "query_mask": query_mask, "label": rng.integers(2, vocab, size=b).astype(np.int32),
            "weight": np.ones(b, np.float32)}


def reader_task(config, size: dict, batches: list[dict], updates: int) -> train.Task:
    """The reader's Task (its model and member stacking, lnrepro/tasks/attentive_reader.py) on
    `batches`: round r is `updates` updates, one per jitted call as the reader's own rounds run
    them, cycling through the batches from an offset set by the seed (so the members of a group
    train on different batches, as their own streams would give them)."""
    def train_chunks(round_index: int):
        first = round_index * updates + config.seed
        for i in range(first, first + updates):
            yield {k: v[None] for k, v in batches[i % len(batches)].items()}

    return train.Task(
        model=attentive_reader.make_model(config, size["vocab"], size["document"],
                                          size["query"]),
        init_batch=batches[0],
        num_rounds=1,
        train_chunks=train_chunks,
        select_batch=lambda _, batch: batch,
        device_data=None,
        evaluate=lambda state, eval_step: {},
        examples_per_step=config.batch_size,
        round_name="interval",
        stack_members=attentive_reader.stack_padded,
    )


# The timed run.
def train_timed(train_chunk: Callable, state, items: list, rng: jax.Array,
                matmul_precision: str) -> tuple[Any, float]:
    """(the new state, seconds) after training `items` (chunks already made on the host) through
    `train_chunk` (`train.make_train_chunk`), results blocked. A non-finite loss raises, as it
    would stop the trainer."""
    with jax.default_matmul_precision(matmul_precision):
        start = time.perf_counter()
        step_metrics = []
        for item in items:
            state, chunk_metrics = train_chunk(state, item, rng)
            step_metrics.append(chunk_metrics)
        jax.block_until_ready((state, step_metrics))
        seconds = time.perf_counter() - start
    if not all(np.all(np.isfinite(np.asarray(m["loss"]))) for m in step_metrics):
        raise FloatingPointError("non-finite training loss")
    return state, seconds


class TimedRun:
    """The run of `config` on `task`, started as the trainer starts it
    (`train.create_member_states`) and trained a round at a time by its chunk step
    (`train.make_train_chunk`: the chunk put on the devices, one jitted `lax.scan` of
    `train.train_step`s, the state donated)."""

    def __init__(self, config, task: train.Task, mesh: jax.sharding.Mesh):
        self.config, self.task = config, task
        (self.state,), (self.rng,) = train.create_member_states([config], [task], mesh)
        self.train_chunk = train.make_train_chunk(task, mesh, config.get("log_grad_norm", True))

    def train(self, items: Iterable) -> float:
        """Seconds to train `items`; the state moves on."""
        self.state, seconds = train_timed(self.train_chunk, self.state, list(items), self.rng,
                                          self.config.matmul_precision)
        return seconds

    def warm_up(self) -> None:
        """One call on round 0's first chunk: compiles the program the timed rounds reuse."""
        self.train(itertools.islice(self.task.train_chunks(0), 1))

    def train_round(self, round_index: int) -> float:
        """Seconds to train round `round_index` of the task."""
        return self.train(self.task.train_chunks(round_index))


def median_round_seconds(runs: dict[Any, TimedRun], repeats: int) -> dict[Any, float]:
    """Each run's median seconds per round over rounds 0..repeats-1, every run warmed up first;
    the runs take turns round by round, so that machine noise hits them alike."""
    for run in runs.values():
        run.warm_up()
    times: dict[Any, list[float]] = {key: [] for key in runs}
    for round_index in range(repeats):
        for key, run in runs.items():
            times[key].append(run.train_round(round_index))
    return {key: statistics.median(seconds) for key, seconds in times.items()}
