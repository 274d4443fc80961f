"""Benchmarks pi-MNIST training throughput: many steps per jitted call vs one step per call.

The 784-1000-1000-10 MLP with Adam (configs/pi_mnist.py), for norm in none | batch | layer, at
batch 128 and batch 4, trained by the trainer's own functions (scripts/benchmark_common.py): the
experiment's Task (`pi_mnist.build_task`: device-resident data, batches gathered in the step),
the run's initial state (`train.create_member_states`) and the chunk step a training round calls
(`train.make_train_chunk`):
    baseline         steps_per_call = 1: one jitted step (one Python call, one index upload)
                     per step; otherwise the trainer's default config
    ours             the trainer's defaults: the default steps_per_call of
                     `pi_mnist.resolve_config` (512 examples per call: 128 steps at batch 4, 4 at
                     batch 128), several steps in one `lax.scan`
    baseline_logged  the baseline logging the global gradient norm of every step
                     (config.log_grad_norm=True, the trainer's default until 2026-11-23)
    ours_logged      ours logging it
The gradient norm is a diagnostic, not part of the update; it costs one more reduction over the
1.8M gradients per step, ~25% of a step at batch 4, so it is off by default.
The data are random MNIST-shaped arrays (float32 [N, 784] in [0, 1), int32 labels), so no dataset
is needed; N is one repetition's examples, so a repetition is one epoch, a round of the task.
Every configuration is compiled first (one warm-up call; compile time is excluded); a repetition
trains a round's chunks (made on the host beforehand) and blocks on the final state and all step
metrics. Examples/s is the median over `--repeats` repetitions (default 7; 3 with --quick),
interleaved round-robin across norms and modes so that machine noise hits every configuration
alike; ratio = ours / baseline from the same run.

Goal: at batch 4, ours >= 1.5x the baseline's examples/s (for every norm), like for like (the
same step). Also printed: the same comparison with the log on, and ours against the logged
baseline (how much faster the trainer's default is than one logged step per call).

Reading the numbers: the ratio is (c + o) / c, with o the fixed cost of one Python call (dispatch,
the index upload: ~0.1-1 ms here) and c the cost of one step. With the tiny --quick model c is
~0.1 ms and chunking wins 2-6x; with the 784-1000-1000-10 MLP, c at batch 4 is several ms (the
matrix-vector-like matmuls and, above all, Adam's elementwise update of 1.8M parameters and
their two moments every step), so one call per step costs only ~10-30% more.

  .venv/bin/python -m scripts.benchmark_train [--repeats=N] [--quick]
"""

from __future__ import annotations

from absl import app, flags

from lnrepro import train
from scripts import benchmark_common

NORMS = ("none", "batch", "layer")
BATCH_SIZES = (128, 4)
# Steps per timed repetition (a multiple of the default steps_per_call at each batch size).
STEPS_PER_REPEAT = {128: 32, 4: 512}
QUICK_STEPS_PER_REPEAT = {128: 8, 4: 256}
GOAL_BATCH = 4
GOAL_RATIO = 1.5
# mode: (steps_per_call, 0 = the default; log_grad_norm, None = the default)
MODES = {"baseline": (1, None), "ours": (0, None), "baseline_logged": (1, True),
         "ours_logged": (0, True)}

flags.adopt_module_key_flags(benchmark_common)  # --repeats, --quick: listed by --help


def benchmark(batch_size: int, hidden_sizes, num_steps: int, repeats: int) -> list[dict]:
    """Rows {batch, norm, steps_per_call, <mode> (examples/s), ratio (ours / baseline),
    logged_ratio, vs_logged_ratio, <mode>_ms_per_step} for one batch size."""
    mesh = train.make_mesh()
    data = benchmark_common.random_mnist(num_steps * batch_size)  # an epoch: one repetition
    runs = {}
    for norm in NORMS:
        for mode, (steps_per_call, log_grad_norm) in MODES.items():
            config = benchmark_common.mlp_config(norm, batch_size, steps_per_call, hidden_sizes,
                                                 log_grad_norm)
            if num_steps % config.steps_per_call:  # a short last chunk would compile again
                raise ValueError(f"{num_steps} steps per repetition is not a multiple of "
                                 f"steps_per_call {config.steps_per_call}.")
            runs[norm, mode] = benchmark_common.TimedRun(
                config, benchmark_common.mlp_task(config, data), mesh)
    seconds = benchmark_common.median_round_seconds(runs, repeats)
    rows = []
    for norm in NORMS:
        per_sec = {mode: num_steps * batch_size / seconds[norm, mode] for mode in MODES}
        row = dict(batch=batch_size, norm=norm,
                   steps_per_call=runs[norm, "ours"].config.steps_per_call,
                   ratio=per_sec["ours"] / per_sec["baseline"],
                   logged_ratio=per_sec["ours_logged"] / per_sec["baseline_logged"],
                   vs_logged_ratio=per_sec["ours"] / per_sec["baseline_logged"], **per_sec)
        for mode in MODES:
            row[f"{mode}_ms_per_step"] = seconds[norm, mode] / num_steps * 1e3
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| batch | norm | steps/call (ours) | baseline examples/s | ours examples/s | "
             "ratio ours/baseline | baseline ms/step | ours ms/step | with the grad-norm log: "
             "ours_logged/baseline_logged | ours/baseline_logged |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['norm']} | {r['steps_per_call']} | "
                     f"{r['baseline']:.1f} | {r['ours']:.1f} | {r['ratio']:.2f}x | "
                     f"{r['baseline_ms_per_step']:.3f} | {r['ours_ms_per_step']:.3f} | "
                     f"{r['logged_ratio']:.2f}x | {r['vs_logged_ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv):
    quick, repeats = benchmark_common.start(argv, repeats=7, quick_repeats=3)
    hidden = benchmark_common.mlp_hidden_sizes(quick)
    steps = QUICK_STEPS_PER_REPEAT if quick else STEPS_PER_REPEAT

    print(f"{benchmark_common.machine()}; {repeats} repeats, medians; MLP "
          f"784-{'-'.join(map(str, hidden))}-10 + Adam; random data, one epoch per repetition"
          f"{' (QUICK: tiny model)' if quick else ''}\n")
    rows = []
    for batch_size in BATCH_SIZES:
        rows += benchmark(batch_size, hidden, steps[batch_size], repeats)
    per_repeat = ", ".join(f"{steps[b]} steps per repetition at batch {b}" for b in BATCH_SIZES)
    print(f"## pi-MNIST training throughput (baseline: 1 step per call; ours: the default "
          f"steps_per_call; {per_repeat})\n")
    print(format_table(rows))

    goal_rows = [r for r in rows if r["batch"] == GOAL_BATCH]
    worst = min(r["ratio"] for r in goal_rows)
    print("\n## Goal\n")
    print(f"- batch {GOAL_BATCH}: ours >= {GOAL_RATIO:g}x baseline (every norm, same step): worst "
          f"{worst:.2f}x -> {'MET' if worst >= GOAL_RATIO else 'NOT MET'}")
    spans = [f"{min(r[k] for r in goal_rows):.2f}x-{max(r[k] for r in goal_rows):.2f}x"
             for k in ("logged_ratio", "vs_logged_ratio")]
    print(f"- with the gradient-norm log on in both: {spans[0]}; ours against the logged "
          f"baseline: {spans[1]}")
    if quick:
        print("(quick mode: a tiny model measures dispatch overhead, not the goal)")


if __name__ == "__main__":
    app.run(main)
