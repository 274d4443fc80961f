"""Benchmarks one training process on every core against one pinned process per core, on the CPU.

At batch 4 the pi-MNIST MLP's steps are small, and one run spread over the cores' threads gets
less than a full core's worth out of each added core. A sweep split into
one shard per core (`--shard=I/N`), each process pinned to its core with single-threaded matmuls,
may train more runs per hour, though each of its runs is slower. This measures both ways for the
MLP of configs/pi_mnist.py (784-1000-1000-10, LN, Adam) at batch 4 and 128, as examples/s summed
over the processes:
    shared    one process on every core this script may use, with the environment's XLA flags:
              one run of a sweep at a time
    per core  one process per core, as the README's recipe runs the shards: `taskset -c I` and
              XLA_FLAGS=--xla_cpu_multi_thread_eigen=false added; all training at once
ratio = per core / shared, from the same run (the median of each way, and each round's ratio).
Also printed: one run's examples/s in each way (a run's wall time is its examples over that).

Each process is this script's `--worker`, on the CPU backend: it builds the run as
scripts/benchmark_train.py does (scripts/benchmark_common.py: the experiment's Task on random
data, the trainer's initial state and chunk step), compiles, reports ready with the cores it may
use and its XLA flags (checked: a worker not pinned as it should be stops the benchmark), then
trains one round each time it is told to go. Every worker is started and compiled before
anything is timed. The ways take turns round by round (the shared process alone, then every
per-core process at once), so that machine noise hits both alike; medians over --repeats rounds
(default 5). Run it on an otherwise idle machine: a pinned process cannot move off a busy core.

Goal: per core >= 1.1x shared at batch 4, where a CPU sweep spends its hours. Needs Linux's
taskset and at least 2 usable cores (otherwise it says so and measures nothing).

  .venv/bin/python -m scripts.benchmark_processes [--repeats=N] [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import jax
from absl import app, flags

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
# Eigen's matmuls on one thread: the recipe's flag. (Pinning alone already sizes XLA's own
# thread pool to the one core.)
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.adopt_module_key_flags(benchmark_common)  # --repeats, --quick: listed by --help
_WORKER = flags.DEFINE_bool("worker", False, "Internal: run as one timed process, driven "
                            "through stdin and stdout by the benchmark.")
_WORKER_BATCH_SIZE = flags.DEFINE_integer("worker_batch_size", 4, "Internal: the worker's "
                                          "batch size.", lower_bound=1)


def worker(batch_size: int, quick: bool) -> None:
    """One timed run: once compiled, prints 'ready' with the cores it may use and its XLA flags
    (JSON), then the examples/s of one round per 'go' line on stdin, until stdin closes."""
    steps = (QUICK_STEPS_PER_ROUND if quick else STEPS_PER_ROUND)[batch_size]
    hidden = benchmark_common.mlp_hidden_sizes(quick)
    config = benchmark_common.mlp_config(NORM, batch_size, 0, hidden)
    if steps % config.steps_per_call:  # a short last chunk would compile again
        raise ValueError(f"{steps} steps per round is not a multiple of steps_per_call "
                         f"{config.steps_per_call}.")
    data = benchmark_common.random_mnist(steps * batch_size)
    run = benchmark_common.TimedRun(config, benchmark_common.mlp_task(config, data),
                                    train.make_mesh())
    run.warm_up()
    where = {"cpus": sorted(os.sched_getaffinity(0)), "xla_flags": os.environ.get("XLA_FLAGS")}
    print("ready", json.dumps(where), flush=True)
    for round_index, line in enumerate(sys.stdin):
        if line.strip() != "go":
            raise ValueError(f"worker: expected 'go', got {line!r}")
        print(steps * batch_size / run.train_round(round_index), flush=True)


class Worker:
    """A `--worker` subprocess on the CPU backend: on every core with the environment's XLA
    flags when cpu is None, else as the README's recipe runs a shard, `taskset -c CPU` with
    SINGLE_THREAD_FLAGS added."""

    def __init__(self, batch_size: int, quick: bool, cpu: int | None = None):
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "scripts.benchmark_processes", "--worker",
                   f"--worker_batch_size={batch_size}", *(["--quick"] if quick else [])]
        if cpu is not None:
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {SINGLE_THREAD_FLAGS}".strip()
            command = ["taskset", "-c", str(cpu), *command]
        self.name, self.cpu = ("shared" if cpu is None else f"core {cpu}"), cpu
        self.stderr = tempfile.TemporaryFile(mode="w+")  # read only if the worker fails
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, cwd=REPO, env=env)

    def _failed(self) -> RuntimeError:
        self.process.wait()
        self.stderr.seek(0)
        tail = "".join(self.stderr.readlines()[-20:])
        return RuntimeError(f"benchmark worker ({self.name}) exited with status "
                            f"{self.process.returncode}:\n{tail}")

    def _read_line(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise self._failed()
        return line.strip()

    def wait_ready(self, cores: list[int]) -> None:
        """Waits until compiled; raises unless the worker runs where it should: pinned to its
        core with single-threaded matmuls, or on every one of `cores`."""
        word, _, where = self._read_line().partition(" ")
        if word != "ready":
            raise RuntimeError(f"benchmark worker ({self.name}) said {word!r}, not 'ready'")
        where = json.loads(where)
        pinned = self.cpu is not None
        if (where["cpus"] != ([self.cpu] if pinned else cores)
                or pinned != (SINGLE_THREAD_FLAGS in (where["xla_flags"] or ""))):
            raise RuntimeError(f"benchmark worker ({self.name}) runs on cores {where['cpus']} "
                               f"with XLA_FLAGS={where['xla_flags']!r}")

    def go(self) -> None:
        try:
            self.process.stdin.write("go\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self._failed() from None

    def examples_per_sec(self) -> float:
        return float(self._read_line())

    def close(self) -> None:
        """Ends the worker (at once if it is still busy) and releases its pipes."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # a waiting worker exits at the end of stdin
                self.process.wait(timeout=5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.stderr):
            try:
                pipe.close()
            except BrokenPipeError:
                pass


