"""Benchmarks one training update of the attentive reader for each recurrent-cell variant.

Variants (Ba et al. 2016, sec. 6.2, Fig. 2): lstm, bnlstm, bnlstm+bn_everywhere, lnlstm, at
    cpu     the CPU profile of configs/attentive_reader.py (features 64, batch 32), documents of
            96 tokens, queries of 16, vocabulary 200
    paper   the paper's size (features 240, batch 64; `configs/attentive_reader.py:paper`),
            documents of 200 tokens, queries of 32, vocabulary 5000
A training update is what the reader's trainer runs per batch, built by the trainer's own
functions (scripts/benchmark_common.py): the reader's model and member stacking in a
`train.Task`, the run's initial state (`train.create_member_states`: that config's optimizer,
Adam with global-norm clipping at 10, and dropout rate) and the chunk step a training round calls
(`train.make_train_chunk`: a chunk of one update put on the devices, the state donated).
Batches are random tokens with random lengths (between half and all of the padded length; the
masks mark the rest as padding), one fixed shape per size so each variant compiles once; compiles
are excluded (one warm-up update each). A repetition times a few updates per variant (3 at cpu,
1 at paper; `--updates`), results blocked; ms/update is the median over `--repeats` repetitions
(default 7; 3 with --quick), the variants interleaved round-robin so that machine noise hits them
alike; ratio = ms / the plain LSTM's ms in the same run.

  .venv/bin/python -m scripts.benchmark_reader [--repeats=N] [--updates=N] [--sizes=cpu,paper]
      [--quick]
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from lnrepro import train
from scripts import benchmark_common

# name -> (cell, bn_everywhere)
VARIANTS = {
    "lstm": ("lstm", False),
    "bnlstm": ("bnlstm", False),
    "bnlstm+bn_everywhere": ("bnlstm", True),
    "lnlstm": ("lnlstm", False),
}
SIZES = benchmark_common.READER_SIZES
NUM_BATCHES = 4  # distinct random batches, cycled

flags.adopt_module_key_flags(benchmark_common)  # --repeats, --quick: listed by --help
_UPDATES = flags.DEFINE_integer("updates", None, "Updates per repetition (default: 3 at cpu, 1 "
                                "at paper, 2 with --quick).", lower_bound=1)
_SIZES = flags.DEFINE_list("sizes", list(SIZES), f"Which sizes: a comma-separated subset of "
                           f"{','.join(SIZES)} (ignored with --quick).")
flags.register_validator("sizes", lambda names: set(names) <= set(SIZES),
                         f"--sizes takes a comma-separated subset of {','.join(SIZES)}.")


def benchmark(name: str, size: dict, repeats: int, updates: int) -> list[dict]:
    """Rows {size, variant, ms, ratio} for every variant at one size."""
    mesh = train.make_mesh()
    rng = np.random.default_rng(0)
    batches = [benchmark_common.random_reader_batch(size, rng) for _ in range(NUM_BATCHES)]
    runs = {}
    for variant, (cell, bn_everywhere) in VARIANTS.items():
        config = benchmark_common.reader_config(size, cell, bn_everywhere)
        runs[variant] = benchmark_common.TimedRun(
            config, benchmark_common.reader_task(config, size, batches, updates), mesh)
    seconds = benchmark_common.median_round_seconds(runs, repeats)
    return [dict(size=name, variant=variant, ms=sec / updates * 1e3,
                 ratio=sec / seconds["lstm"]) for variant, sec in seconds.items()]


def describe(size: dict) -> str:
    return (f"features {size['features']}, batch {size['batch']}, document {size['document']} "
            f"tokens, query {size['query']}, vocabulary {size['vocab']}")


def main(argv):
    quick, repeats = benchmark_common.start(argv, repeats=7, quick_repeats=3)
    sizes = (benchmark_common.READER_QUICK_SIZES if quick
             else {name: SIZES[name] for name in _SIZES.value})

    print(f"{benchmark_common.machine()}; {repeats} repeats, "
          f"medians{' (QUICK: tiny reader)' if quick else ''}\n")
    print("## Attentive reader, time per training update (ms; ratio to the plain LSTM)\n")
    for name, size in sizes.items():
        updates = _UPDATES.value or size["updates"]
        rows = benchmark(name, size, repeats, updates)
        print(f"### {name}: {describe(size)}; {updates} update(s) per repetition\n")
        print("| size | variant | ms/update | ratio to lstm |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['size']} | {r['variant']} | {r['ms']:.2f} | {r['ratio']:.2f}x |")
        print()
    if quick:
        print("(quick mode: a tiny reader measures dispatch overhead, not the variants' cost)")


if __name__ == "__main__":
    app.run(main)
