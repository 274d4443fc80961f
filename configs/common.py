"""What every config file shares: the run settings (data, precision, seed, hosts) and the one
parser for a config file's argument.

A config file's argument is big_vision-style: `--config=configs/pi_mnist.py:norm=batch,
batch_size=4` or `--config=configs/attentive_reader.py:paper,features=128`. Each comma-separated
item is either a preset the file names (e.g. `paper`) or `key=value` (dotted keys reach nested
settings: `synthetic.num_facts=6`); they apply left to right. `--config.KEY=VALUE` flags apply
after it.
"""

import ast
import os
import re

from ml_collections import config_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = object()  # parse_overrides' value for an item that names a preset


def add_run_settings(c: config_dict.ConfigDict) -> None:
    """The settings that say where and how a run computes, not what it trains."""
    # Where `make data` builds the TFDS datasets (experiments/prepare_data.py).
    c.data_dir = os.path.join(REPO, "data", "tfds")
    # float32 matmul precision for training and evaluation (jax.default_matmul_precision).
    # "highest": true float32 products on every backend, so a record means the same on a CPU and
    # a GPU; that is what a reproduction needs. "default" lets a GPU use TF32 (a 10-bit mantissa)
    # and a TPU bfloat16 passes: faster there, but the numbers then depend on the backend (on a
    # CPU both are float32). Recorded in config.json and provenance.json.
    c.matmul_precision = "highest"
    c.seed = 0
    # Several hosts: jax.distributed.initialize() reads the processes from the cluster
    # environment (SLURM's srun, Open MPI, Kubernetes). Without a cluster manager, the drivers'
    # --coordinator_address, --num_processes and --process_id name them instead (README).
    c.distributed = False


def parse_overrides(arg: str) -> list[tuple[str, object]]:
    """'paper,norm=batch,hidden_sizes=(32,32)' -> [('paper', PRESET), ('norm', 'batch'), ...].

    Values are Python literals (4, 1e-3, False, (32, 32), None); anything else is a string. An
    item without '=' is a preset name (value PRESET)."""
    items = []
    for item in _top_level_items(arg):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not re.fullmatch(r"[A-Za-z_][\w.]*", key):
            raise ValueError(f"config argument {item!r} in {arg!r} is neither a preset name nor "
                             "key=value.")
        if not sep:
            items.append((key, PRESET))
            continue
        try:
            items.append((key, ast.literal_eval(value)))
        except (ValueError, SyntaxError):
            items.append((key, value))
    return items


def _top_level_items(arg: str) -> list[str]:
    """`arg` split at the commas outside brackets and quotes: 'a=(1,2,3),b="x,y"' -> 2 items."""
    items, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(arg):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(arg[start:i])
            start = i + 1
    items.append(arg[start:])
    if depth or quote:
        raise ValueError(f"config argument {arg!r} has an unclosed bracket or quote.")
    return items


def apply_argument(c: config_dict.ConfigDict, arg: str | None,
                   presets: dict[str, dict[str, object]] | None = None
                   ) -> config_dict.ConfigDict:
    """`c` with the config file's argument applied: presets and key=value, left to right."""
    presets = presets or {}
    for key, value in parse_overrides(arg) if arg else []:
        if value is PRESET:
            if key not in presets:
                raise ValueError(f"unknown preset {key!r} in {arg!r}; presets: "
                                 f"{sorted(presets)}, or give key=value.")
            for name, preset_value in presets[key].items():
                _set(c, name, preset_value, arg)
        else:
            _set(c, key, value, arg)
    return c


def _set(c: config_dict.ConfigDict, dotted: str, value, arg: str) -> None:
    *parents, key = dotted.split(".")
    node = c
    for name in parents:
        if name not in node or not isinstance(node[name], config_dict.ConfigDict):
            raise ValueError(f"unknown config key {dotted!r} in {arg!r}; keys: {sorted(c)}")
        node = node[name]
    if key not in node:
        raise ValueError(f"unknown config key {dotted!r} in {arg!r}; keys: {sorted(node)}")
    node[key] = value  # ConfigDict checks the type (an int where a float goes is fine)
