"""Benchmarks one training update of the attentive reader for each recurrent-cell variant.

Variants (Ba et al. 2016, sec. 6.2, Fig. 2): lstm, bnlstm, bnlstm+bn_everywhere, lnlstm, at
    cpu     the CPU profile of configs/attentive_reader.py (features 64, batch 32), documents of
            96 tokens, queries of 16, vocabulary 200
    paper   the paper's size (features 240, batch 64; `configs/attentive_reader.py:paper`),
            documents of 200 tokens, queries of 32, vocabulary 5000
A training update is what the reader's trainer runs per batch: `train.make_run_chunk` on a
`train.Task` (the optimizer and dropout rate of that config: Adam, global-norm clipping at 10;
the state donated) fed a chunk of one step through `train.shard_chunk`. Batches are random
tokens with random lengths (between half and all of the padded length; the masks mark the rest as
padding), one fixed shape per size so each variant compiles once; compiles are excluded (one
warm-up update each). A repetition times a few updates per variant (3 at cpu, 1 at paper;
`--updates`), results blocked; ms/update is the median over `--repeats` repetitions, the variants
interleaved round-robin so that machine noise hits them alike; ratio = ms / the plain LSTM's ms
in the same run.

  PYTHONPATH=. .venv/bin/python -m scripts.benchmark_reader [--repeats N] [--updates N]
      [--sizes cpu,paper] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

from configs import attentive_reader as reader_config
from lnrepro import train
from lnrepro.tasks import attentive_reader
from scripts import benchmark_common

# name -> (cell, bn_everywhere)
VARIANTS = {
    "lstm": ("lstm", False),
    "bnlstm": ("bnlstm", False),
    "bnlstm+bn_everywhere": ("bnlstm", True),
    "lnlstm": ("lnlstm", False),
}
SIZES = {
    "cpu": dict(config_arg=None, features=64, batch=32, document=96, query=16, vocab=200,
                updates=3),
    "paper": dict(config_arg="paper", features=240, batch=64, document=200, query=32,
                  vocab=5000, updates=1),
}
QUICK_SIZES = {
    "quick": dict(config_arg=None, features=8, batch=4, document=12, query=4, vocab=30,
                  updates=2),
}
NUM_BATCHES = 4  # distinct random batches, cycled


def make_config(size: dict, variant: str):
    config = reader_config.get_config(size["config_arg"])
    config.cell, config.bn_everywhere = VARIANTS[variant]
    config.features = size["features"]
    config.batch_size = size["batch"]
    return config


def random_batch(size: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The trainer's batch layout (tasks/attentive_reader.py): tokens with end padding."""
    b, t, q, vocab = size["batch"], size["document"], size["query"], size["vocab"]

    def tokens_and_mask(length: int):
        lengths = rng.integers((length + 1) // 2, length + 1, size=b)
        lengths[0] = length  # the padded length is some example's length, as in bucketing
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
        tokens = rng.integers(2, vocab, size=(b, length)).astype(np.int32) * mask.astype(np.int32)
        return tokens, mask

    document, document_mask = tokens_and_mask(t)
    query, query_mask = tokens_and_mask(q)
    return {"document": document, "document_mask": document_mask, "query": query,
            "query_mask": query_mask, "label": rng.integers(2, vocab, size=b).astype(np.int32),
            "weight": np.ones(b, np.float32)}


def make_task(config, size: dict, init_batch: dict) -> train.Task:
    """The reader's model as the trainer's Task; batches are fed as chunks of one step."""
    return train.Task(
        model=attentive_reader.make_model(config, size["vocab"], size["document"],
                                          size["query"]),
        init_batch=init_batch,
        num_rounds=1,
        train_chunks=lambda round_index: [],
        select_batch=lambda _, batch: batch,
        device_data=None,
        evaluate=lambda state, eval_step: {},
        examples_per_step=config.batch_size,
        round_name="interval",
        stack_members=attentive_reader.stack_padded,
    )


class Runner:
    """One variant at one size, updated the way the reader's trainer updates it."""

    def __init__(self, size: dict, variant: str, batches: list[dict], mesh):
        config = make_config(size, variant)
        self.mesh = mesh
        self.batches = batches
        self.next_batch = 0
        self.task = make_task(config, size, batches[0])
        init_rng, self.train_rng = jax.random.split(jax.random.key(config.seed))
        self.state = train.replicate(
            train.create_train_state(init_rng, self.task.model, self.task.init_batch,
                                     train.make_optimizer(config)), mesh)
        self.run_chunk = train.make_run_chunk(self.task, mesh)

    def _chunk(self) -> dict[str, np.ndarray]:
        batch = self.batches[self.next_batch % len(self.batches)]
        self.next_batch += 1
        return {k: v[None] for k, v in batch.items()}  # one step per jitted call

    def run(self, updates: int) -> float:
        """Seconds per update over `updates` updates, results blocked."""
        chunks = [self._chunk() for _ in range(updates)]
        start = time.perf_counter()
        step_metrics = []
        for chunk in chunks:
            self.state, chunk_metrics = self.run_chunk(
                self.state, None, train.shard_chunk(chunk, self.mesh), self.train_rng)
            step_metrics.append(chunk_metrics)
        jax.block_until_ready((self.state, step_metrics))
        elapsed = time.perf_counter() - start
        if not all(np.all(np.isfinite(np.asarray(m["loss"]))) for m in step_metrics):
            raise FloatingPointError("non-finite loss")
        return elapsed / updates


def benchmark(name: str, size: dict, repeats: int, updates: int) -> list[dict]:
    """Rows {size, variant, ms, ratio} for every variant at one size."""
    mesh = train.make_mesh()
    rng = np.random.default_rng(0)
    batches = [random_batch(size, rng) for _ in range(NUM_BATCHES)]
    runners = {variant: Runner(size, variant, batches, mesh) for variant in VARIANTS}
    for runner in runners.values():
        runner.run(1)  # compile
    times: dict[str, list[float]] = {variant: [] for variant in runners}
    for _ in range(repeats):
        for variant, runner in runners.items():
            times[variant].append(runner.run(updates))
    medians = {variant: statistics.median(t) for variant, t in times.items()}
    return [dict(size=name, variant=variant, ms=sec * 1e3, ratio=sec / medians["lstm"])
            for variant, sec in medians.items()]


def describe(size: dict) -> str:
    return (f"features {size['features']}, batch {size['batch']}, document {size['document']} "
            f"tokens, query {size['query']}, vocabulary {size['vocab']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions per variant (default 7; 3 with --quick)")
    parser.add_argument("--updates", type=int, default=None,
                        help="updates per repetition (default: 3 at cpu, 1 at paper, 2 with "
                             "--quick)")
    parser.add_argument("--sizes", default=None,
                        help=f"comma-separated subset of {','.join(SIZES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a tiny reader: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        benchmark_common.fast_compile()
    repeats = args.repeats or (3 if args.quick else 7)
    if args.quick:
        sizes = QUICK_SIZES
    else:
        names = args.sizes.split(",") if args.sizes else list(SIZES)
        unknown = set(names) - set(SIZES)
        if unknown:
            parser.error(f"unknown sizes {sorted(unknown)}; choose from {list(SIZES)}")
        sizes = {name: SIZES[name] for name in names}

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} devices), "
          f"{os.cpu_count()} cpus, load average {load}; {repeats} repeats, "
          f"medians{' (QUICK: tiny reader)' if args.quick else ''}\n")
    print("## Attentive reader, time per training update (ms; ratio to the plain LSTM)\n")
    for name, size in sizes.items():
        updates = args.updates or size["updates"]
        rows = benchmark(name, size, repeats, updates)
        print(f"### {name}: {describe(size)}; {updates} update(s) per repetition\n")
        print("| size | variant | ms/update | ratio to lstm |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['size']} | {r['variant']} | {r['ms']:.2f} | {r['ratio']:.2f}x |")
        print()
    if args.quick:
        print("(quick mode: a tiny reader measures dispatch overhead, not the variants' cost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
