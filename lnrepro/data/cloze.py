"""Cloze-style question answering data for the attentive reader (Ba et al. 2016, sec. 6.2, Fig. 2).

Source: the DeepMind CNN corpus (Hermann et al. 2015; github google-deepmind/rc-data). One file per
question, `cnn/questions/{training,validation,test}/<sha1 of the file's text>.question`:

    line 1      url
    line 2      (blank)
    line 3      context: the passage, lower-cased, tokenized, space-separated, entities as @entityN
    line 4      (blank)
    line 5      question: the same style, with exactly one @placeholder
    line 6      (blank)
    line 7      answer: one @entityN that occurs in the context
    line 8      (blank)
    line 9...   one `@entityN:Surface Name` per line, for every entity of the story

(rc-data writes the five parts joined by blank lines, with no final newline.)

The corpus cannot be downloaded by TFDS (it is generated from archived web pages); it is read from a
manual directory. `lnrepro.data.synthetic_cloze` writes a synthetic corpus in exactly this format,
which goes through the same reader, builder and batcher.

"top4" (Cooijmans et al. 2016, the recurrent-BN paper whose setup Ba et al. follow): keep only the 4
sentences of the passage that best match the question. Its build script is not public, so
`top_sentences` is OUR reconstruction: a sentence ends at a '.', '!' or '?' token; its score is the
number of distinct question tokens (not @placeholder, not stopwords, not punctuation) it contains;
the k best are kept (ties: earlier sentence first), in their original order. Like the original, it
sometimes drops the answer (Cooijmans et al. report accuracy capped at 57%); such examples are kept,
and `EncodedSplit.answer_in_document` / `answer_kept_fraction` measure how often that happens.

Vocabulary (built from the training split only, after top-k selection):
    0 = <pad>, 1 = <unk>, 2 .. 2+K-1 = @entity0 .. @entity{K-1}, 2+K = @placeholder,
    then ordinary words by decreasing training frequency (ties alphabetical).
K is 1 + the largest @entity index in the training passages and questions, unless given.
Entities sit in one contiguous range so the trainer can permute them (`permute_entities`, once per
training minibatch, never at validation). Words and entities unseen in training map to <unk>.

Storage: the TFDS dataset holds token strings (`Text` features; Text, Tensor and Scalar need no
TensorFlow to encode or decode in tfds 4.9.10), so one build serves any vocabulary setting; ids are
made at load time. Files are array_record, read with `as_data_source()`.

Usage:
    python -m lnrepro.data.cloze --data_dir=DIR --manual_dir=CORPUS [--config=top4]
    vocab = load_vocab(DIR, config='top4')                  # cached beside the dataset
    train = load_split(DIR, 'train', vocab, config='top4')  # EncodedSplit
    rng = np.random.default_rng(seed)
    for batch in iterate_batches(train, 64, rng=rng):       # one epoch
        batch = permute_entities(batch, rng, vocab.entity_ids)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import os
import re
from typing import Iterable, Iterator, Mapping, NoReturn, Sequence

import numpy as np
import tensorflow_datasets as tfds

from lnrepro.data import builds

PAD, UNK, PLACEHOLDER = '<pad>', '<unk>', '@placeholder'
PAD_ID, UNK_ID = 0, 1
FIRST_ENTITY_ID = 2
ENTITY_RE = re.compile(r'@entity(\d+)')
ENTITY_LINE_RE = re.compile(r'(@entity\d+):(.*)')
SENTENCE_ENDS = frozenset({'.', '!', '?'})

# TFDS split name -> directory of the CNN corpus.
SPLIT_DIRS = {'train': 'training', 'validation': 'validation', 'test': 'test'}
QUESTIONS_SUBDIR = os.path.join('cnn', 'questions')

# Words that match a question by accident. Our choice (the original list, if any, is not public);
# kept short, since entities and content words carry the match.
STOPWORDS = frozenset("""
a an the of to in on at for by with from and or but as that this these those it its is was were are
be been being has have had he she his her him they them their we our you your i not said says 's
will would could can do did who which what when where
""".split())


class MalformedQuestionError(ValueError):
    """A .question file does not follow the CNN format. The message starts `path:line:`."""


class CorpusNotFoundError(FileNotFoundError):
    """The manual directory does not hold the corpus."""


class DatasetNotFoundError(FileNotFoundError):
    """The prepared TFDS dataset is missing from a data_dir."""


# ------------------------------------------------------------------------------------------------
# Reading .question files.


@dataclasses.dataclass(frozen=True)
class ClozeQuestion:
    """One question. Token tuples are the file's space-separated tokens."""
    url: str
    context: tuple[str, ...]
    question: tuple[str, ...]
    answer: str  # '@entityN'
    entities: Mapping[str, str] = dataclasses.field(hash=False)  # '@entityN' -> surface name


