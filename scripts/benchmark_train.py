"""Benchmarks pi-MNIST training throughput: many steps per jitted call vs one step per call.

The 784-1000-1000-10 MLP with Adam (configs/pi_mnist.py), for norm in none | batch | layer, at
batch 128 and batch 4, trained through the real trainer pieces (`train.make_run_chunk`,
`train.shard_chunk`, `pi_mnist.select_batch` on device-resident data, `pi_mnist.epoch_index_chunks`)
in the same loop as `train.train_and_evaluate`:
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
is needed. Every compiled shape is warmed up first (compile time is excluded); a repetition runs a
fixed number of steps and blocks on the final state and all step metrics. Examples/s is the median
over `--repeats` repetitions, interleaved round-robin across norms and modes so that machine noise
hits every configuration alike; ratio = ours / baseline from the same run.

Goal: at batch 4, ours >= 1.5x the baseline's examples/s (for every norm), like for like (the
same step). Also printed: the same comparison with the log on, and ours against the logged
baseline (how much faster the trainer's default is than one logged step per call).

Reading the numbers: the ratio is (c + o) / c, with o the fixed cost of one Python call (dispatch,
the index upload: ~0.1-1 ms here) and c the cost of one step. With the tiny --quick model c is
~0.1 ms and chunking wins 2-6x; with the 784-1000-1000-10 MLP, c at batch 4 is several ms (the
matrix-vector-like matmuls and, above all, Adam's elementwise update of 1.8M parameters and
their two moments every step), so one call per step costs only ~10-30% more.

  PYTHONPATH=. .venv/bin/python -m scripts.benchmark_train [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import pi_mnist as pi_mnist_config
from lnrepro import train
from lnrepro.tasks import pi_mnist
from scripts import benchmark_common

NORMS = ("none", "batch", "layer")
BATCH_SIZES = (128, 4)
NUM_EXAMPLES = 4096  # random device-resident "training set"
# Steps per timed repetition (a multiple of the default steps_per_call at each batch size).
STEPS_PER_REPEAT = {128: 32, 4: 512}
QUICK_HIDDEN = (16, 16)
QUICK_STEPS_PER_REPEAT = {128: 8, 4: 256}
GOAL_BATCH = 4
GOAL_RATIO = 1.5
# mode: (steps_per_call, 0 = the default; log_grad_norm, None = the default)
MODES = {"baseline": (1, None), "ours": (0, None), "baseline_logged": (1, True),
         "ours_logged": (0, True)}


def make_config(norm: str, batch_size: int, steps_per_call: int, hidden_sizes,
                log_grad_norm: bool | None = None):
    config = pi_mnist_config.get_config()
    if log_grad_norm is not None:  # None: the config's default
        config.log_grad_norm = log_grad_norm
    config.norm = norm
    config.batch_size = batch_size
    config.steps_per_call = steps_per_call  # 0: the default for this batch size
    config.hidden_sizes = tuple(hidden_sizes)
    return pi_mnist.resolve_config(config)


def random_data(num_examples: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.random((num_examples, 784), dtype=np.float32),
            "label": rng.integers(0, 10, size=num_examples).astype(np.int32)}


class Runner:
    """One (norm, batch size, steps_per_call) configuration, driven like the trainer drives it."""

    def __init__(self, config, data, mesh, num_steps: int, variables=None):
        self.config = config
        self.mesh = mesh
        self.batch_size = config.batch_size
        self.steps_per_call = config.steps_per_call
        if num_steps % self.steps_per_call:
            raise ValueError(f"{num_steps} steps per repetition is not a multiple of "
                             f"steps_per_call {self.steps_per_call}.")
        self.num_steps = num_steps
        num_examples = len(data["label"])
        task = train.Task(
            model=pi_mnist.make_model(config),
            init_batch={k: v[:config.batch_size] for k, v in data.items()},
            num_rounds=1,
            train_chunks=lambda epoch: pi_mnist.epoch_index_chunks(
                num_examples, config.batch_size, config.steps_per_call, config.seed, epoch),
            select_batch=pi_mnist.select_batch,
            device_data=data,
            evaluate=lambda state, eval_step: {},
            examples_per_step=config.batch_size,
            round_name="epoch",
        )
        self.task = task
        init_rng, self.train_rng = jax.random.split(jax.random.key(config.seed))
        if variables is None:
            state = train.create_train_state(init_rng, task.model, task.init_batch,
                                             train.make_optimizer(config))
        else:  # shared initial variables (copied: the state's buffers are donated)
            variables = jax.tree.map(jnp.copy, variables)
            state = train.TrainState.create(
                apply_fn=task.model.apply, params=variables["params"],
                tx=train.make_optimizer(config), batch_stats=variables.get("batch_stats"))
        self.state = train.replicate(state, mesh)
        self.device_data = train.replicate(task.device_data, mesh)
        self.run_chunk = train.make_run_chunk(task, mesh, config.log_grad_norm)
        self.epoch = 0

    def _host_chunks(self) -> list[np.ndarray]:
        """The next `num_steps` steps of index chunks (host arrays, made outside the timing)."""
        chunks: list[np.ndarray] = []
        steps = 0
        while steps < self.num_steps:
            for chunk in self.task.train_chunks(self.epoch):
                if steps == self.num_steps:
                    break
                if len(chunk) != self.steps_per_call:
                    continue  # an epoch's short last chunk: another compiled shape, skipped
                chunks.append(chunk)
                steps += len(chunk)
            self.epoch += 1
        return chunks

    def run(self) -> float:
        """Seconds to train num_steps steps, results blocked; the trainer's inner loop."""
        chunks = self._host_chunks()
        start = time.perf_counter()
        step_metrics = []
        for chunk in chunks:
            self.state, chunk_metrics = self.run_chunk(
                self.state, self.device_data, train.shard_chunk(chunk, self.mesh), self.train_rng)
            step_metrics.append(chunk_metrics)
        jax.block_until_ready((self.state, step_metrics))
        elapsed = time.perf_counter() - start
        losses = np.concatenate([np.asarray(m["loss"]) for m in step_metrics])
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"non-finite loss with norm={self.config.norm}, "
                                     f"batch {self.batch_size}")
        return elapsed

    def warm_up(self) -> None:
        """Compiles the chunk shape (one call); the timed runs reuse the executable."""
        chunk = self._host_chunks()[0]
        self.state, m = self.run_chunk(self.state, self.device_data,
                                       train.shard_chunk(chunk, self.mesh), self.train_rng)
        jax.block_until_ready((self.state, m))


