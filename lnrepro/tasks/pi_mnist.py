"""Permutation-invariant MNIST as a `train.Task` (Ba et al. 2016, sec. 6.6).

The whole dataset sits in device memory (MNIST is small, and a per-example loader is about twice
as slow here). Each epoch is a permutation drawn from the run's seed and the epoch number, cut
into chunks of `steps_per_call` batches of indices; the jitted chunk gathers each batch on the
device, so at batch size 4 one Python call runs ~128 steps.
"""

from __future__ import annotations

import functools
from typing import Callable

import ml_collections
import numpy as np

from lnrepro import train, validation
from lnrepro.data import mnist
from lnrepro.models import mlp

NORMS = ("none", "batch", "layer", "weight")
UNBIASED_VARIANCE_MAX_BATCH = 16
EXAMPLES_PER_CALL = 512


def searched_learning_rate(searched: dict[str, dict[str, float]], norm: str,
                           batch_size: int) -> float:
    """The rate the config's table (norm -> {'bs<N>': rate}) gives this norm at the searched
    batch size nearest `batch_size` on a log scale."""
    by_size = {int(key.removeprefix("bs")): rate for key, rate in searched[norm].items()}
    nearest = min(sorted(by_size), key=lambda b: abs(np.log(b) - np.log(batch_size)))
    return by_size[nearest]


def _valid_rate_table(table) -> bool:
    try:
        return set(NORMS) <= set(table) and all(
            len(rates) > 0 and all(key.startswith("bs") and int(key[2:]) >= 1 and rate > 0
                          for key, rate in rates.items()) for rates in table.values())
    except (AttributeError, TypeError, ValueError):
        return False


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks every value (all problems at once, before anything is read or written) and fills
    every `None` ("the default for this setting") with a value, so config.json records exactly
    what ran."""
    config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
    positive = validation.integer(1)
    rules = [
        validation.Rule("norm", validation.one_of(*NORMS), f"one of {NORMS}"),
        validation.Rule("hidden_sizes", lambda v: len(v) >= 1 and all(map(positive, v)),
                        "one or more layer sizes >= 1, e.g. (1000, 1000)"),
        validation.Rule("activation", validation.one_of(*mlp.ACTIVATIONS),
                        f"one of {tuple(mlp.ACTIVATIONS)}"),
        validation.Rule("normalize_logits", validation.optional(validation.is_bool),
                        "None, True or False"),
        validation.Rule("bn_unbiased_variance", validation.optional(validation.is_bool),
                        "None, True or False"),
        validation.Rule("bn_eval_statistics", validation.one_of(*mlp.BN_EVAL_STATISTICS),
                        f"one of {mlp.BN_EVAL_STATISTICS}"),
        validation.Rule("batch_size", positive, ">= 1"),
        validation.Rule("num_epochs", positive, ">= 1"),
        validation.Rule("steps_per_call", validation.integer(0), ">= 0 (0: automatic)"),
        validation.Rule("eval_batch_size", positive, ">= 1"),
        validation.Rule("train_eval_examples", positive, ">= 1"),
        validation.Rule("searched_learning_rates", _valid_rate_table,
                        "{norm: {'bs<N>': rate > 0}} with an entry for every norm"),
        *[r for r in validation.shared_rules()
          if not (r.key == "learning_rate" and config.learning_rate is None)],
    ]
    extra = []
    if config.norm == "batch" and config.batch_size == 1:
        extra.append("batch norm needs config.batch_size >= 2: one example has no variance.")
    validation.check(config, rules, extra=extra)
    if config.normalize_logits is None:
        config.normalize_logits = mlp.default_normalize_logits(config.norm)
    if config.bn_unbiased_variance is None:
        config.bn_unbiased_variance = config.batch_size <= UNBIASED_VARIANCE_MAX_BATCH
    if config.learning_rate is None:
        config.learning_rate = searched_learning_rate(
            config.searched_learning_rates.to_dict(), config.norm, config.batch_size)
    if config.steps_per_call == 0:
        config.steps_per_call = max(1, EXAMPLES_PER_CALL // config.batch_size)
    return config


def make_model(config: ml_collections.ConfigDict) -> mlp.MLP:
    return mlp.MLP(hidden_sizes=tuple(config.hidden_sizes), num_classes=mnist.NUM_CLASSES,
                   norm=config.norm, normalize_logits=config.normalize_logits,
                   unbiased_batch_variance=config.bn_unbiased_variance,
                   bn_eval_statistics=config.bn_eval_statistics, activation=config.activation)


def epoch_index_chunks(num_examples: int, batch_size: int, steps_per_call: int, seed: int,
                       epoch: int) -> list[np.ndarray]:
    """The epoch's shuffled example indices as chunks [steps, batch_size] (int32).

    The permutation depends only on (seed, epoch), so a resumed run sees the same batches. The
    last num_examples % batch_size examples of each permutation are left out of that epoch.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    steps = num_examples // batch_size
    batches = order[:steps * batch_size].reshape(steps, batch_size).astype(np.int32)
    return [batches[i:i + steps_per_call] for i in range(0, steps, steps_per_call)]