def _fail(path: str, line: int, message: str) -> NoReturn:
    raise MalformedQuestionError(f'{path}:{line}: {message}')


def parse_question(text: str, path: str = '<string>') -> ClozeQuestion:
    """Parses the text of one .question file; raises MalformedQuestionError naming path and line.

    Checks what the model relies on: the four blank-line separators, exactly one @placeholder in
    the question, an answer that is a single @entityN occurring in the context, and well-formed,
    non-repeated entity lines. Trailing blank lines are allowed (files may or may not end in '\\n').
    """
    lines = [line.rstrip('\r') for line in text.split('\n')]
    while lines and not lines[-1]:
        lines.pop()
    names = ('url', 'context', 'question', 'answer')
    for i, name in enumerate(names):
        content_line, blank_line = 2 * i + 1, 2 * i + 2
        if len(lines) < content_line:
            _fail(path, content_line, f'file ends early: expected the {name} on this line')
        if not lines[content_line - 1].strip():
            _fail(path, content_line, f'expected the {name}, got an empty line')
        # The blank after the answer may be missing only if the file ends there (no entity lines).
        if len(lines) >= blank_line and lines[blank_line - 1].strip():
            _fail(path, blank_line, f'expected a blank line separating the {name} from what '
                                    f'follows, got {lines[blank_line - 1][:60]!r}')
    url = lines[0].strip()
    context = tuple(lines[2].split())
    question = tuple(lines[4].split())
    answer_tokens = lines[6].split()

    num_placeholders = question.count(PLACEHOLDER)
    if num_placeholders != 1:
        _fail(path, 5, f'expected exactly one {PLACEHOLDER} in the question, '
                       f'found {num_placeholders}')
    if len(answer_tokens) != 1 or not ENTITY_RE.fullmatch(answer_tokens[0]):
        _fail(path, 7, f'expected the answer to be one @entityN token, got {lines[6][:60]!r}')
    answer = answer_tokens[0]
    if answer not in context:
        _fail(path, 7, f'answer {answer} does not occur in the context (line 3)')

    entities = {}
    for number, line in enumerate(lines[8:], start=9):
        match = ENTITY_LINE_RE.fullmatch(line)
        if match is None:
            _fail(path, number, f"expected an entity line '@entityN:Surface Name', "
                                f'got {line[:60]!r}')
        entity, name = match.groups()
        if entity in entities:
            _fail(path, number, f'entity {entity} is listed twice')
        entities[entity] = name
    return ClozeQuestion(url, context, question, answer, entities)


def read_question(path: str | os.PathLike) -> ClozeQuestion:
    """Reads and parses one .question file (UTF-8)."""
    path = os.fspath(path)
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        _fail(path, raw.count(b'\n', 0, e.start) + 1, f'expected UTF-8 text: {e.reason}')
    return parse_question(text, path)


def question_files(questions_dir: str | os.PathLike, split: str) -> list[str]:
    """Sorted paths of `<questions_dir>/<training|validation|test>/*.question` for a TFDS split."""
    directory = os.path.join(os.fspath(questions_dir), SPLIT_DIRS[split])
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith('.question'))


# ------------------------------------------------------------------------------------------------
# "top4": the k sentences that best match the question.


def split_sentences(tokens: Sequence[str]) -> list[tuple[str, ...]]:
    """Cuts after every '.', '!' or '?' token; trailing tokens without one form a last sentence."""
    sentences, start = [], 0
    for i, token in enumerate(tokens):
        if token in SENTENCE_ENDS:
            sentences.append(tuple(tokens[start:i + 1]))
            start = i + 1
    if start < len(tokens):
        sentences.append(tuple(tokens[start:]))
    return sentences


def matching_terms(question: Sequence[str]) -> frozenset[str]:
    """The question tokens a sentence is scored on: no @placeholder, stopword or punctuation."""
    return frozenset(t for t in question if t != PLACEHOLDER and t not in STOPWORDS
                     and any(c.isalnum() for c in t))


def top_sentences(context: Sequence[str], question: Sequence[str], k: int) -> tuple[str, ...]:
    """The k sentences of `context` sharing the most distinct terms with `question`, in order.

    Our reconstruction of Cooijmans et al.'s "top4" (their script is not public). Score =
    |terms(question) & set(sentence)|; ties go to the earlier sentence. Returns the kept sentences'
    tokens concatenated in their original order (the whole context if it has <= k sentences).
    """
    sentences = split_sentences(context)
    if len(sentences) <= k:
        return tuple(context)
    terms = matching_terms(question)
    scores = [len(terms.intersection(s)) for s in sentences]
    best = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))[:k]
    return tuple(t for i in sorted(best) for t in sentences[i])


