"""A synthetic cloze corpus in the exact CNN .question format, for 2-CPU attentive-reader runs.

Why: the CNN corpus (380k questions, passages of ~760 tokens) cannot be downloaded here and is far
too big for 2 CPU cores. This generator writes short news-like stories whose questions, like CNN's,
can only be answered by finding the right sentence in the passage, in files that go through the
same reader, TFDS builder, vocabulary and batcher as the real corpus (`lnrepro.data.cloze_*`).

A story is `num_facts` sentences each relating two anonymized entities, e.g.

    @entity3 hired @entity1 as a coach .      @entity5 was sued by @entity2 over the loan .

plus `num_filler` sentences without entities, in random order. The question restates one fact
with one entity replaced by @placeholder, through the same or (with `paraphrase_prob`) another
template of its relation, e.g. `@entity1 was hired by @placeholder as a coach`; relations have
active, passive and converse templates ("a sold x to b" / "b bought x from a"), so matching must
go through the relation and the roles, not word order. `num_distractors` facts are built to
defeat shallow cues, cycling through:
  swap          the same relation with the known entity in the answer's role
                ("@entity1 hired @entity6 as a coach": right words, wrong role);
  same_partner  another relation with the known entity in the same role ("@entity0 praised
                @entity1 ...");
  same_relation the same relation and argument word between two other entities.
None of them repeats the answer entity (that would make it the most frequent one: with an extra
"answer elsewhere" kind, picking the most frequent entity was right 45% of the time, against 19%
without; `frequency_baseline`).
No other fact matches the question's relation and known entity in the same role, so the answer is
unique, and it always occurs in the passage (asserted). Entities get random labels in
@entity0..@entity{num_entities-1} and random person names in the entity lines.

What this corpus CAN say about the paper's claim (Ba et al. 2016, sec. 6.2, Fig. 2: LN-LSTM trains
faster and reaches a lower validation error than LSTM and BN-LSTM in the attentive reader): whether
LN changes the optimization speed and final error of the same reader (embeddings, unidirectional
LSTMs, attention, entity permutation per minibatch) on a task that needs attention to a passage
(~72 tokens, 9 sentences with the defaults) with padding and variable lengths. Shallow cues are
weak but not useless: with the defaults, the most frequent entity not in the question is right 19%
of the time (`frequency_baseline`; 6-7 candidates), the first new entity of the sentence sharing
most words with the question 79% (`sentence_match_baseline`); paraphrases and role swaps are what
the remaining questions need.
What it CANNOT say: anything about the paper's absolute numbers (CNN top4 errors of ~50%, the 57%
cap from dropped answers), about long passages (hundreds of steps, where recurrent BN's per-step
statistics and LN's per-step normalization matter most), about a 65k-word vocabulary of real
language, or about how the gap scales to 800k updates. A small templated vocabulary is also easier
to memorize, so gaps between variants may be smaller or larger than on real news.

Usage:
    python -m experiments.prepare_data --dataset=synthetic_cloze --out=DIR [--num_train=20000]
    python -m experiments.prepare_data --dataset=cnn_cloze --data_dir=TFDS_DIR --manual_dir=DIR \
        --dataset_config=full
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import random
import shutil
import tempfile
from typing import Sequence

from lnrepro import locking
from lnrepro.data import cloze_format


@dataclasses.dataclass(frozen=True)
class Relation:
    """Templates of one asymmetric relation between agent {a} and patient {b}, with word {x}."""
    templates: tuple[str, ...]
    words: tuple[str, ...]


_JOBS = ('lawyer', 'coach', 'driver', 'manager', 'spokesman', 'chef', 'adviser', 'pilot')
_ISSUES = ('delay', 'decision', 'remarks', 'plan', 'vote', 'report', 'deal', 'policy')
_CITIES = ('london', 'paris', 'cairo', 'boston', 'tokyo', 'lagos', 'lima', 'berlin')
_DAYS = ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday')
RELATIONS = (
    Relation(('{a} hired {b} as a {x}', '{b} was hired by {a} as a {x}',
              '{a} gave {b} a job as a {x}'), _JOBS),
    Relation(('{a} sued {b} over the {x}', '{b} was sued by {a} over the {x}',
              '{a} filed a lawsuit against {b} over the {x}'),
             ('contract', 'accident', 'land', 'video', 'song', 'loan', 'fire', 'debt')),
    Relation(('{a} sold a {x} to {b}', '{b} bought a {x} from {a}',
              '{a} sold {b} a {x}'),
             ('car', 'house', 'boat', 'painting', 'horse', 'company', 'farm', 'truck')),
    Relation(('{a} interviewed {b} about the {x}', '{b} was interviewed by {a} about the {x}',
              '{a} spoke to {b} about the {x}'),
             ('election', 'storm', 'trial', 'match', 'strike', 'budget', 'war', 'flood')),
    Relation(('{a} defeated {b} in the {x}', '{b} lost to {a} in the {x}',
              '{a} beat {b} in the {x}'),
             ('final', 'election', 'race', 'semifinal', 'vote', 'primary', 'contest', 'match')),
    Relation(('{a} visited {b} in {x}', '{b} was visited by {a} in {x}',
              '{a} went to see {b} in {x}'), _CITIES),
    Relation(('{a} replaced {b} as {x}', '{b} was replaced by {a} as {x}',
              '{a} took over from {b} as {x}'),
             ('captain', 'chairman', 'mayor', 'director', 'editor', 'coach', 'leader', 'judge')),
    Relation(('{a} criticized {b} for the {x}', '{b} was criticized by {a} for the {x}',
              '{a} attacked {b} over the {x}'), _ISSUES),
    Relation(('{a} praised {b} for the {x}', '{b} was praised by {a} for the {x}',
              '{a} thanked {b} for the {x}'), _ISSUES),
    Relation(('{a} called {b} on {x}', '{b} received a call from {a} on {x}',
              '{a} phoned {b} on {x}'), _DAYS),
)
FILLERS = (
    ('the weather was {x} on {y} .', ('cold', 'warm', 'wet', 'calm', 'stormy'), _DAYS),
    ('officials said the {x} would be reviewed in {y} .', _ISSUES, _CITIES),
    ('the {x} was announced on {y} .', _ISSUES, _DAYS),
    ('police in {x} said no one was hurt on {y} .', _CITIES, _DAYS),
    ('more details about the {x} are expected on {y} .', _ISSUES, _DAYS),
    ('crowds gathered in {x} on {y} .', _CITIES, _DAYS),
)
FIRST_NAMES = ('Maria', 'John', 'Aisha', 'Wei', 'Carlos', 'Fatima', 'Peter', 'Yuki', 'Olga',
               'Kwame', 'Sofia', 'David', 'Amir', 'Grace', 'Lucas', 'Ines', 'Omar', 'Hannah',
               'Ravi', 'Elena', 'Tom', 'Nadia', 'Sam', 'Lena')
LAST_NAMES = ('Lopez', 'Smith', 'Khan', 'Chen', 'Silva', 'Haddad', 'Novak', 'Sato', 'Ivanova',
              'Mensah', 'Rossi', 'Cohen', 'Farah', 'Kim', 'Muller', 'Garcia', 'Okafor', 'Berg',
              'Patel', 'Costa', 'Walsh', 'Ali', 'Dubois', 'Moreau')
DISTRACTOR_KINDS = ('swap', 'same_partner', 'same_relation')
CONFIG_FILE = 'synthetic_config.json'


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Corpus size and difficulty. Defaults: the experiment size (24k files written in ~3 s)."""
    num_train: int = 20_000
    num_validation: int = 2_000
    num_test: int = 2_000
    num_entities: int = 8       # entity labels per story (the vocabulary's K); >= 4
    num_facts: int = 6          # two-entity sentences, the asked one included
    num_distractors: int = 3    # of the other facts, how many are built to mislead
    num_filler: int = 3         # sentences without entities (passage length)
    paraphrase_prob: float = 0.5  # question uses another template of the relation
    seed: int = 0

    def split_sizes(self) -> dict[str, int]:
        return {'train': self.num_train, 'validation': self.num_validation,
                'test': self.num_test}

    def check(self) -> None:
        if self.num_entities < 4:
            raise ValueError(f'num_entities must be >= 4 (distractors need them), '
                             f'got {self.num_entities}')
        if not 0 <= self.num_distractors <= self.num_facts - 1:
            raise ValueError(f'num_distractors must be in [0, num_facts - 1], got '
                             f'{self.num_distractors} with num_facts={self.num_facts}')
        if not 0.0 <= self.paraphrase_prob <= 1.0:
            raise ValueError(f'paraphrase_prob must be in [0, 1], got {self.paraphrase_prob}')


