"""Tests for lnrepro.data.cloze_{format,vocab,dataset,batches} and lnrepro.data.synthetic_cloze
on files written here.

The hand-written questions follow the rc-data layout byte for byte (`url\\n\\ncontext\\n\\nquestion
\\n\\nanswer\\n\\nentity lines`, no final newline, named by the sha1 of their text), so the reader,
the TFDS builder and the batcher run on exactly what the real corpus looks like.
"""

import hashlib
import os
import random
import re
import sys

import numpy as np
import pytest

from lnrepro.data import cloze_batches, cloze_dataset, cloze_format, cloze_vocab
from lnrepro.data import synthetic_cloze as synth


def question_text(url, context, question, answer, entities):
    """A .question file's text, as rc-data writes it."""
    lines = '\n'.join(f'{e}:{n}' for e, n in entities.items())
    return f'{url}\n\n{context}\n\n{question}\n\n{answer}\n\n{lines}'


# Top4 of EX_MEETING keeps sentences 0, 1, 2, 5: scores 3, 1, 0, 0, 0, 1 (sentence 2 wins the
# three-way tie at 0 by position; 'rebels' does not match 'rebel'; 'in' is a stopword).
EX_MEETING = dict(
    url='http://web.archive.org/web/20150401000000id_/http://www.cnn.com/2015/04/01/world/talks/',
    context=('@entity0 ( @entity1 ) -- the president of @entity2 , @entity3 , met rebel leaders '
             'on tuesday . the talks took place in @entity4 . @entity3 said the meeting was '
             'productive . rebels from @entity5 did not attend . officials expect a second round '
             'next month . the weather in @entity4 was cold .'),
    question='@placeholder met rebel leaders in @entity4',
    answer='@entity3',
    entities={'@entity0': 'Geneva', '@entity1': 'CNN', '@entity2': 'Yemen',
              '@entity3': 'Abd Rabbu Mansour Hadi', '@entity4': 'Oman', '@entity5': 'Aden'})
EX_MEETING_TOP4 = (
    '@entity0 ( @entity1 ) -- the president of @entity2 , @entity3 , met rebel leaders on '
    'tuesday . the talks took place in @entity4 . @entity3 said the meeting was productive . '
    'the weather in @entity4 was cold .')
# Top4 drops the answer's sentence: the question's words are all in the other four.
EX_STADIUM = dict(
    url='http://web.archive.org/web/20140612000000id_/http://www.cnn.com/2014/06/12/sport/cup/',
    context=('@entity2 scored late in the match ! the fans sang loudly in the stadium . the '
             'stadium was full for the match . fans waited outside the stadium after the match . '
             'the stadium lights failed before the match . @entity7 coached @entity2 ?'),
    question='fans in the stadium cheered @placeholder after the match',
    answer='@entity2',
    entities={'@entity2': 'Lionel Messi', '@entity7': 'Gerardo Martino'})
EX_SALE = dict(
    url='http://web.archive.org/web/20130303000000id_/http://www.cnn.com/2013/03/03/us/sale/',
    context="@entity0 sold the company to @entity1 for $ 2 billion , the firm 's statement said",
    question='@entity1 bought the company from @placeholder',
    answer='@entity0',
    entities={'@entity0': 'Dell', '@entity1': 'Silver Lake'})
# Validation only: 'zeppelin' never occurs in training; @entity9 is beyond training's @entity7.
EX_VALID = dict(
    url='http://web.archive.org/web/20120101000000id_/http://www.cnn.com/2012/01/01/us/airship/',
    context='@entity9 flew a zeppelin over @entity1 . @entity0 met @entity9 .',
    question='@placeholder flew a zeppelin',
    answer='@entity9',
    entities={'@entity0': 'Dell', '@entity1': 'Silver Lake', '@entity9': 'Hugo Eckener'})
EX_TEST = dict(
    url='http://web.archive.org/web/20110101000000id_/http://www.cnn.com/2011/01/01/us/test/',
    context='@entity3 met rebel leaders . @entity0 said nothing .',
    question='@placeholder met rebel leaders',
    answer='@entity3',
    entities={'@entity0': 'Geneva', '@entity3': 'Abd Rabbu Mansour Hadi'})
CORPUS = {'training': [EX_MEETING, EX_STADIUM, EX_SALE], 'validation': [EX_VALID],
          'test': [EX_TEST]}