def apply_top_k(q: ClozeQuestion, k: int | None) -> ClozeQuestion:
    """`q` with its context cut to the top k sentences (k=None: unchanged)."""
    if k is None:
        return q
    return dataclasses.replace(q, context=top_sentences(q.context, q.question, k))


def answer_kept_fraction(questions: Iterable[ClozeQuestion], k: int) -> float:
    """Fraction of questions whose answer still occurs after top-k selection (1.0 if none)."""
    kept = [q.answer in top_sentences(q.context, q.question, k) for q in questions]
    return float(np.mean(kept)) if kept else 1.0


# ------------------------------------------------------------------------------------------------
# Vocabulary.


def entity_index(token: str) -> int | None:
    """N for '@entityN', else None."""
    match = ENTITY_RE.fullmatch(token)
    return int(match.group(1)) if match else None


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Token <-> id. Layout: <pad>, <unk>, @entity0..@entity{K-1}, @placeholder, words."""
    num_entities: int
    words: tuple[str, ...]  # ordinary words, most frequent first

    @functools.cached_property
    def tokens(self) -> tuple[str, ...]:
        entities = tuple(f'@entity{i}' for i in range(self.num_entities))
        return (PAD, UNK) + entities + (PLACEHOLDER,) + self.words

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def placeholder_id(self) -> int:
        return FIRST_ENTITY_ID + self.num_entities

    @property
    def entity_ids(self) -> np.ndarray:
        """int32 [K]: the ids of @entity0..@entity{K-1}, contiguous from FIRST_ENTITY_ID."""
        return np.arange(FIRST_ENTITY_ID, FIRST_ENTITY_ID + self.num_entities, dtype=np.int32)

    def id(self, token: str) -> int:
        return self._index.get(token, UNK_ID)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """tokens [L] -> int32 ids [L]; unknown tokens (and entities >= K) -> UNK_ID."""
        index = self._index
        return np.fromiter((index.get(t, UNK_ID) for t in tokens), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def save(self, path: str | os.PathLike) -> None:
        """One token per line; line i holds id i."""
        with open(path, 'w', encoding='utf-8') as f:
            f.write('\n'.join(self.tokens) + '\n')

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        with open(path, encoding='utf-8') as f:
            tokens = f.read().split('\n')[:-1]
        num_entities = 0
        while (FIRST_ENTITY_ID + num_entities < len(tokens)
               and tokens[FIRST_ENTITY_ID + num_entities] == f'@entity{num_entities}'):
            num_entities += 1
        vocab = cls(num_entities, tuple(tokens[FIRST_ENTITY_ID + num_entities + 1:]))
        if vocab.tokens != tuple(tokens):
            raise ValueError(f'{path} is not a vocabulary written by Vocab.save')
        return vocab


def build_vocab(texts: Iterable[Sequence[str]], *, min_count: int = 1,
                max_size: int | None = None, num_entities: int | None = None) -> Vocab:
    """A vocabulary from token sequences (pass the TRAINING contexts and questions only).

    Args:
        texts: token sequences; @entityN and @placeholder are not counted as words.
        min_count: drop words seen fewer times.
        max_size: cap on the total size including reserved and entity ids (None: no cap).
        num_entities: K; None means 1 + the largest entity index seen in `texts`.
    """
    counts = collections.Counter()
    max_entity = -1
    for tokens in texts:
        counts.update(tokens)
    for token in list(counts):
        n = entity_index(token)
        if n is not None or token == PLACEHOLDER:
            del counts[token]
            max_entity = max(max_entity, -1 if n is None else n)
    if num_entities is None:
        num_entities = max_entity + 1
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in (PAD, UNK)),
                   key=lambda w: (-counts[w], w))
    if max_size is not None:
        room = max_size - (FIRST_ENTITY_ID + num_entities + 1)
        if room < 0:
            raise ValueError(f'max_size={max_size} leaves no room for {num_entities} entities')
        words = words[:room]
    return Vocab(num_entities, tuple(words))


# ------------------------------------------------------------------------------------------------
# TFDS builder.

MANUAL_INSTRUCTIONS = """\
Put the DeepMind CNN corpus (or a synthetic one from `python -m lnrepro.data.synthetic_cloze`) in
the manual directory so that these exist:
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


@dataclasses.dataclass(eq=False)
class ClozeConfig(tfds.core.BuilderConfig):
    """top_k: keep this many best-matching sentences per passage (None: the whole passage)."""
    top_k: int | None = None


