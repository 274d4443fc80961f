"""Tiny, learnable MNIST-shaped data built through the real `pi_mnist` builder.

Ten class prototypes plus noise, quantized to k/256 like the real pickle, so a few steps of
training visibly lower the loss. Importable from subprocess tests (sharding, the CLI).
"""

import gzip
import hashlib
import os
import pickle

import numpy as np

from lnrepro.data import mnist

TINY_SIZES = {"train_part": 224, "valid_part": 64, "test": 64, "validation": 32}


def _examples(n: int, rng: np.random.Generator, prototypes: np.ndarray):
    labels = rng.integers(0, mnist.NUM_CLASSES, size=n)
    noise = rng.normal(0.0, 0.15, size=(n, mnist.NUM_FEATURES))
    k = np.clip(np.round((prototypes[labels] + noise) * 256), 0, 255)
    return (k / 256).astype(np.float32), labels.astype(np.int64)


def make_tiny_mnist(data_dir: str, seed: int = 0) -> mnist.PiMnistConfig:
    """Builds the tiny dataset into data_dir (once) and returns the builder config to read it."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0.0, 1.0, size=(mnist.NUM_CLASSES, mnist.NUM_FEATURES))
    parts = (_examples(TINY_SIZES["train_part"], rng, prototypes),
             _examples(TINY_SIZES["valid_part"], rng, prototypes),
             _examples(TINY_SIZES["test"], rng, prototypes))
    pkl_gz = gzip.compress(pickle.dumps(parts, protocol=3), mtime=0)
    source = os.path.join(data_dir, "tiny_mnist.pkl.gz")
    os.makedirs(data_dir, exist_ok=True)
    with open(source, "wb") as f:
        f.write(pkl_gz)
    config = mnist.PiMnistConfig(
        name="tiny", sha256=hashlib.sha256(pkl_gz).hexdigest(),
        num_train=TINY_SIZES["train_part"] + TINY_SIZES["valid_part"] - TINY_SIZES["validation"],
        num_validation=TINY_SIZES["validation"], num_test=TINY_SIZES["test"])
    mnist.prepare(data_dir, config=config, source_path=source)
    return config


def tiny_loader(data_dir: str, config: mnist.PiMnistConfig):
    """A `load_split(data_dir, split)` that reads the tiny dataset."""
    return lambda _, split: mnist.load_split(data_dir, split, config=config)