def write_question(directory, ex=None, text=None):
    """Writes one file named like rc-data's (sha1 of the text); returns its path."""
    data = (text if text is not None else question_text(**ex))
    data = data.encode('utf-8') if isinstance(data, str) else data
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, hashlib.sha1(data).hexdigest() + '.question')
    with open(path, 'wb') as f:
        f.write(data)
    return path


def write_corpus(root, corpus=CORPUS):
    for split_dir, examples in corpus.items():
        for ex in examples:
            write_question(os.path.join(root, 'cnn', 'questions', split_dir), ex)
    return root


@pytest.fixture(scope='module')
def hand_built(tmp_path_factory):
    """data_dir holding both configs of the hand-written corpus."""
    manual = write_corpus(tmp_path_factory.mktemp('manual'))
    data_dir = tmp_path_factory.mktemp('tfds')
    for config in ('full', 'top4'):
        cloze_dataset.prepare(data_dir, manual, config=config)
    return data_dir


TINY = synth.SyntheticConfig(num_train=300, num_validation=40, num_test=20, seed=3)


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    """(manual dir, data_dir, vocab, train, validation) for the tiny synthetic corpus."""
    manual = synth.write_corpus(tmp_path_factory.mktemp('synthetic'), TINY)
    data_dir = tmp_path_factory.mktemp('synthetic_tfds')
    cloze_dataset.prepare(data_dir, manual, config='full')
    vocab = cloze_dataset.load_vocab(data_dir, 'full')
    train = cloze_dataset.load_split(data_dir, 'train', vocab, config='full')
    valid = cloze_dataset.load_split(data_dir, 'validation', vocab, config='full')
    return manual, data_dir, vocab, train, valid


# ------------------------------------------------------------------------------------------------
# Reader.


@pytest.mark.parametrize('ex', [EX_MEETING, EX_STADIUM, EX_SALE, EX_VALID])
def test_parse_hand_written_files(tmp_path, ex):
    q = cloze_format.read_question(write_question(tmp_path, ex))
    assert q.url == ex['url']
    assert q.context == tuple(ex['context'].split(' '))
    assert q.question == tuple(ex['question'].split(' '))
    assert q.answer == ex['answer'] and q.answer in q.context
    assert q.question.count('@placeholder') == 1
    assert dict(q.entities) == ex['entities']


def test_parse_details():
    q = cloze_format.parse_question(question_text(**EX_MEETING))
    assert len(q.context) == 54 and q.context[:4] == ('@entity0', '(', '@entity1', ')')
    assert q.question == ('@placeholder', 'met', 'rebel', 'leaders', 'in', '@entity4')
    assert q.entities['@entity3'] == 'Abd Rabbu Mansour Hadi'
    # A final newline (or a few), CRLF line ends and ':' inside a name are all accepted.
    text = question_text(**dict(EX_SALE, entities={'@entity0': 'Dell: Inc', '@entity1': 'SL'}))
    for variant in (text + '\n', text + '\n\n', text.replace('\n', '\r\n')):
        q = cloze_format.parse_question(variant)
        assert q.answer == '@entity0' and dict(q.entities) == {'@entity0': 'Dell: Inc',
                                                                '@entity1': 'SL'}
    # No entity lines at all is still a question (the blank after the answer may then go too).
    head = f"{EX_SALE['url']}\n\n{EX_SALE['context']}\n\n{EX_SALE['question']}\n\n@entity0"
    assert cloze_format.parse_question(head).entities == {}


def _lines(ex=EX_SALE):
    return question_text(**ex).split('\n')


def _with(line_number, new):
    lines = _lines()
    lines[line_number - 1] = new
    return '\n'.join(lines)