# A fact: (relation index, agent, patient, word, template index); agent/patient are entity slots.
Fact = tuple[int, int, int, str, int]


def _render(fact: Fact, labels: Sequence[str], template: int | None = None,
            agent: str | None = None, patient: str | None = None) -> str:
    rel, a, b, x, t = fact
    text = RELATIONS[rel].templates[t if template is None else template]
    return text.format(a=agent or labels[a], b=patient or labels[b], x=x)


def _random_fact(rng: random.Random, rel: int, a: int, b: int) -> Fact:
    relation = RELATIONS[rel]
    return rel, a, b, rng.choice(relation.words), rng.randrange(len(relation.templates))


def _other(rng: random.Random, n: int, exclude: Sequence[int]) -> int:
    """A random entity slot in range(n) not in exclude."""
    while True:
        e = rng.randrange(n)
        if e not in exclude:
            return e


def _distractor(kind: str, rng: random.Random, target: Fact, ask_agent: bool, n: int) -> Fact:
    """A fact of `kind` (see module docstring) for the question about `target`."""
    rel, a, b, x, _ = target
    answer, known = (a, b) if ask_agent else (b, a)
    other_rel = _other(rng, len(RELATIONS), [rel])
    c = _other(rng, n, [answer, known])
    if kind == 'swap':  # known takes the answer's role, with a third entity
        return (_random_fact(rng, rel, known, c) if ask_agent
                else _random_fact(rng, rel, c, known))
    if kind == 'same_partner':  # known keeps its role, another relation
        return (_random_fact(rng, other_rel, c, known) if ask_agent
                else _random_fact(rng, other_rel, known, c))
    if kind == 'same_relation':  # same relation and word, two entities other than known
        d = _other(rng, n, [known, c])
        return rel, c, d, x, rng.randrange(len(RELATIONS[rel].templates))
    raise ValueError(f'unknown distractor kind {kind!r}')


