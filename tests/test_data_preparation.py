"""Data preparation under concurrency and kills: first runs started together on a fresh data_dir
(a job array, several GPUs of one machine) all succeed, and a build killed halfway leaves nothing
that a later run takes for a dataset."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from lnrepro.data import builds, cloze_dataset, cloze_format
from lnrepro.data import synthetic_cloze as synth
from tests import test_train

SMALL_CORPUS = "dict(num_train=400, num_validation=40, num_test=20, seed=5)"

# One attentive-reader first run's data step: corpus, TFDS dataset, vocabulary, both splits.
PREPARE_READER_DATA = f"""
import json, sys
from configs import attentive_reader as reader_config
from lnrepro.data import cloze_dataset
from lnrepro.tasks import attentive_reader
config = reader_config.get_config()
config.data_dir = sys.argv[1]
for key, value in {SMALL_CORPUS}.items():
    config.synthetic[key] = value
_, data_dir = attentive_reader.prepare_data(config)
vocab = cloze_dataset.load_vocab(data_dir, config.dataset_config)
sizes = [len(cloze_dataset.load_split(data_dir, split, vocab, config=config.dataset_config))
         for split in ("train", "validation")]
print(json.dumps({{"vocab": len(vocab), "sizes": sizes}}))
"""

PREPARE_TINY_MNIST = """
import sys
from tests import tiny_data
data_dir = sys.argv[1]
config = tiny_data.make_tiny_mnist(data_dir)
print(len(tiny_data.tiny_loader(data_dir, config)(None, "train")[1]))
"""


def _start(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, **test_train.cpu_devices_env(1)}
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=test_train.REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out.strip().splitlines()[-1]


def test_two_first_reader_runs_on_a_fresh_data_dir_both_succeed(tmp_path):
    procs = [_start(PREPARE_READER_DATA, str(tmp_path / "data")) for _ in range(2)]
    outputs = [_finish(proc) for proc in procs]
    assert outputs[0] == outputs[1]
    assert '"sizes": [400, 40]' in outputs[0]


def test_two_first_mnist_builds_on_a_fresh_data_dir_both_succeed(tmp_path):
    procs = [_start(PREPARE_TINY_MNIST, str(tmp_path / "data")) for _ in range(2)]
    assert [_finish(proc) for proc in procs] == ["256", "256"]


def test_corpus_writer_killed_halfway_leaves_no_corpus(tmp_path):
    out_dir = str(tmp_path / "corpus")
    big = "synth.SyntheticConfig(num_train=200_000, num_validation=10, num_test=10)"
    proc = _start(f"from lnrepro.data import synthetic_cloze as synth\n"
                  f"synth.write_corpus({out_dir!r}, {big})")
    deadline = time.time() + 60
    # Kill once the writer has files on disk.
    while not glob.glob(f"{out_dir}.incomplete-*/cnn/questions/training/*.question"):
        assert proc.poll() is None and time.time() < deadline, "the writer never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(out_dir)
    # The next writer removes the leftover and writes the whole corpus.
    small = synth.SyntheticConfig(num_train=30, num_validation=5, num_test=5)
    synth.write_corpus(out_dir, small)
    assert not glob.glob(f"{out_dir}.incomplete-*")
    questions_dir = os.path.join(out_dir, cloze_format.QUESTIONS_SUBDIR)
    assert len(cloze_format.question_files(questions_dir, "train")) == 30


def test_a_killed_tfds_build_is_not_a_dataset_and_is_cleaned_up(tmp_path):
    manual = synth.write_corpus(str(tmp_path / "corpus"),
                                synth.SyntheticConfig(num_train=30, num_validation=5, num_test=5))
    data_dir = str(tmp_path / "tfds")
    builder = cloze_dataset._builder(data_dir, "full")
    config_dir = os.path.dirname(os.fspath(builder.data_path))
    # What a build killed mid-write leaves: TFDS's temporary directory with part of the files.
    leftover = os.path.join(config_dir, "incomplete.ABC123_" + str(builder.version))
    os.makedirs(leftover)
    open(os.path.join(leftover, "cnn_cloze-train.array_record-00000-of-00001"), "w").close()
    assert not builder.is_prepared()
    with pytest.raises(cloze_dataset.DatasetNotFoundError):
        next(cloze_dataset.read_split(data_dir, "train", config="full"))
    cloze_dataset.prepare(data_dir, manual, config="full")
    assert not os.path.exists(leftover)
    assert len(list(cloze_dataset.read_split(data_dir, "train", config="full"))) == 30


def test_build_once_builds_once(tmp_path):
    class FakeBuilder:
        name = "fake"
        data_path = str(tmp_path / "fake" / "cfg" / "1.0.0")

        def is_prepared(self):
            return os.path.exists(self.data_path)

    calls = []
    build = lambda: calls.append(1) or os.makedirs(FakeBuilder.data_path)
    assert builds.build_once(FakeBuilder(), build) == FakeBuilder.data_path
    assert builds.build_once(FakeBuilder(), build) == FakeBuilder.data_path
    assert calls == [1]


def test_the_advice_for_a_damaged_dataset_works_when_followed(tmp_path):
    """dataset_info.json deleted: reading says to prepare the data, and preparing then rebuilds
    it (TFDS alone would keep the damaged directory, and the same error would come back)."""
    from lnrepro.data import mnist
    from tests import tiny_data
    data_dir = str(tmp_path)
    config = tiny_data.make_tiny_mnist(data_dir)
    path = mnist._builder(data_dir, config).data_path
    os.remove(os.path.join(path, "dataset_info.json"))
    with pytest.raises(mnist.DatasetNotFoundError, match="make data"):
        mnist.load_split(data_dir, "train", config=config)
    mnist.prepare(data_dir, config=config,
                  source_path=os.path.join(data_dir, "tiny_mnist.pkl.gz"))
    assert len(mnist.load_split(data_dir, "train", config=config)[1]) == 256