MALFORMED = {
    # name: (text, line, what the message must say)
    'context runs on (missing blank line)': (
        '\n'.join(_lines()[:3] + ['more context .'] + _lines()[3:]), 4,
        'expected a blank line separating the context'),
    'no @placeholder': (_with(5, '@entity1 bought the company from @entity0'), 5,
                        'expected exactly one @placeholder in the question, found 0'),
    'two @placeholder': (_with(5, '@placeholder bought the company from @placeholder'), 5,
                         'found 2'),
    'answer not an entity': (_with(7, 'dell'), 7, 'one @entityN token'),
    'answer of two tokens': (_with(7, '@entity0 @entity1'), 7, 'one @entityN token'),
    'answer not in context': (_with(7, '@entity4'), 7, 'does not occur in the context'),
    'bad entity line': (_with(10, 'entity1 Silver Lake'), 10, "'@entityN:Surface Name'"),
    'blank inside entity lines': ('\n'.join(_lines()[:9] + ['', _lines()[9]]), 10,
                                  "'@entityN:Surface Name'"),
    'entity listed twice': (_with(10, '@entity0:Dell again'), 10, 'listed twice'),
    'truncated after the context': ('\n'.join(_lines()[:3]), 5,
                                    'file ends early: expected the question'),
    'empty question': (_with(5, ''), 5, 'expected the question, got an empty line'),
    'empty file': ('', 1, 'file ends early: expected the url'),
}


@pytest.mark.parametrize('name', sorted(MALFORMED))
def test_malformed_files_name_the_file_line_and_expectation(tmp_path, name):
    text, line, expected = MALFORMED[name]
    path = write_question(tmp_path, text=text)
    with pytest.raises(cloze_format.MalformedQuestionError) as info:
        cloze_format.read_question(path)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f'{path}:{line}: '), message
    assert expected in message, message


def test_invalid_utf8_is_malformed_with_its_line(tmp_path):
    data = question_text(**EX_SALE).encode('utf-8').replace(b'company to', b'company \xff to')
    path = write_question(tmp_path, text=data)
    with pytest.raises(cloze_format.MalformedQuestionError, match=f'^{path}:3: expected UTF-8'):
        cloze_format.read_question(path)


# ------------------------------------------------------------------------------------------------
# top4.


def test_split_sentences_cuts_after_terminators():
    tokens = 'a b . c ! d ? e f'.split()
    assert cloze_format.split_sentences(tokens) == [('a', 'b', '.'), ('c', '!'), ('d', '?'),
                                                    ('e', 'f')]
    assert cloze_format.split_sentences([]) == []


def test_matching_terms_ignore_placeholder_stopwords_and_punctuation():
    q = '@placeholder met rebel leaders in @entity4 , the " capital "'.split()
    assert cloze_format.matching_terms(q) == {'met', 'rebel', 'leaders', '@entity4', 'capital'}


def test_top4_keeps_best_sentences_in_original_order():
    q = cloze_format.parse_question(question_text(**EX_MEETING))
    assert ' '.join(cloze_format.top_sentences(q.context, q.question, 4)) == EX_MEETING_TOP4
    assert ' '.join(cloze_format.top_sentences(q.context, q.question, 1)) == (
        '@entity0 ( @entity1 ) -- the president of @entity2 , @entity3 , met rebel leaders on '
        'tuesday .')
    # Six sentences; with k >= 6 nothing is dropped.
    assert cloze_format.top_sentences(q.context, q.question, 6) == q.context
    assert cloze_format.apply_top_k(q, None) is q


def test_top4_can_drop_the_answer_and_the_fraction_says_so():
    stadium = cloze_format.parse_question(question_text(**EX_STADIUM))
    kept = cloze_format.top_sentences(stadium.context, stadium.question, 4)
    assert ' '.join(kept) == (
        'the fans sang loudly in the stadium . the stadium was full for the match . fans waited '
        'outside the stadium after the match . the stadium lights failed before the match .')
    assert stadium.answer not in kept
    meeting = cloze_format.parse_question(question_text(**EX_MEETING))
    sale = cloze_format.parse_question(question_text(**EX_SALE))  # one sentence: always kept
    assert cloze_format.answer_kept_fraction([meeting, stadium, sale], 4) == pytest.approx(2 / 3)
    assert cloze_format.answer_kept_fraction([meeting, stadium, sale], 6) == 1.0


# ------------------------------------------------------------------------------------------------
# Builder, vocabulary, load_split.


def _by_url(data_dir, split, config):
    return {ex['url']: ex for ex in cloze_dataset.read_split(data_dir, split, config=config)}


