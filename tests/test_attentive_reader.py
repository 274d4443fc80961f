"""The attentive reader task on a tiny synthetic corpus through the real reader and builder."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import attentive_reader as reader_config
from lnrepro import train
from lnrepro.data import cloze_batches, cloze_dataset
from lnrepro.tasks import attentive_reader
from scripts import init_gradients

VARIANTS = {  # name: (cell, bn_everywhere)
    "lstm": ("lstm", False),
    "bnlstm": ("bnlstm", False),
    "bn_everywhere": ("bnlstm", True),
    "lnlstm": ("lnlstm", False),
}


def tiny_config(data_dir, **overrides):
    config = reader_config.get_config()
    config.data_dir = str(data_dir)
    config.synthetic.num_train = 96
    config.synthetic.num_validation = 24
    config.synthetic.num_test = 8
    config.features = 8
    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_updates = 4
    config.eval_every = 2
    config.bucket_width = 128  # every tiny document fits one shape: one compile per variant
    for key, value in overrides.items():
        config[key] = value
    return attentive_reader.resolve_config(config)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cloze")
    attentive_reader.prepare_data(tiny_config(directory))
    return directory


@pytest.fixture(scope="module")
def tasks(data_dir):
    """(config, task) per variant, built once for the module."""
    out = {}
    for variant, (cell, bn_everywhere) in VARIANTS.items():
        config = tiny_config(data_dir, cell=cell, bn_everywhere=bn_everywhere)
        out[variant] = (config, attentive_reader.build_task(config))
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_training_step_per_variant(tasks, variant):
    cell, bn_everywhere = VARIANTS[variant]
    config, task = tasks[variant]
    state = train.create_train_state(jax.random.key(0), task.model, task.init_batch,
                                     train.make_optimizer(config))
    assert (state.batch_stats is not None) == (cell == "bnlstm" or bn_everywhere)
    mesh = train.make_mesh()
    run_chunk = train.make_run_chunk(task, mesh)
    losses = []
    for chunk in task.train_chunks(0):
        state, step_metrics = run_chunk(state, None, train.shard_chunk(chunk, mesh),
                                        jax.random.key(1))
        losses.append(float(step_metrics["loss"][0]))
    assert len(losses) == config.eval_every and all(np.isfinite(losses))
    # Uniform over the vocabulary at first: the NLL starts near log(V).
    vocab_size = task.model.vocab_size
    assert abs(losses[0] - np.log(vocab_size)) < 1.0
    row = task.evaluate(state, jax.jit(train.eval_step))
    assert 0.0 <= row["valid_error"] <= 1.0 and np.isfinite(row["valid_nll"])


def test_init_gradients_takes_the_gradient_of_the_trainers_first_step(tasks):
    """scripts/init_gradients.py: the same initial state, first batch and dropout rng as the
    first step of the trainer's own chunk program, whose logged gradient norm it reproduces."""
    config, task = tasks["lnlstm"]
    gradients = init_gradients.first_step_gradients(config, task)
    mesh = train.make_mesh()
    states, rngs = train.create_member_states([config], [task], mesh)
    _, step_metrics = train.make_train_chunk(task, mesh)(states[0], next(task.train_chunks(0)),
                                                         rngs[0])
    norm = init_gradients.global_norm(gradients)
    np.testing.assert_allclose(norm, float(step_metrics["grad_norm"][0]), rtol=1e-4)
    assert "['document_lstm']['initial_carry_1']" in gradients
    first = init_gradients.first_steps_norms(config, task, steps=2)
    assert len(first) == 2 and first[0] == float(step_metrics["grad_norm"][0])
    table = init_gradients.report(gradients, config.grad_clip_norm, top=3)
    assert table.startswith(f"global gradient norm: {norm:.4g}")
    assert len([line for line in table.splitlines() if line.startswith("| [")]) == 3


def test_init_gradients_finds_the_task_of_a_config_spec():
    assert init_gradients.task_module("configs/attentive_reader.py:hard,cell=lnlstm") \
        is attentive_reader
    with pytest.raises(ValueError, match="no task lnrepro.tasks.mnist; give one of"):
        init_gradients.task_module("configs/mnist.py:norm=layer")


def test_the_initial_gradient_table_has_a_cell_per_corpus_and_variant(data_dir):
    extra = ",".join(f"{k}={v}" for k, v in (
        ("data_dir", data_dir), ("synthetic.num_train", 96), ("synthetic.num_validation", 24),
        ("synthetic.num_test", 8), ("features", 8), ("batch_size", 8), ("bucket_width", 128)))
    table = init_gradients.grid_table({"tiny": ""}, {"LSTM": "cell=lstm", "LN-LSTM": "cell=lnlstm"},
                                      extra)
    header, _, row, _, footnote = table.splitlines()
    assert header == "| corpus, width | median passage (tokens) | LSTM | LN-LSTM |"
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "tiny" and 20 < int(cells[1]) < 80
    assert all(float(c) > 0 for c in cells[2:])
    assert "seed 0, dropout 0.1, gradient clip at norm 10" in footnote