def initial_variables(norm: str, hidden_sizes, data) -> dict:
    """The model's initial variables as `train.create_train_state` draws them. They depend on
    neither the batch size nor steps_per_call, so every configuration of a norm shares them (one
    `model.init` compile per norm instead of one per configuration)."""
    config = make_config(norm, GOAL_BATCH, 0, hidden_sizes)
    init_rng, _ = jax.random.split(jax.random.key(config.seed))
    init = jax.jit(functools.partial(pi_mnist.make_model(config).init, train=False))
    return init({"params": init_rng, "dropout": init_rng},
                {k: v[:config.batch_size] for k, v in data.items()})


def benchmark(batch_size: int, hidden_sizes, num_steps: int, repeats: int, data,
              variables: dict[str, dict]) -> list[dict]:
    """Rows {batch, norm, steps_per_call, <mode> (examples/s), ratio (ours / baseline),
    logged_ratio, vs_logged_ratio, <mode>_ms_per_step} for one batch size;
    variables: norm -> initial variables."""
    mesh = train.make_mesh()
    runners: dict[tuple[str, str], Runner] = {}
    for norm in NORMS:
        for mode in MODES:
            steps_per_call, log_grad_norm = MODES[mode]
            config = make_config(norm, batch_size, steps_per_call, hidden_sizes, log_grad_norm)
            runners[norm, mode] = Runner(config, data, mesh, num_steps, variables[norm])
    for runner in runners.values():
        runner.warm_up()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    for _ in range(repeats):
        for key, runner in runners.items():
            times[key].append(runner.run())
    examples = num_steps * batch_size
    rows = []
    for norm in NORMS:
        per_sec = {mode: examples / statistics.median(times[norm, mode]) for mode in MODES}
        row = dict(batch=batch_size, norm=norm,
                   steps_per_call=runners[norm, "ours"].steps_per_call,
                   ratio=per_sec["ours"] / per_sec["baseline"],
                   logged_ratio=per_sec["ours_logged"] / per_sec["baseline_logged"],
                   vs_logged_ratio=per_sec["ours"] / per_sec["baseline_logged"], **per_sec)
        for mode in MODES:
            row[f"{mode}_ms_per_step"] = statistics.median(times[norm, mode]) / num_steps * 1e3
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions per configuration (default 7; 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"hidden sizes {QUICK_HIDDEN}, few steps: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        benchmark_common.fast_compile()
    repeats = args.repeats or (3 if args.quick else 7)
    hidden = QUICK_HIDDEN if args.quick else tuple(pi_mnist_config.get_config().hidden_sizes)
    steps = QUICK_STEPS_PER_REPEAT if args.quick else STEPS_PER_REPEAT

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} devices), "
          f"{os.cpu_count()} cpus, load average {load}; {repeats} repeats, medians; "
          f"MLP 784-{'-'.join(map(str, hidden))}-10 + Adam; random data, {NUM_EXAMPLES} examples"
          f"{' (QUICK: tiny model)' if args.quick else ''}\n")
    data = random_data(NUM_EXAMPLES)
    variables = {norm: initial_variables(norm, hidden, data) for norm in NORMS}
    rows = []
    for batch_size in BATCH_SIZES:
        rows += benchmark(batch_size, hidden, steps[batch_size], repeats, data, variables)
    per_repeat = ", ".join(f"{steps[b]} steps per repetition at batch {b}" for b in BATCH_SIZES)
    print(f"## pi-MNIST training throughput (baseline: 1 step per call; ours: the default "
          f"steps_per_call; {per_repeat})\n")
    print(format_table(rows))

    goal_rows = [r for r in rows if r["batch"] == GOAL_BATCH]
    worst = min(r["ratio"] for r in goal_rows)
    met = worst >= GOAL_RATIO
    print("\n## Goal\n")
    print(f"- batch {GOAL_BATCH}: ours >= {GOAL_RATIO:g}x baseline (every norm, same step): worst "
          f"{worst:.2f}x -> {'MET' if met else 'NOT MET'}")
    spans = [f"{min(r[k] for r in goal_rows):.2f}x-{max(r[k] for r in goal_rows):.2f}x"
             for k in ("logged_ratio", "vs_logged_ratio")]
    print(f"- with the gradient-norm log on in both: {spans[0]}; ours against the logged "
          f"baseline: {spans[1]}")
    if args.quick:
        print("(quick mode: a tiny model measures dispatch overhead, not the goal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
