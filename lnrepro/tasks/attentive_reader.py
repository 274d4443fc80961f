"""The attentive reader on cloze questions as a `train.Task` (Ba et al. 2016, sec. 6.2, Fig. 2).

A round is `eval_every` updates followed by a validation pass (the paper validates every 1000
updates). Training batches are length-bucketed and padded (few shapes, so few compiles); the
stream of batches depends only on (seed, epoch), and the entity permutation of each batch only on
(seed, update), so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import ml_collections
import numpy as np

from lnrepro import train, validation
from lnrepro.data import cloze_batches, cloze_dataset, cloze_vocab, synthetic_cloze
from lnrepro.models import attentive_reader

CORPORA = ("synthetic", "cnn")
DATASET_CONFIGS = ("full", "top4")


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks every value (all problems at once, so a typo fails before any data is touched);
    returns an unlocked copy."""
    config = ml_collections.ConfigDict(config.to_dict())
    positive = validation.integer(1)
    rules = [
        validation.Rule("corpus", validation.one_of(*CORPORA), f"one of {CORPORA}"),
        validation.Rule("dataset_config", validation.one_of(*DATASET_CONFIGS),
                        f"one of {DATASET_CONFIGS}"),
        validation.Rule("vocab_min_count", positive, ">= 1"),
        validation.Rule("cell", validation.one_of(*attentive_reader.CELLS),
                        f"one of {attentive_reader.CELLS}"),
        validation.Rule("bn_everywhere", validation.is_bool, "True or False"),
        validation.Rule("ln_gain_init", validation.number(0, low_open=True), "a number > 0"),
        validation.Rule("features", positive, ">= 1"),
        validation.Rule("dropout_rate", validation.number(0, 1, high_open=True), "in [0, 1)"),
        validation.Rule("permute_entities", validation.is_bool, "True or False"),
        validation.Rule("batch_size", validation.integer(2), ">= 2"),
        validation.Rule("eval_batch_size", positive, ">= 1"),
        validation.Rule("bucket_width", positive, ">= 1"),
        validation.Rule("num_updates", positive, ">= 1"),
        validation.Rule("eval_every", positive, ">= 1"),
        *validation.shared_rules(),
    ]
    extra = []
    if (isinstance(config.num_updates, int) and isinstance(config.eval_every, int)
            and config.eval_every >= 1 and config.num_updates % config.eval_every):
        extra.append(f"config.num_updates ({config.num_updates}) must be a multiple of "
                     f"config.eval_every ({config.eval_every}).")
    if config.corpus == "cnn" and not config.manual_dir:
        extra.append("config.corpus='cnn' needs config.manual_dir: the directory holding "
                     "cnn/questions/{training,validation,test}/*.question (the corpus cannot be "
                     "downloaded here; see lnrepro/data/cloze_dataset.py).")
    if config.corpus == "synthetic":
        rules += [validation.Rule(f"synthetic.{key}", positive, ">= 1") for key in
                  ("num_train", "num_validation", "num_test", "num_facts")]
        rules += [validation.Rule(f"synthetic.{key}", validation.integer(0), ">= 0")
                  for key in ("num_distractors", "num_filler", "seed")]
        try:
            synthetic_config(config).check()
        except (TypeError, ValueError) as error:
            extra.append(f"config.synthetic: {error}.")
    validation.check(config, rules, extra=extra)
    return config


def synthetic_config(config: ml_collections.ConfigDict) -> synthetic_cloze.SyntheticConfig:
    return synthetic_cloze.SyntheticConfig(**config.synthetic.to_dict())


def corpus_dirs(config: ml_collections.ConfigDict) -> tuple[str, str]:
    """(manual_dir holding cnn/questions, TFDS data_dir) for the configured corpus. One TFDS
    data_dir holds one corpus, so each synthetic corpus gets its own, named by its settings."""
    if config.corpus == "cnn":
        return config.manual_dir, os.path.join(config.data_dir, "cnn")
    settings = dataclasses.asdict(synthetic_config(config))
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    root = os.path.join(config.data_dir, f"synthetic_cloze-{digest}")
    return os.path.join(root, "corpus"), os.path.join(root, "tfds")