def select_batch(data, indices):
    """Gathers one batch on the device: indices [B] -> {'image': [B, 784], 'label': [B]}."""
    return {"image": data["image"][indices], "label": data["label"][indices]}


def _eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Fixed-shape batches; the last one padded and marked with weight 0 (one compile)."""
    n = len(labels)
    for start in range(0, n, batch_size):
        image = images[start:start + batch_size]
        label = labels[start:start + batch_size]
        weight = np.ones(len(label), np.float32)
        pad = batch_size - len(label)
        if pad:
            image = np.pad(image, ((0, pad), (0, 0)))
            label = np.pad(label, (0, pad))
            weight = np.pad(weight, (0, pad))
        yield {"image": image, "label": label, "weight": weight}


@functools.lru_cache(maxsize=6)
def load_split_once(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """mnist.load_split, read once per process: the members of a program and the programs of a
    sweep share it. Read-only, so no run can change another's data."""
    images, labels = mnist.load_split(data_dir, split)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def build_task(config: ml_collections.ConfigDict,
               load_split: Callable = load_split_once) -> train.Task:
    """The Task for `train.train_and_evaluate`; `load_split(data_dir, split)` reads the data
    (tests pass a reader of a tiny dataset built by the same builder)."""
    train_images, train_labels = load_split(config.data_dir, "train")
    eval_sets = {
        # A fixed subset, so the training NLL curve costs a fraction of an epoch to evaluate.
        "train": (train_images[:config.train_eval_examples],
                  train_labels[:config.train_eval_examples]),
        "valid": load_split(config.data_dir, "validation"),
        "test": load_split(config.data_dir, "test"),
    }
    if len(train_labels) < config.batch_size:
        raise ValueError(f"config.batch_size {config.batch_size} exceeds the "
                         f"{len(train_labels)} training examples in {config.data_dir}.")
    eval_batch_size = min(config.eval_batch_size,
                          max(len(labels) for _, labels in eval_sets.values()))

    def evaluate(state, eval_step):
        row = {}
        for name, (images, labels) in eval_sets.items():
            sums = [eval_step(state, batch)
                    for batch in _eval_batches(images, labels, eval_batch_size)]
            row.update(train.summarize(sums, name))
        return row

    return train.Task(
        model=make_model(config),
        init_batch={"image": train_images[:config.batch_size],
                    "label": train_labels[:config.batch_size]},
        num_rounds=config.num_epochs,
        train_chunks=lambda epoch: epoch_index_chunks(len(train_labels), config.batch_size,
                                                      config.steps_per_call, config.seed, epoch),
        select_batch=select_batch,
        device_data={"image": train_images, "label": train_labels},
        evaluate=evaluate,
        examples_per_step=config.batch_size,
        round_name="epoch",
    )