def measure(batch_size: int, cores: list[int], repeats: int, quick: bool) -> dict:
    """{batch, shared, per_core (summed over the cores), per_core_run (one of them), ratio,
    ratios (each round's)}: in examples/s, medians over `repeats` rounds of each way. A core may
    be listed twice (a smoke test on one core)."""
    shared = Worker(batch_size, quick)
    per_core = [Worker(batch_size, quick, cpu) for cpu in cores]
    workers = [shared, *per_core]
    try:
        for w in workers:
            w.wait_ready(sorted(set(cores)))
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
               per_core=statistics.median(summed), per_core_run=statistics.median(per_run),
               ratios=[s / one for s, one in zip(summed, shared_rates)])
    row["ratio"] = row["per_core"] / row["shared"]
    return row


def format_table(rows: list[dict], num_cores: int) -> str:
    lines = [f"| batch | shared examples/s (one run) | per core examples/s (sum of {num_cores}) | "
             "ratio per core/shared | each round's ratio | per core: one run's examples/s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['shared']:.0f} | {r['per_core']:.0f} | "
                     f"{r['ratio']:.2f}x | {min(r['ratios']):.2f}x-{max(r['ratios']):.2f}x | "
                     f"{r['per_core_run']:.0f} |")
    return "\n".join(lines)


def header(cores: list[int], repeats: int, quick: bool) -> str:
    """The machine and the workload; the parent starts no JAX backend of its own (on a GPU
    machine that would take the GPU), so it says what the workers run on instead."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    steps = QUICK_STEPS_PER_ROUND if quick else STEPS_PER_ROUND
    hidden = "-".join(map(str, benchmark_common.mlp_hidden_sizes(quick)))
    return (f"jax {jax.__version__}, CPU backend; {os.cpu_count()} cpus, {len(cores)} usable; "
            f"load average {load}; {repeats} repeats, medians; MLP 784-{hidden}-10 + Adam, "
            f"{NORM} norm; "
            + ", ".join(f"{steps[b]} steps per round at batch {b}" for b in BATCH_SIZES)
            + (" (QUICK: tiny model)" if quick else ""))


def main(argv):
    quick, repeats = benchmark_common.start(argv, repeats=5, quick_repeats=1)
    if _WORKER.value:
        worker(_WORKER_BATCH_SIZE.value, quick)
        return
    if not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None:
        print("Skipped: pinning a process to a core needs Linux's taskset (util-linux).")
        return
    cores = sorted(os.sched_getaffinity(0))
    print(header(cores, repeats, quick) + "\n")
    if len(cores) < 2:
        print("One usable core: nothing to compare.")
        return
    rows = [measure(b, cores, repeats, quick) for b in BATCH_SIZES]
    print("## Training throughput: one process on every core (shared) vs one pinned process per "
          "core (per core)\n")
    print(format_table(rows, len(cores)))
    print("\n## Goal\n")
    for r in rows:
        if r["batch"] == GOAL_BATCH:
            print(f"- batch {GOAL_BATCH}: per core >= {GOAL_RATIO:g}x shared: {r['ratio']:.2f}x "
                  f"-> {'MET' if r['ratio'] >= GOAL_RATIO else 'NOT MET'}")
    if quick:
        print("(quick mode: a tiny model measures dispatch overhead, not the goal)")


if __name__ == "__main__":
    app.run(main)