def test_builder_reads_back_through_as_data_source(hand_built):
    assert 'tensorflow' not in sys.modules  # The whole path runs without TensorFlow.
    for config in ('full', 'top4'):
        got = _by_url(hand_built, 'train', config)
        assert sorted(got) == sorted(ex['url'] for ex in CORPUS['training'])
        for ex in CORPUS['training']:
            row = got[ex['url']]
            assert row['question'] == ex['question'] and row['answer'] == ex['answer']
            assert row['entities'] == '\n'.join(f'{e}:{n}' for e, n in ex['entities'].items())
            assert row['id'] == hashlib.sha1(question_text(**ex).encode()).hexdigest()
        assert got[EX_SALE['url']]['context'] == EX_SALE['context']
    assert _by_url(hand_built, 'train', 'full')[EX_MEETING['url']]['context'] == \
        EX_MEETING['context']
    assert _by_url(hand_built, 'train', 'top4')[EX_MEETING['url']]['context'] == EX_MEETING_TOP4
    # Examples are in sorted file order (deterministic), in every split.
    ids = [ex['id'] for ex in cloze_dataset.read_split(hand_built, 'train', config='top4')]
    assert ids == sorted(ids)
    assert [ex['url'] for ex in cloze_dataset.read_split(hand_built, 'test', config='top4')] == \
        [EX_TEST['url']]


def test_vocab_is_built_from_training_only(hand_built):
    vocab = cloze_dataset.load_vocab(hand_built, 'top4')
    # K = 1 + the largest label in training's (top4) passages and questions: @entity4 (top4
    # dropped the sentences holding @entity5 and @entity7).
    assert vocab.num_entities == 5
    assert vocab.tokens[:8] == ('<pad>', '<unk>', '@entity0', '@entity1', '@entity2', '@entity3',
                                '@entity4', '@placeholder')
    np.testing.assert_array_equal(vocab.entity_ids, np.arange(2, 7))
    assert vocab.placeholder_id == 7 == vocab.id('@placeholder')
    assert vocab.words[0] == 'the'  # most frequent first
    assert vocab.id('rebel') > vocab.placeholder_id
    # In validation only: an ordinary word and an entity label beyond training's range.
    assert vocab.id('zeppelin') == cloze_vocab.UNK_ID and vocab.id('@entity9') == cloze_vocab.UNK_ID
    # Words of sentences top4 dropped are not in its vocabulary; the full one has them.
    assert 'productive' in vocab.words and 'scored' not in vocab.words
    full = cloze_dataset.load_vocab(hand_built, 'full')
    assert 'scored' in full.words and full.num_entities == 8

    valid = cloze_dataset.load_split(hand_built, 'validation', vocab, config='top4')
    (doc,) = valid.documents
    unk = cloze_vocab.UNK_ID
    assert list(doc[:4]) == [unk, vocab.id('flew'), vocab.id('a'), unk]
    assert valid.answers.tolist() == [cloze_vocab.UNK_ID]
    assert doc.dtype == np.int32 and valid.answers.dtype == np.int32

    train = cloze_dataset.load_split(hand_built, 'train', vocab, config='top4')
    assert train.ids == tuple(sorted(train.ids))
    assert train.answer_in_document.sum() == 2  # top4 dropped the stadium answer
    assert cloze_vocab.UNK_ID not in np.concatenate(train.documents + train.queries)


def test_vocab_options_and_file_round_trip(tmp_path):
    texts = [['b', 'a', 'a', '@entity4', '@placeholder'], ['c', 'b', 'a']]
    vocab = cloze_vocab.build_vocab(texts)
    assert vocab.num_entities == 5 and vocab.words == ('a', 'b', 'c')
    assert cloze_vocab.build_vocab(texts, min_count=2).words == ('a', 'b')
    small = cloze_vocab.build_vocab(texts, max_size=2 + 5 + 1 + 1)
    assert small.words == ('a',) and len(small) == 9
    assert cloze_vocab.build_vocab(texts, num_entities=12).num_entities == 12
    with pytest.raises(ValueError, match='no room'):
        cloze_vocab.build_vocab(texts, max_size=3)
    vocab.save(tmp_path / 'v.txt')
    assert cloze_vocab.Vocab.load(tmp_path / 'v.txt') == vocab
    np.testing.assert_array_equal(vocab.encode(['a', 'zzz', '@entity4', '@entity5']),
                                  [8, 1, 6, 1])
    assert vocab.decode([0, 1, 2, 7, 8]) == ['<pad>', '<unk>', '@entity0', '@placeholder', 'a']


