"""Benchmarks one training process on every core against one pinned process per core, on the CPU.

One run of the pi-MNIST MLP at batch 4 leaves a CPU's cores partly idle: its matmuls are
matrix-vector-like, and XLA splits them over the cores' threads for little gain. A sweep split
into one shard per core (`--shard=I/N`), each process pinned to its core with single-threaded
matmuls, may train more runs per hour, though each of its runs takes longer. This measures both
ways for the MLP of configs/pi_mnist.py (784-1000-1000-10, LN, Adam) at batch 4 and 128, as
examples/s summed over the processes:
    shared    one process on every core this script may use, XLA's defaults: one run at a time
    per core  one process per core, each pinned to it (os.sched_setaffinity) with
              XLA_FLAGS=--xla_cpu_multi_thread_eigen=false, all training at once
ratio = per core / shared, from the same run. Also printed: one run's examples/s in each way (a
run's wall time is its examples over that).

Each process is this script's `--worker`, on the CPU backend: it builds the run as
scripts/benchmark_train.py does (scripts/benchmark_common.py: the experiment's Task on random
data, the trainer's initial state and chunk step), compiles, reports ready, then trains one round
each time it is told to go. Every worker is started and compiled before anything is timed. The
ways take turns round by round (the shared process alone, then every per-core process at once),
so that machine noise hits both alike; medians over --repeats rounds (default 5).

Goal: per core >= 1.1x shared at batch 4, where a CPU sweep spends its hours. Needs Linux
(os.sched_setaffinity) and at least 2 usable cores.

  .venv/bin/python -m scripts.benchmark_processes [--repeats=N] [--quick]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

from configs import pi_mnist as pi_mnist_config
from lnrepro import train
from scripts import benchmark_common

BATCH_SIZES = (4, 128)
# Steps per timed round: seconds of work, a multiple of the default steps_per_call (128 at
# batch 4, 4 at batch 128).
STEPS_PER_ROUND = {4: 2048, 128: 256}
QUICK_STEPS_PER_ROUND = {4: 256, 128: 8}
NORM = "layer"
GOAL_BATCH = 4
GOAL_RATIO = 1.1
# Eigen's matmuls on one thread: a pinned process's thread pool would otherwise share one core.
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.adopt_module_key_flags(benchmark_common)  # --repeats, --quick: listed by --help
_WORKER = flags.DEFINE_bool("worker", False, "Internal: run as one timed process, driven "
                            "through stdin and stdout by the benchmark.")
_WORKER_BATCH_SIZE = flags.DEFINE_integer("worker_batch_size", 4, "Internal: the worker's "
                                          "batch size.", lower_bound=1)
_WORKER_CPU = flags.DEFINE_integer("worker_cpu", -1, "Internal: the core the worker pins itself "
                                   "to (-1: every core it may use).")


def hidden_sizes(quick: bool) -> tuple[int, ...]:
    return (benchmark_common.MLP_QUICK_HIDDEN if quick
            else tuple(pi_mnist_config.get_config().hidden_sizes))


def worker(batch_size: int, cpu: int, quick: bool) -> None:
    """One timed run: prints 'ready' once compiled, then the examples/s of one round per 'go'
    line on stdin, until stdin closes."""
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})  # before JAX makes its thread pools
    hidden = hidden_sizes(quick)
    steps = (QUICK_STEPS_PER_ROUND if quick else STEPS_PER_ROUND)[batch_size]
    config = benchmark_common.mlp_config(NORM, batch_size, 0, hidden)
    if steps % config.steps_per_call:  # a short last chunk would compile again
        raise ValueError(f"{steps} steps per round is not a multiple of steps_per_call "
                         f"{config.steps_per_call}.")
    data = benchmark_common.random_mnist(steps * batch_size, seed=max(cpu, 0))
    run = benchmark_common.TimedRun(config, benchmark_common.mlp_task(config, data),
                                    train.make_mesh())
    run.warm_up()
    print("ready", flush=True)
    for round_index, line in enumerate(sys.stdin):
        if line.strip() != "go":
            raise ValueError(f"worker: expected 'go', got {line!r}")
        print(steps * batch_size / run.train_round(round_index), flush=True)


class Worker:
    """A `--worker` subprocess: pinned to `cpu` with single-threaded matmuls, or on every core
    with XLA's defaults when cpu is None."""

    def __init__(self, batch_size: int, quick: bool, cpu: int | None = None):
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        xla_flags = [env.get("XLA_FLAGS", "")]
        if cpu is not None:
            xla_flags.append(SINGLE_THREAD_FLAGS)
        if quick:
            xla_flags.append(benchmark_common.FAST_COMPILE_FLAGS)
        env["XLA_FLAGS"] = " ".join(f for f in xla_flags if f)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "scripts.benchmark_processes", "--worker",
                   f"--worker_batch_size={batch_size}", f"--worker_cpu={-1 if cpu is None else cpu}",
                   *(["--quick"] if quick else [])]
        self.name = "shared" if cpu is None else f"core {cpu}"
        self.stderr = tempfile.TemporaryFile(mode="w+")  # read only if the worker fails
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, cwd=REPO, env=env)

    def _read_line(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            tail = "".join(self.stderr.readlines()[-20:])
            raise RuntimeError(f"benchmark worker ({self.name}) exited with status "
                               f"{self.process.returncode}:\n{tail}")
        return line.strip()

    def wait_ready(self) -> None:
        line = self._read_line()
        if line != "ready":
            raise RuntimeError(f"benchmark worker ({self.name}) said {line!r}, not 'ready'")

    def go(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def examples_per_sec(self) -> float:
        return float(self._read_line())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.stderr.close()


def measure(batch_size: int, cores: list[int], repeats: int, quick: bool) -> dict:
    """{batch, shared, per_core (summed over the cores), per_core_run (one of them), ratio}: in
    examples/s, medians over `repeats` rounds of each way."""
    shared = Worker(batch_size, quick)
    per_core = [Worker(batch_size, quick, cpu) for cpu in cores]
    workers = [shared, *per_core]
    try:
        for w in workers:
            w.wait_ready()
        shared_rates, summed, per_run = [], [], []
        for _ in range(repeats):
            shared.go()
            shared_rates.append(shared.examples_per_sec())
            for w in per_core:  # all at once, as the shards of a sweep run
                w.go()
            rates = [w.examples_per_sec() for w in per_core]
            summed.append(sum(rates))
            per_run += rates
    finally:
        for w in workers:
            w.close()
    row = dict(batch=batch_size, shared=statistics.median(shared_rates),
               per_core=statistics.median(summed), per_core_run=statistics.median(per_run))
    row["ratio"] = row["per_core"] / row["shared"]
    return row


def format_table(rows: list[dict], num_cores: int) -> str:
    lines = [f"| batch | shared examples/s (one run) | per core examples/s (sum of {num_cores}) | "
             "ratio per core/shared | per core: one run's examples/s |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['shared']:.0f} | {r['per_core']:.0f} | "
                     f"{r['ratio']:.2f}x | {r['per_core_run']:.0f} |")
    return "\n".join(lines)


def main(argv):
    quick, repeats = benchmark_common.start(argv, repeats=5, quick_repeats=1)
    if _WORKER.value:
        worker(_WORKER_BATCH_SIZE.value, _WORKER_CPU.value, quick)
        return
    if not hasattr(os, "sched_setaffinity"):
        raise app.UsageError("benchmark_processes pins processes to cores with "
                             "os.sched_setaffinity, which this OS lacks (Linux has it).")
    cores = sorted(os.sched_getaffinity(0))
    steps = QUICK_STEPS_PER_ROUND if quick else STEPS_PER_ROUND
    print(f"{benchmark_common.machine()}; {len(cores)} usable cores; {repeats} repeats, medians; "
          f"MLP 784-{'-'.join(map(str, hidden_sizes(quick)))}-10 + Adam, "
          f"{NORM} norm, on the CPU backend; "
          + ", ".join(f"{steps[b]} steps per round at batch {b}" for b in BATCH_SIZES)
          + (" (QUICK: tiny model)" if quick else "") + "\n")
    if len(cores) < 2:
        print("One usable core: nothing to compare.")
        return
    rows = [measure(b, cores, repeats, quick) for b in BATCH_SIZES]
    print("## Training throughput: one process on every core (shared) vs one pinned process per "
          "core (per core)\n")
    print(format_table(rows, len(cores)))
    ratio = next(r["ratio"] for r in rows if r["batch"] == GOAL_BATCH)
    print("\n## Goal\n")
    print(f"- batch {GOAL_BATCH}: per core >= {GOAL_RATIO:g}x shared: {ratio:.2f}x -> "
          f"{'MET' if ratio >= GOAL_RATIO else 'NOT MET'}")
    if quick:
        print("(quick mode: a tiny model measures dispatch overhead, not the goal)")


if __name__ == "__main__":
    app.run(main)