FULL_CONFIG = ClozeConfig(name='full', description='Whole passages.')
TOP4_CONFIG = ClozeConfig(
    name='top4', top_k=4,
    description='The 4 sentences best matching the question (our reconstruction of Cooijmans et '
                'al. 2016; see lnrepro/data/cloze.py).')
CONFIGS = {c.name: c for c in (FULL_CONFIG, TOP4_CONFIG)}


# skip_registration: importing this module leaves TFDS's global registry alone (the builder is
# only ever made through `_builder`), and `python -m` can import a second copy (see the end).
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
    return (f'`python -m lnrepro.data.cloze --data_dir={os.fspath(data_dir)} '
            f'--config={_config(config).name} --manual_dir=CORPUS_DIR`')


def prepare(data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None, *,
            config: str | ClozeConfig = 'top4') -> str:
    """Builds the dataset into data_dir unless already there; returns the dataset directory.

    manual_dir: where `cnn/questions/...` lives (default: TFDS's `<data_dir>/downloads/manual`).
    Raises CorpusNotFoundError (saying where the files must go) if the corpus is not there, and
    MalformedQuestionError (file:line) on the first bad file.
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
    """The vocabulary of the prepared TRAINING split (see build_vocab), cached in a text file."""
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


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedSplit:
    """A split as ids. N examples; documents and queries are int32 arrays of their own length."""
    ids: tuple[str, ...]                # [N] file stems
    documents: tuple[np.ndarray, ...]   # N x int32 [T_i]
    queries: tuple[np.ndarray, ...]     # N x int32 [Q_i]
    answers: np.ndarray                 # int32 [N], vocab ids of the answer entity

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def document_lengths(self) -> np.ndarray:
        return np.array([len(d) for d in self.documents], np.int32)

    @property
    def answer_in_document(self) -> np.ndarray:
        """bool [N]: the answer id occurs in the document (False where top-k dropped it)."""
        return np.array([np.any(d == a) for d, a in zip(self.documents, self.answers)], bool)


def encode_examples(examples: Iterable[Mapping[str, str]], vocab: Vocab) -> EncodedSplit:
    """Examples with space-joined 'context', 'question', 'answer' (and 'id') -> EncodedSplit."""
    ids, documents, queries, answers = [], [], [], []
    for ex in examples:
        ids.append(ex.get('id', ''))
        documents.append(vocab.encode(ex['context'].split()))
        queries.append(vocab.encode(ex['question'].split()))
        answers.append(vocab.id(ex['answer']))
    return EncodedSplit(tuple(ids), tuple(documents), tuple(queries),
                        np.array(answers, np.int32))


def load_split(data_dir: str | os.PathLike, split: str, vocab: Vocab, *,
               config: str | ClozeConfig = 'top4') -> EncodedSplit:
    """Reads a prepared split and encodes it with `vocab`. Never builds anything."""
    return encode_examples(read_split(data_dir, split, config=config), vocab)


# ------------------------------------------------------------------------------------------------
# Batching.


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def batch_indices(lengths: np.ndarray, batch_size: int, *, rng: np.random.Generator | None = None,
                  chunk_batches: int = 100, drop_remainder: bool = False) -> list[np.ndarray]:
    """Splits range(N) into batches of similar length.

    Examples are taken in a random order (rng given) or in order (rng None), in chunks of
    chunk_batches * batch_size; each chunk is sorted by length (stable) and cut into batches; with
    rng, the order of all batches is then shuffled. Only the very last batch can be short.
    """
    n = len(lengths)
    order = np.arange(n) if rng is None else rng.permutation(n)
    chunk = chunk_batches * batch_size
    batches = []
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind='stable')]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    if drop_remainder and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _pad(sequences: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads with PAD_ID: (ids int32 [B, length], mask float32 [B, length])."""
    ids = np.full((len(sequences), length), PAD_ID, np.int32)
    mask = np.zeros((len(sequences), length), np.float32)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1.0
    return ids, mask


def _padded_length(longest: int, bucket_width: int, fixed: int | None, what: str) -> int:
    if fixed is None:
        return round_up(max(longest, 1), bucket_width)
    if longest > fixed:
        raise ValueError(f'a {what} has {longest} tokens, more than the fixed length {fixed}')
    return fixed