def test_vocab_is_cached_beside_the_dataset(hand_built):
    path = cloze_dataset.vocab_path(hand_built, 'full', min_count=1)
    first = cloze_dataset.load_vocab(hand_built, 'full')
    assert os.path.exists(path) and cloze_vocab.Vocab.load(path) == first
    assert cloze_dataset.load_vocab(hand_built, 'full') == first


def test_missing_manual_dir_says_where_the_files_go(tmp_path):
    missing = tmp_path / 'nowhere'
    with pytest.raises(cloze_dataset.CorpusNotFoundError) as info:
        cloze_dataset.prepare(tmp_path / 'tfds', missing, config='full')
    assert str(missing) in str(info.value) and 'cnn/questions/training' in str(info.value)
    (tmp_path / 'wrong' / 'cnn').mkdir(parents=True)
    (tmp_path / 'wrong' / 'cnn' / 'stories').mkdir()
    with pytest.raises(cloze_dataset.CorpusNotFoundError) as info:
        cloze_dataset.prepare(tmp_path / 'tfds', tmp_path / 'wrong', config='full')
    assert f"{tmp_path / 'wrong'}/cnn/questions/{{training,validation,test}}" in str(info.value)
    with pytest.raises(cloze_dataset.DatasetNotFoundError, match='--manual_dir'):
        # Nothing half-built is mistaken for data.
        cloze_dataset.load_vocab(tmp_path / 'tfds', 'full')


def test_a_malformed_file_stops_the_build_with_its_name_and_line(tmp_path):
    manual = write_corpus(tmp_path / 'manual')
    bad = write_question(tmp_path / 'manual' / 'cnn' / 'questions' / 'validation',
                         text=MALFORMED['answer not in context'][0])
    with pytest.raises(cloze_format.MalformedQuestionError, match=f'{bad}:7: '):
        cloze_dataset.prepare(tmp_path / 'tfds', manual, config='top4')


def test_unknown_split_and_config_are_refused(hand_built):
    with pytest.raises(ValueError, match='unknown split'):
        next(cloze_dataset.read_split(hand_built, 'valid', config='top4'))
    with pytest.raises(ValueError, match='unknown config'):
        cloze_dataset.prepare(hand_built, config='top5')


# ------------------------------------------------------------------------------------------------
# Synthetic corpus.


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), 'rb') as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = f.read()
    return out


def test_generator_is_deterministic_byte_for_byte(synthetic, tmp_path):
    manual = synthetic[0]
    again = synth.write_corpus(tmp_path / 'again', TINY)
    files = _files(manual)
    assert len(files) == 300 + 40 + 20 + 1  # + synthetic_config.json
    assert _files(again) == files
    other = _files(synth.write_corpus(tmp_path / 'other',
                                      synth.SyntheticConfig(num_train=300, num_validation=40,
                                                            num_test=20, seed=4)))
    assert set(other) != set(files) and len(other) == len(files)
    # Rewriting the same config is a no-op; another config into the same directory is refused.
    assert synth.write_corpus(manual, TINY) == manual and _files(manual) == files
    with pytest.raises(FileExistsError, match='another config'):
        synth.write_corpus(manual, synth.SyntheticConfig(num_train=10, seed=3))


def test_generated_questions_are_valid_and_not_answerable_by_frequency(synthetic):
    manual = synthetic[0]
    questions_dir = cloze_dataset.find_questions_dir(manual)
    questions = []
    for split, n in TINY.split_sizes().items():
        paths = cloze_format.question_files(questions_dir, split)
        assert len(paths) == n
        for path in paths:
            with open(path, 'rb') as f:
                data = f.read()
            assert os.path.basename(path) == hashlib.sha1(data).hexdigest() + '.question'
            q = cloze_format.read_question(path)  # the full checks of the reader
            assert q.answer in q.context and q.answer not in q.question
            labels = {t for t in q.context + q.question if t.startswith('@entity')}
            assert set(q.entities) == labels
            assert all(int(e[7:]) < TINY.num_entities for e in labels)
            assert len(set(q.entities.values())) == len(labels)  # distinct surface names
            questions.append(q)
    lengths = [len(q.context) for q in questions]
    assert 40 < np.mean(lengths) < 110
    # Near chance (~1/6): word frequency alone does not find the answer.
    assert synth.frequency_baseline(questions) < 0.3
    # Paraphrases and role swaps defeat plain word overlap often enough.
    assert synth.sentence_match_baseline(questions) < 0.9