def prepare_data(config: ml_collections.ConfigDict) -> tuple[str, str]:
    """Writes the synthetic corpus if needed and builds the TFDS dataset once. The real corpus
    is only read: a missing directory stops with cloze_dataset.CorpusNotFoundError saying where to
    put it.
    """
    manual_dir, data_dir = corpus_dirs(config)
    if config.corpus == "synthetic":
        synthetic_cloze.write_corpus(manual_dir, synthetic_config(config))
    cloze_dataset.prepare(data_dir, manual_dir, config=config.dataset_config)
    return manual_dir, data_dir


def make_model(config: ml_collections.ConfigDict, vocab_size: int,
               max_document_steps: int, max_query_steps: int):
    return attentive_reader.AttentiveReader(
        vocab_size=vocab_size, features=config.features, cell=config.cell,
        bn_everywhere=config.bn_everywhere, ln_gain_init=config.ln_gain_init,
        dropout_rate=config.dropout_rate, max_document_steps=max_document_steps,
        max_query_steps=max_query_steps)


@functools.lru_cache(maxsize=4)
def load_corpus(data_dir: str, dataset_config: str, vocab_min_count: int) -> tuple[
        cloze_vocab.Vocab, cloze_vocab.EncodedSplit, cloze_vocab.EncodedSplit]:
    """(vocabulary, training split, validation split), read once per process: the members of a
    program and the programs of a sweep share them (nothing mutates them)."""
    vocab = cloze_dataset.load_vocab(data_dir, dataset_config, min_count=vocab_min_count)
    train_data = cloze_dataset.load_split(data_dir, "train", vocab, config=dataset_config)
    valid_data = cloze_dataset.load_split(data_dir, "validation", vocab, config=dataset_config)
    return vocab, train_data, valid_data


def stack_padded(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The members' batches (one per member, each bucketed to its own lengths) -> one batch with
    a leading member axis, every sequence padded at its end with zeros (mask 0) to the longest
    member's length. Padding changes nothing a member computes: tests/test_attentive_reader.py."""
    stacked = {}
    for key in items[0]:
        arrays = [item[key] for item in items]
        shape = np.max([a.shape for a in arrays], axis=0)
        stacked[key] = np.stack([np.pad(a, [(0, n - m) for n, m in zip(shape, a.shape)])
                                 for a in arrays])
    return stacked


def build_task(config: ml_collections.ConfigDict) -> train.Task:
    _, data_dir = prepare_data(config)
    vocab, train_data, valid_data = load_corpus(data_dir, config.dataset_config,
                                                config.vocab_min_count)
    longest = int(max(train_data.document_lengths.max(), valid_data.document_lengths.max()))
    longest_query = int(max(max(len(q) for q in train_data.queries),
                            max(len(q) for q in valid_data.queries)))
    model = make_model(config, len(vocab), cloze_batches.round_up(longest, config.bucket_width),
                       cloze_batches.round_up(longest_query, 16))

    valid_batches = [cloze_batches.trainer_batch(b) for b in cloze_batches.iterate_batches(
        valid_data, config.eval_batch_size, bucket_width=config.bucket_width,
        pad_to_batch_size=True)]

    def evaluate(state, eval_step):
        return train.summarize((eval_step(state, b) for b in valid_batches), "valid")

    def train_chunks(round_index: int):
        stream = cloze_batches.training_batches(
            train_data, config.batch_size, seed=config.seed,
            first_update=round_index * config.eval_every, bucket_width=config.bucket_width,
            entity_ids=vocab.entity_ids if config.permute_entities else None)
        for _ in range(config.eval_every):
            yield {k: v[None] for k, v in next(stream).items()}  # one step per jitted call

    init_batch = cloze_batches.trainer_batch(cloze_batches.make_batch(
        train_data, np.arange(config.batch_size), bucket_width=config.bucket_width))
    return train.Task(
        model=model,
        init_batch=init_batch,
        num_rounds=config.num_updates // config.eval_every,
        train_chunks=train_chunks,
        select_batch=lambda _, batch: batch,
        device_data=None,
        evaluate=evaluate,
        examples_per_step=config.batch_size,
        round_name="interval",
        stack_members=stack_padded,
    )
