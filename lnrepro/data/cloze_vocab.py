"""Token ids for the cloze data: the vocabulary, and splits encoded with it.

Vocabulary (built from the training split only, after top-k selection):
    0 = <pad>, 1 = <unk>, 2 .. 2+K-1 = @entity0 .. @entity{K-1}, 2+K = @placeholder,
    then ordinary words by decreasing training frequency (ties alphabetical).
K is 1 + the largest @entity index in the training passages and questions, unless given.
Entities sit in one contiguous range so the trainer can permute them
(`cloze_batches.permute_entities`, once per training minibatch, never at validation). Words and
entities unseen in training map to <unk>.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from lnrepro.data.cloze_format import ENTITY_RE, PLACEHOLDER

PAD, UNK = '<pad>', '<unk>'
PAD_ID, UNK_ID = 0, 1
FIRST_ENTITY_ID = 2


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