def _fact_parsers():
    """[(relation index, regex)] reading a fact (agent, patient, word) back from any template."""
    parsers = []
    for rel, relation in enumerate(synth.RELATIONS):
        for template in relation.templates:
            pattern = re.escape(template)
            for slot, group in (('a', r'(?P<a>@\w+)'), ('b', r'(?P<b>@\w+)'),
                                ('x', r'(?P<x>\w+)')):
                pattern = pattern.replace(re.escape('{%s}' % slot), group)
            parsers.append((rel, re.compile(pattern)))
    return parsers


def _read_fact(text, parsers):
    found = [(rel, m['a'], m['b'], m['x']) for rel, p in parsers if (m := p.fullmatch(text))]
    assert len(found) <= 1, text  # templates are unambiguous
    return found[0] if found else None


def test_each_question_has_exactly_one_answering_fact():
    """Reads every fact back from the text (through any template) and checks that exactly one
    has the question's relation and known entity in the same role, and that it names the answer.
    Few entities and many facts, so that accidental second matches would be common."""
    parsers = _fact_parsers()
    config = synth.SyntheticConfig(num_entities=4, num_facts=8, num_distractors=3)
    rng = random.Random(0)
    paraphrased = 0
    for i in range(300):
        q = cloze_format.parse_question(synth.make_story(rng, config, f'u{i}'))
        rel, a, b, x = _read_fact(' '.join(q.question), parsers)
        ask_agent = a == '@placeholder'
        facts = [_read_fact(' '.join(s[:-1]), parsers)
                 for s in cloze_format.split_sentences(q.context)]
        facts = [f for f in facts if f is not None]  # filler sentences have no fact
        assert len(facts) == 8
        matches = [f for f in facts if f[0] == rel and (f[2] == b if ask_agent else f[1] == a)]
        assert len(matches) == 1, (q.context, q.question)
        assert matches[0][1 if ask_agent else 2] == q.answer and matches[0][3] == x
        paraphrased += ' '.join(q.question).replace('@placeholder', q.answer) not in \
            ' '.join(q.context)
    assert 100 < paraphrased < 200  # paraphrase_prob = 0.5


def test_generator_config_is_checked():
    with pytest.raises(ValueError, match='num_distractors'):
        synth.generate_split(synth.SyntheticConfig(num_facts=3, num_distractors=3), 'test')
    with pytest.raises(ValueError, match='num_entities'):
        synth.generate_split(synth.SyntheticConfig(num_entities=3), 'test')


# ------------------------------------------------------------------------------------------------
# Batching and entity permutation.


def test_batches_are_bucketed_padded_at_the_end_and_masked(synthetic):
    train = synthetic[3]
    lengths = train.document_lengths
    rng = np.random.default_rng(0)
    batches = cloze_batches.batch_indices(lengths, 32, rng=rng, chunk_batches=4)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(train)))  # every example exactly once
    assert [len(b) for b in batches].count(32) == len(batches) - 1  # only the last may be short
    for idx in batches:
        batch = cloze_batches.make_batch(train, idx, bucket_width=16, query_bucket_width=8)
        b, t = batch['document'].shape
        assert t % 16 == 0 and batch['query'].shape[1] % 8 == 0 and b == len(idx)
        assert batch['document'].dtype == np.int32 and batch['query'].dtype == np.int32
        assert batch['document_mask'].dtype == np.float32 and batch['answer'].dtype == np.int32
        np.testing.assert_array_equal(batch['document_mask'].sum(1), lengths[idx])
        np.testing.assert_array_equal(batch['query_mask'].sum(1),
                                      [len(train.queries[i]) for i in idx])
        np.testing.assert_array_equal(batch['answer'], train.answers[idx])
        np.testing.assert_array_equal(batch['example_mask'], np.ones(len(idx)))
        for row, i in enumerate(idx):
            n = lengths[i]
            np.testing.assert_array_equal(batch['document'][row, :n], train.documents[i])
            assert not batch['document'][row, n:].any()  # padding id 0, at the end
            mask = batch['document_mask'][row]
            assert mask[:n].all() and not mask[n:].any()
        assert t - lengths[idx].max() < 16  # rounded up to the next multiple, no further
    # The same seed gives the same batches; iterate_batches is batch_indices + make_batch.
    again = list(cloze_batches.iterate_batches(train, 32, rng=np.random.default_rng(0),
                                               chunk_batches=4, bucket_width=16,
                                               query_bucket_width=8))
    assert len(again) == len(batches)
    np.testing.assert_array_equal(again[0]['answer'], train.answers[batches[0]])