def _ambiguous(fact: Fact, target: Fact, ask_agent: bool) -> bool:
    """Would `fact` also answer the question about `target`: the same relation with the known
    entity in the same role? (This also rules out repeating the target.)"""
    known_role = 2 if ask_agent else 1
    return fact[0] == target[0] and fact[known_role] == target[known_role]


def make_story(rng: random.Random, config: SyntheticConfig, url: str) -> str:
    """The text of one .question file (rc-data layout, no final newline)."""
    n = config.num_entities
    labels = [f'@entity{i}' for i in rng.sample(range(n), n)]  # slot -> random label

    a, b = rng.sample(range(n), 2)
    target = _random_fact(rng, rng.randrange(len(RELATIONS)), a, b)
    ask_agent = rng.random() < 0.5
    facts = [target]
    for i in range(config.num_distractors):
        facts.append(_distractor(DISTRACTOR_KINDS[i % len(DISTRACTOR_KINDS)], rng, target,
                                 ask_agent, n))
    while len(facts) < config.num_facts:
        a, b = rng.sample(range(n), 2)
        fact = _random_fact(rng, rng.randrange(len(RELATIONS)), a, b)
        if not _ambiguous(fact, target, ask_agent):  # keep the answer unique
            facts.append(fact)

    sentences = [_render(f, labels) + ' .' for f in facts]
    for _ in range(config.num_filler):
        text, xs, ys = rng.choice(FILLERS)
        sentences.append(text.format(x=rng.choice(xs), y=rng.choice(ys)))
    rng.shuffle(sentences)
    context = ' '.join(sentences)

    rel, t = target[0], target[4]
    num_templates = len(RELATIONS[rel].templates)
    if rng.random() < config.paraphrase_prob:
        t = (t + 1 + rng.randrange(num_templates - 1)) % num_templates
    if ask_agent:
        question = _render(target, labels, t, agent=cloze_format.PLACEHOLDER)
    else:
        question = _render(target, labels, t, patient=cloze_format.PLACEHOLDER)
    answer = labels[target[1] if ask_agent else target[2]]
    assert answer in context.split(), (answer, context)  # The answer is always in the passage.

    used = sorted({int(token[len('@entity'):]) for token in (context + ' ' + question).split()
                   if token.startswith('@entity')})
    # Distinct names: distinct indices into the (first, last) grid.
    names = rng.sample(range(len(FIRST_NAMES) * len(LAST_NAMES)), len(used))
    entity_lines = '\n'.join(
        f'@entity{i}:{FIRST_NAMES[k // len(LAST_NAMES)]} {LAST_NAMES[k % len(LAST_NAMES)]}'
        for i, k in zip(used, names))
    return f'{url}\n\n{context}\n\n{question}\n\n{answer}\n\n{entity_lines}'