def make_batch(data: EncodedSplit, indices: np.ndarray, *, bucket_width: int = 32,
               query_bucket_width: int = 16, batch_size: int | None = None,
               document_length: int | None = None,
               query_length: int | None = None) -> dict[str, np.ndarray]:
    """Gathers and pads examples `indices` into one batch (padding at the end of sequences).

    Lengths are rounded up to a multiple of the bucket width (or fixed to document_length /
    query_length), so few distinct shapes reach jit. If batch_size > len(indices), the batch is
    filled up by repeating its first example with example_mask 0: the filler rows are ordinary
    sequences (no all-padding rows that could make a masked softmax divide by zero), and losses and
    metrics must weight by example_mask.

    Returns: document int32 [B, T], document_mask float32 [B, T], query int32 [B, Q],
    query_mask float32 [B, Q], answer int32 [B], example_mask float32 [B] (1 = real example).
    """
    indices = np.asarray(indices)
    real = len(indices)
    if batch_size is not None and batch_size > real:
        indices = np.concatenate([indices, np.full(batch_size - real, indices[0])])
    documents = [data.documents[i] for i in indices]
    queries = [data.queries[i] for i in indices]
    t = _padded_length(max(len(d) for d in documents), bucket_width, document_length, 'document')
    q = _padded_length(max(len(s) for s in queries), query_bucket_width, query_length, 'query')
    document, document_mask = _pad(documents, t)
    query, query_mask = _pad(queries, q)
    example_mask = (np.arange(len(indices)) < real).astype(np.float32)
    return {'document': document, 'document_mask': document_mask, 'query': query,
            'query_mask': query_mask, 'answer': data.answers[indices], 'example_mask': example_mask}


def iterate_batches(data: EncodedSplit, batch_size: int, *,
                    rng: np.random.Generator | None = None, bucket_width: int = 32,
                    query_bucket_width: int = 16, chunk_batches: int = 100,
                    drop_remainder: bool = False, pad_to_batch_size: bool = False,
                    document_length: int | None = None,
                    query_length: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `data` in length-bucketed batches (see batch_indices and make_batch).

    Training: pass the run's numpy Generator as rng (examples and batch order shuffled). Validation:
    rng=None gives the same batches in the same order every time. pad_to_batch_size keeps B fixed
    (the last batch filled with example_mask 0 rows); document_length / query_length fix T / Q.
    """
    for idx in batch_indices(data.document_lengths, batch_size, rng=rng,
                             chunk_batches=chunk_batches, drop_remainder=drop_remainder):
        yield make_batch(data, idx, bucket_width=bucket_width,
                         query_bucket_width=query_bucket_width,
                         batch_size=batch_size if pad_to_batch_size else None,
                         document_length=document_length, query_length=query_length)


def permute_entities(batch: Mapping[str, np.ndarray], rng: np.random.Generator,
                     entity_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Relabels entities by one random permutation, consistently in document, query and answer.

    Hermann et al. 2015 / the attentive reader code: entity labels are anonymous, so a fresh
    permutation per TRAINING minibatch stops the model from learning label priors. Not for
    validation. entity_ids: int [K] (e.g. Vocab.entity_ids); id entity_ids[i] becomes
    entity_ids[perm[i]]; every other id (padding, words, @placeholder) is untouched. Returns a new
    dict; the input arrays are not modified.
    """
    entity_ids = np.asarray(entity_ids)
    table = np.arange(int(entity_ids.max()) + 1, dtype=np.int32)
    table[entity_ids] = entity_ids[rng.permutation(len(entity_ids))]

    def relabel(x: np.ndarray) -> np.ndarray:
        return np.where(x < len(table), table[np.minimum(x, len(table) - 1)], x).astype(x.dtype)

    out = dict(batch)
    for key in ('document', 'query', 'answer'):
        out[key] = relabel(np.asarray(batch[key]))
    return out


# ------------------------------------------------------------------------------------------------
# CLI.


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m lnrepro.data.cloze --data_dir=DIR --manual_dir=CORPUS [--config=top4]`."""
    parser = argparse.ArgumentParser(description='Build the CNN cloze TFDS dataset.')
    parser.add_argument('--data_dir', required=True, help='TFDS data_dir to build into')
    parser.add_argument('--manual_dir', default=None,
                        help='directory holding cnn/questions/{training,validation,test}')
    parser.add_argument('--config', default='top4', choices=sorted(CONFIGS))
    args = parser.parse_args(argv)
    path = prepare(args.data_dir, args.manual_dir, config=args.config)
    vocab = load_vocab(args.data_dir, args.config)
    print(f'{path}\nvocabulary: {len(vocab)} ids ({vocab.num_entities} entities)')


if __name__ == '__main__':
    # Under `python -m` this file runs as `__main__`, a module TFDS cannot locate the builder's
    # package from ("'__main__' is not a package"); run the copy imported under its real name.
    from lnrepro.data import cloze as _cloze
    _cloze.main()