def test_validation_batches_are_deterministic_and_can_have_fixed_shapes(synthetic):
    valid = synthetic[4]
    first = list(cloze_batches.iterate_batches(valid, 16))
    second = list(cloze_batches.iterate_batches(valid, 16))
    assert len(first) == 3  # 40 examples: 16 + 16 + 8
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert sorted(np.concatenate([b['answer'] for b in first])) == sorted(valid.answers)

    fixed = list(cloze_batches.iterate_batches(valid, 16, pad_to_batch_size=True,
                                               document_length=128, query_length=16))
    assert {b['document'].shape for b in fixed} == {(16, 128)}
    assert {b['query'].shape for b in fixed} == {(16, 16)}
    last = fixed[-1]
    np.testing.assert_array_equal(last['example_mask'], [1] * 8 + [0] * 8)
    # Filler rows repeat the first example (no empty rows for a masked softmax to divide by 0).
    np.testing.assert_array_equal(last['document'][8:], np.repeat(last['document'][:1], 8, 0))
    assert sum(b['example_mask'].sum() for b in fixed) == len(valid)
    with pytest.raises(ValueError, match='more than the fixed length 8'):
        next(cloze_batches.iterate_batches(valid, 16, document_length=8))

    dropped = list(cloze_batches.iterate_batches(valid, 16, rng=np.random.default_rng(1),
                                                 drop_remainder=True))
    assert [len(b['answer']) for b in dropped] == [16, 16]


def test_permute_entities_is_a_consistent_bijection(synthetic):
    vocab, train = synthetic[2], synthetic[3]
    batch = next(cloze_batches.iterate_batches(train, 64, rng=np.random.default_rng(0)))
    before = {k: v.copy() for k, v in batch.items()}
    out = cloze_batches.permute_entities(batch, np.random.default_rng(5), vocab.entity_ids)
    for key in batch:  # the input is left alone
        np.testing.assert_array_equal(batch[key], before[key])
    is_entity = lambda x: (x >= vocab.entity_ids[0]) & (x <= vocab.entity_ids[-1])
    mapping = {}
    for key in ('document', 'query', 'answer'):
        old, new = batch[key], out[key]
        assert new.dtype == np.int32 and new.shape == old.shape
        # Non-entity tokens (padding, words, @placeholder) untouched; entities stay entities.
        np.testing.assert_array_equal(new[~is_entity(old)], old[~is_entity(old)])
        assert is_entity(new[is_entity(old)]).all()
        for o, n in zip(old[is_entity(old)], new[is_entity(old)]):
            assert mapping.setdefault(int(o), int(n)) == int(n)  # one image per entity everywhere
    assert len(set(mapping.values())) == len(mapping)  # injective
    assert any(o != n for o, n in mapping.items())  # something moved
    # The answer occurs in the document exactly where it did.
    np.testing.assert_array_equal(out['document'] == out['answer'][:, None],
                                  batch['document'] == batch['answer'][:, None])
    np.testing.assert_array_equal(out['document_mask'], batch['document_mask'])
    # Over many draws every entity goes everywhere: a permutation of all K labels.
    rng = np.random.default_rng(0)
    ids = vocab.entity_ids
    images = {int(cloze_batches.permute_entities({'document': ids[None], 'query': ids[None],
                                                  'answer': ids[:1]}, rng, ids)['answer'][0])
              for _ in range(200)}
    assert images == set(ids.tolist())


def test_permute_entities_handles_ids_outside_the_table():
    ids = np.array([2, 3, 4], np.int32)
    batch = {'document': np.array([[0, 2, 3, 4, 9, 1]], np.int32),
             'query': np.array([[7, 4]], np.int32), 'answer': np.array([3], np.int32)}
    out = cloze_batches.permute_entities(batch, np.random.default_rng(0), ids)
    assert out['document'][0, 0] == 0 and out['document'][0, 4] == 9 and out['document'][0, 5] == 1
    assert sorted(out['document'][0, 1:4]) == [2, 3, 4]
    assert out['query'][0, 1] == out['document'][0, 3] and out['answer'][0] == out['document'][0, 2]