def generate_split(config: SyntheticConfig, split: str) -> list[str]:
    """The .question texts of one split; the same config always gives the same texts."""
    config.check()
    # One stream per split, from a string seed (hashed with sha512 by `random`, stable across
    # runs and platforms), so changing one split's size leaves the others unchanged.
    rng = random.Random(f'lnrepro-synthetic-cloze/{config.seed}/{split}')
    n = config.split_sizes()[split]
    return [make_story(rng, config, f'https://example.com/synthetic/{split}/{i}')
            for i in range(n)]


def write_corpus(out_dir: str | os.PathLike, config: SyntheticConfig) -> str:
    """Writes `<out_dir>/cnn/questions/{training,validation,test}/<sha1>.question`; returns
    out_dir (the builder's manual_dir).

    Idempotent: if out_dir already holds a corpus written with the same config, nothing is
    written; a different config there is an error (files of two configs must not mix). Safe
    under concurrency: one process writes (under a lock beside out_dir), into a temporary
    directory renamed to out_dir when complete, so the others wait and then find the whole
    corpus, and a writer killed halfway leaves nothing at out_dir.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    wanted = dataclasses.asdict(config)
    with locking.exclusive(f'{out_dir}.lock', 'writing the synthetic corpus'):
        if _check_existing(out_dir, wanted):
            return out_dir
        for leftover in glob.glob(f'{out_dir}.incomplete-*'):  # a killed writer's
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=f'{os.path.basename(out_dir)}.incomplete-',
                               dir=os.path.dirname(out_dir))
        try:
            _write_files(tmp, config)
            with open(os.path.join(tmp, CONFIG_FILE), 'w') as f:
                json.dump(wanted, f, indent=1, sort_keys=True)
            os.rename(tmp, out_dir)  # fails if out_dir exists: nothing is ever mixed
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _check_existing(out_dir: str, wanted: dict) -> bool:
    """True if out_dir holds the wanted corpus, False if there is none; raises otherwise."""
    config_path = os.path.join(out_dir, CONFIG_FILE)
    if os.path.exists(config_path):
        with open(config_path) as f:
            found = json.load(f)
        if found != wanted:
            raise FileExistsError(f'{out_dir} holds a synthetic corpus of another config {found}; '
                                  f'use another directory for {wanted}')
        return True
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f'{out_dir} exists without {CONFIG_FILE}; refusing to mix '
                              'corpora. Use an empty directory.')
    if os.path.exists(out_dir):
        os.rmdir(out_dir)  # empty: make room for the rename
    return False


def _write_files(root: str, config: SyntheticConfig) -> None:
    questions_dir = os.path.join(root, cloze_format.QUESTIONS_SUBDIR)
    for split, directory in cloze_format.SPLIT_DIRS.items():
        split_dir = os.path.join(questions_dir, directory)
        os.makedirs(split_dir)
        for text in generate_split(config, split):
            data = text.encode('utf-8')
            # Named by the sha1 of the file's text, as rc-data names them.
            with open(os.path.join(split_dir, hashlib.sha1(data).hexdigest() + '.question'),
                      'wb') as f:
                f.write(data)


def frequency_baseline(questions: Sequence[cloze_format.ClozeQuestion]) -> float:
    """Accuracy of answering with the passage's most frequent entity not in the question (ties:
    first occurrence). A word-frequency cue the corpus is designed to defeat."""
    correct = 0
    for q in questions:
        counts: dict[str, int] = {}
        for t in q.context:
            if t.startswith('@entity') and t not in q.question:
                counts[t] = counts.get(t, 0) + 1
        correct += bool(counts) and max(counts, key=counts.get) == q.answer
    return correct / max(len(questions), 1)


def sentence_match_baseline(questions: Sequence[cloze_format.ClozeQuestion]) -> float:
    """Accuracy of answering with the first entity not in the question of the sentence sharing the
    most terms with the question (cloze_format.matching_terms; ties: earlier sentence)."""
    correct = 0
    for q in questions:
        terms = cloze_format.matching_terms(q.question)
        best = max(cloze_format.split_sentences(q.context),
                   key=lambda s: len(terms.intersection(s)))
        candidates = [t for t in best if t.startswith('@entity') and t not in q.question]
        correct += bool(candidates) and candidates[0] == q.answer
    return correct / max(len(questions), 1)


def shallow_baseline_errors(config: SyntheticConfig) -> dict[str, float]:
    """Validation error of the shallow baselines on the corpus of `config`: the bars a reader's
    validation error is read against."""
    validation = [cloze_format.parse_question(text)
                  for text in generate_split(config, 'validation')]
    return {'most_frequent_entity': 1 - frequency_baseline(validation),
            'sentence_match': 1 - sentence_match_baseline(validation)}
