"""The CNN cloze question format (Hermann et al. 2015) and "top4" sentence selection.

Source: the DeepMind CNN corpus (github google-deepmind/rc-data), used by the attentive reader of
Ba et al. 2016, sec. 6.2. One file per question,
`cnn/questions/{training,validation,test}/<sha1 of the file's text>.question`:

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
`lnrepro.data.synthetic_cloze` writes a synthetic corpus in exactly this format.

"top4" (Cooijmans et al. 2016, the recurrent-BN paper whose setup Ba et al. follow): keep only the 4
sentences of the passage that best match the question. Its build script is not public, so
`top_sentences` is OUR reconstruction: a sentence ends at a '.', '!' or '?' token; its score is the
number of distinct question tokens (not @placeholder, not stopwords, not punctuation) it contains;
the k best are kept (ties: earlier sentence first), in their original order. Like the original, it
sometimes drops the answer (Cooijmans et al. report accuracy capped at 57%); such examples are kept,
and `EncodedSplit.answer_in_document` / `answer_kept_fraction` measure how often that happens.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Iterable, Mapping, NoReturn, Sequence

import numpy as np

PLACEHOLDER = '@placeholder'
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
