"""The cloze corpus as a TFDS dataset (`cnn_cloze`): build it once, read it, encode it.

The CNN corpus cannot be downloaded by TFDS (it is generated from archived web pages); the builder
reads it from a manual directory (format: `cloze_format`). A synthetic corpus in the same format
(`synthetic_cloze`) goes through the same builder.

Storage: the TFDS dataset holds token strings (`Text` features; Text, Tensor and Scalar need no
TensorFlow to encode or decode in tfds 4.9.10), so one build serves any vocabulary setting; ids are
made at load time (`cloze_vocab`). Files are array_record, read with `as_data_source()`.

Usage:
    python -m experiments.prepare_data --dataset=cnn_cloze --data_dir=DIR --manual_dir=CORPUS
    vocab = load_vocab(DIR, config='top4')                  # cached beside the dataset
    train = load_split(DIR, 'train', vocab, config='top4')  # cloze_vocab.EncodedSplit
    then cloze_batches.iterate_batches / training_batches
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Sequence

import tensorflow_datasets as tfds

from lnrepro.data import builds
from lnrepro.data.cloze_format import (QUESTIONS_SUBDIR, SPLIT_DIRS, apply_top_k,
                                       question_files, read_question)
from lnrepro.data.cloze_vocab import EncodedSplit, Vocab, build_vocab, encode_examples


class CorpusNotFoundError(FileNotFoundError):
    """The manual directory does not hold the corpus."""


class DatasetNotFoundError(FileNotFoundError):
    """The prepared TFDS dataset is missing from a data_dir."""


MANUAL_INSTRUCTIONS = """\
Put the DeepMind CNN corpus (or a synthetic one from
`python -m experiments.prepare_data --dataset=synthetic_cloze --out=DIR`) in the manual directory
so that these exist:
    <manual_dir>/cnn/questions/training/*.question
    <manual_dir>/cnn/questions/validation/*.question
    <manual_dir>/cnn/questions/test/*.question
The real corpus: the CNN questions archive of https://cs.nyu.edu/~kcho/DMQA/, extracted in
<manual_dir>, or the output of github.com/google-deepmind/rc-data run there."""


def find_questions_dir(manual_dir: str | os.PathLike) -> str:
    """`<manual_dir>/cnn/questions` (also accepted: manual_dir itself or `<manual_dir>/questions`
    if it holds the split directories); CorpusNotFoundError otherwise."""
    manual_dir = os.fspath(manual_dir)
    for candidate in (os.path.join(manual_dir, QUESTIONS_SUBDIR),
                      os.path.join(manual_dir, 'questions'), manual_dir):
        if all(os.path.isdir(os.path.join(candidate, d)) for d in SPLIT_DIRS.values()):
            return candidate
    raise CorpusNotFoundError(
        f'no CNN questions found under manual directory {manual_dir}: expected '
        f'{os.path.join(manual_dir, QUESTIONS_SUBDIR)}/{{training,validation,test}}/*.question.'
        f'\n{MANUAL_INSTRUCTIONS}')


# ------------------------------------------------------------------------------------------------
# TFDS builder.


@dataclasses.dataclass(eq=False)
class ClozeConfig(tfds.core.BuilderConfig):
    """top_k: keep this many best-matching sentences per passage (None: the whole passage)."""
    top_k: int | None = None


FULL_CONFIG = ClozeConfig(name='full', description='Whole passages.')
TOP4_CONFIG = ClozeConfig(
    name='top4', top_k=4,
    description='The 4 sentences best matching the question (our reconstruction of Cooijmans et '
                'al. 2016; see lnrepro/data/cloze_format.py).')
CONFIGS = {c.name: c for c in (FULL_CONFIG, TOP4_CONFIG)}


# skip_registration: importing this module leaves TFDS's global registry alone (the builder is
# only ever made through `_builder`).
class CnnCloze(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """CNN cloze questions as token strings: id, url, context, question, answer, entities.

    `context` and `question` are space-joined tokens (context after top-k selection); `entities`
    holds the file's entity lines joined by '\\n'. Examples keep the sorted file order.
    One data_dir holds one corpus: build the synthetic corpus into a data_dir of its own.
    """

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'CNN .question files; configs full and top4.'}
    BUILDER_CONFIGS = [FULL_CONFIG, TOP4_CONFIG]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS
    # As in mnist.py: no URL-checksums file to look for (its probe crashes on Python >= 3.9).
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()  # Decodes to bytes without TensorFlow.
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                'id': text, 'url': text, 'context': text, 'question': text, 'answer': text,
                'entities': text,
            }),
            # Keep the sorted file order, so runs and validation batches are reproducible.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError as e:  # TFDS's "does not exist or is empty".
            raise CorpusNotFoundError(f'{e}') from None
        questions_dir = find_questions_dir(manual_dir)
        return {split: self._generate_examples(question_files(questions_dir, split))
                for split in SPLIT_DIRS}

    def _generate_examples(self, paths: Sequence[str]):
        top_k = self.builder_config.top_k
        for path in paths:
            q = apply_top_k(read_question(path), top_k)
            key = os.path.basename(path)[:-len('.question')]
            yield key, {
                'id': key, 'url': q.url, 'context': ' '.join(q.context),
                'question': ' '.join(q.question), 'answer': q.answer,
                'entities': '\n'.join(f'{e}:{n}' for e, n in q.entities.items()),
            }


# ------------------------------------------------------------------------------------------------
# Entry points: prepare, vocabulary, encoded splits.


def _config(config: str | ClozeConfig) -> ClozeConfig:
    if isinstance(config, ClozeConfig):
        return config
    if config not in CONFIGS:
        raise ValueError(f'unknown config {config!r}; expected one of {sorted(CONFIGS)}')
    return CONFIGS[config]


def _builder(data_dir, config: str | ClozeConfig) -> CnnCloze:
    return CnnCloze(data_dir=os.fspath(data_dir), config=_config(config))


def setup_hint(data_dir, config: str | ClozeConfig) -> str:
    """The command that prepares the dataset, for error messages."""
    return (f'`python -m experiments.prepare_data --dataset=cnn_cloze '
            f'--data_dir={os.fspath(data_dir)} --dataset_config={_config(config).name} '
            f'--manual_dir=CORPUS_DIR`')


def prepare(data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None, *,
            config: str | ClozeConfig = 'top4') -> str:
    """Builds the dataset into data_dir unless already there; returns the dataset directory.

    manual_dir: where `cnn/questions/...` lives (default: TFDS's `<data_dir>/downloads/manual`).
    Raises CorpusNotFoundError (saying where the files must go) if the corpus is not there, and
    cloze_format.MalformedQuestionError (file:line) on the first bad file.
    """
    builder = _builder(data_dir, config)

    def build():
        download_config = tfds.download.DownloadConfig(
            manual_dir=None if manual_dir is None else os.fspath(manual_dir))
        builder.download_and_prepare(file_format='array_record', download_config=download_config)

    return builds.build_once(builder, build)


def read_split(data_dir: str | os.PathLike, split: str, *, config: str | ClozeConfig = 'top4',
               chunk_size: int = 10_000) -> Iterator[dict[str, str]]:
    """Yields a prepared split's examples in order, as dicts of str (Text features decoded)."""
    builder = _builder(data_dir, config)
    if split not in SPLIT_DIRS:
        raise ValueError(f'unknown split {split!r}; expected one of {sorted(SPLIT_DIRS)}')
    if not builder.is_prepared():
        raise DatasetNotFoundError(f'{builder.name}/{builder.builder_config.name} is not prepared '
                                   f'in {data_dir}. Run {setup_hint(data_dir, config)}.')
    source = builder.as_data_source(split=split)
    # Batched reads (like mnist.load_split), in chunks so the full corpus never sits in memory.
    for start in range(0, len(source), chunk_size):
        for ex in source.__getitems__(range(start, min(start + chunk_size, len(source)))):
            yield {k: v.decode('utf-8') for k, v in ex.items()}


def vocab_path(data_dir, config: str | ClozeConfig = 'top4', *, min_count: int = 1,
               max_size: int | None = None, num_entities: int | None = None) -> str:
    """Where `load_vocab` caches a vocabulary: beside the dataset's array_record files."""
    name = f'vocab-min{min_count}-max{max_size or "all"}-ent{num_entities or "auto"}.txt'
    return os.path.join(os.fspath(_builder(data_dir, config).data_path), name)


def load_vocab(data_dir: str | os.PathLike, config: str | ClozeConfig = 'top4', *,
               min_count: int = 1, max_size: int | None = None,
               num_entities: int | None = None) -> Vocab:
    """The vocabulary of the prepared TRAINING split (cloze_vocab.build_vocab), cached in a text
    file."""
    path = vocab_path(data_dir, config, min_count=min_count, max_size=max_size,
                      num_entities=num_entities)
    if os.path.exists(path):
        return Vocab.load(path)
    texts = (ex[key].split() for ex in read_split(data_dir, 'train', config=config)
             for key in ('context', 'question'))
    vocab = build_vocab(texts, min_count=min_count, max_size=max_size, num_entities=num_entities)
    tmp = f'{path}.tmp.{os.getpid()}'
    vocab.save(tmp)
    os.replace(tmp, path)  # Atomic: a concurrent reader never sees half a file.
    return vocab


def load_split(data_dir: str | os.PathLike, split: str, vocab: Vocab, *,
               config: str | ClozeConfig = 'top4') -> EncodedSplit:
    """Reads a prepared split and encodes it with `vocab`. Never builds anything."""
    return encode_examples(read_split(data_dir, split, config=config), vocab)