def _variables(task, config):
    return task.model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                           task.init_batch, train=False)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_padding_changes_nothing_for_the_real_tokens(tasks, variant):
    config, task = tasks[variant]
    variables = _variables(task, config)
    batch = {k: jnp.asarray(v) for k, v in task.init_batch.items()}
    # Pad the documents by 32 more steps, with junk token ids under a zero mask.
    extra = 32
    padded = dict(batch)
    padded["document"] = jnp.pad(batch["document"], ((0, 0), (0, extra)), constant_values=7)
    padded["document_mask"] = jnp.pad(batch["document_mask"], ((0, 0), (0, extra)))
    a = task.model.apply(variables, batch, train=False)
    b = task.model.apply(variables, padded, train=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _stream(data, config, vocab, first_update=0):
    """The training stream as the task draws it (tasks/attentive_reader.py, train_chunks)."""
    return cloze_batches.training_batches(
        data, config.batch_size, seed=config.seed, first_update=first_update,
        bucket_width=config.bucket_width,
        entity_ids=vocab.entity_ids if config.permute_entities else None)


def test_training_stream_permutes_entities_and_validation_does_not(data_dir, tasks):
    config = tiny_config(data_dir)
    _, tfds_dir = attentive_reader.corpus_dirs(config)
    vocab = cloze_dataset.load_vocab(tfds_dir, config.dataset_config)
    data = cloze_dataset.load_split(tfds_dir, "train", vocab, config=config.dataset_config)
    plain = tiny_config(data_dir, permute_entities=False)
    permuted = next(_stream(data, config, vocab))
    original = next(_stream(data, plain, vocab))
    entities = set(vocab.entity_ids.tolist())
    assert np.array_equal(permuted["document_mask"], original["document_mask"])
    assert not np.array_equal(permuted["document"], original["document"])
    # Only entity ids move, and the answer moves with its occurrences in the document.
    moved = permuted["document"] != original["document"]
    assert set(original["document"][moved].tolist()) <= entities
    for doc_p, doc_o, ans_p, ans_o in zip(permuted["document"], original["document"],
                                          permuted["label"], original["label"]):
        np.testing.assert_array_equal(doc_p == ans_p, doc_o == ans_o)
    # The stream is reproducible from any update: resuming at update 3 gives update 3's batch.
    stream = _stream(data, config, vocab)
    fourth = [next(stream) for _ in range(4)][3]
    resumed = next(_stream(data, config, vocab, first_update=3))
    for key in fourth:
        np.testing.assert_array_equal(fourth[key], resumed[key])
    # The task trains on this stream: round r starts at update r * eval_every.
    task = tasks["lnlstm"][1]
    for round_index in (0, 1):
        step = next(task.train_chunks(round_index))
        expected = next(_stream(data, config, vocab, round_index * config.eval_every))
        assert sorted(step) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(step[key][0], expected[key])


def test_gain_ablation_switch_sets_every_ln_gain(data_dir):
    config = tiny_config(data_dir, cell="lnlstm", ln_gain_init=0.1)
    task = attentive_reader.build_task(config)
    params = _variables(task, config)["params"]
    scales = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if "norm" in jax.tree_util.keystr(path) and "scale" in jax.tree_util.keystr(path)]
    assert len(scales) == 6  # 3 LNs in each of the two LSTMs
    assert all(np.allclose(s, 0.1) for s in scales)


@pytest.mark.parametrize("key, value, message", [
    ("cell", "gru", "config.cell must be one of"),
    ("corpus", "wiki", "config.corpus must be one of"),
    ("num_updates", 5, "must be a multiple of config.eval_every"),
])
def test_bad_config_values_are_refused(tmp_path, key, value, message):
    config = reader_config.get_config()
    config[key] = value
    with pytest.raises(ValueError, match=message):
        attentive_reader.resolve_config(config)


def test_real_corpus_needs_a_manual_dir_and_says_where(tmp_path):
    config = reader_config.get_config("paper")
    with pytest.raises(ValueError, match="cnn/questions"):
        attentive_reader.resolve_config(config)
    config.manual_dir = str(tmp_path / "nowhere")
    config.data_dir = str(tmp_path)
    with pytest.raises(cloze_dataset.CorpusNotFoundError, match="cnn/questions"):
        attentive_reader.prepare_data(attentive_reader.resolve_config(config))
    assert not os.path.exists(tmp_path / "cnn" / "cnn_cloze" / "top4" / "1.0.0")
