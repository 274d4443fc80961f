"""Benchmarks K runs vmapped in one program against K runs one after another.

For the pi-MNIST MLP (784-1000-1000-10, LN, Adam) at batch 4 and 128, and the attentive reader's
LN-LSTM (CPU profile), K in {1, 3, 10, 30}: examples/s of
    sequential  K single-member states, each advanced by the trainer's jitted chunk
                (`train.make_run_chunk`), one after another, as K separate runs would be (and as
                `train.train_members` runs its members on the CPU: `train.vmaps_members`)
    vmapped     one member-stacked state (`train.stack_members`) advanced by the vmapped chunk
                (`train.make_run_chunk(..., members=True)`), as `train.train_members` runs its
                members on an accelerator
both built from the trainer's own functions on random data of the real shapes (no dataset
needed). Examples/s counts every member's examples; ratio = vmapped / sequential from the same
run; medians over --repeats repetitions, interleaved.

The memory floor of an MLP member-step: the weights read twice (forward, backward), the
gradients written and read once, and Adam's read and write of the parameters and both moments:
10 passes over the P parameters, 40 P bytes in float32. The floor is that over the bandwidth of a
jitted in-place update measured in the same run (2 passes of a 256 MB array); a member-step can
approach it only when K is large enough to hide the per-step latency. On a CPU whose caches
hold much of the model the measured time can fall below this floor.

Goals: on a GPU, the batch-4 MLP's time per member-step within 1.5x of the floor at K >= 10
(vmapped); on the 2-core CPU, train_members no slower than sequential runs (>= 0.95x): there it
runs the members one after another in one process, i.e. the sequential column.

  .venv/bin/python -m scripts.benchmark_members [--repeats N] [--members 1,3,10,30] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lnrepro import train
from lnrepro.tasks import pi_mnist
from scripts import benchmark_common, benchmark_reader, benchmark_train

MEMBERS = (1, 3, 10, 30)
MLP_STEPS = {4: 128, 128: 4}  # steps per timed chunk: the trainer's default steps_per_call
READER_STEPS = 4  # one update per jitted call, as the reader's trainer runs it


class Workload:
    """One task's sequential and member runners for K members."""

    def __init__(self, name: str, task, configs, chunks, device_data, mesh, examples_per_step):
        self.name, self.task, self.mesh = name, task, mesh
        self.chunks = chunks  # per member: the host chunks of one repetition
        self.examples = examples_per_step * sum(
            len(jax.tree.leaves(c)[0]) for c in chunks[0])
        self.device_data = train.replicate(device_data, mesh)
        states, rngs = [], []
        for config in configs:
            init_rng, rng = jax.random.split(jax.random.key(config.seed))
            states.append(train.replicate(train.create_train_state(
                init_rng, task.model, task.init_batch, train.make_optimizer(config)), mesh))
            rngs.append(rng)
        self.single_states, self.single_rngs = states, rngs
        self.members_state, self.members_rng = train.stack_members(states), jnp.stack(rngs)
        # The sequential runs get their own copies (the chunks donate their state).
        self.single_states = [jax.tree.map(jnp.copy, s) for s in states]
        log = configs[0].get("log_grad_norm", False)
        self.single_chunk = train.make_run_chunk(task, mesh, log)
        self.members_chunk = train.make_run_chunk(task, mesh, log, members=True)
        stack = task.stack_members or train.stack_arrays
        self.stacked_chunks = [stack(list(items)) for items in zip(*chunks)]

    def sequential(self) -> float:
        """Seconds for every member's chunks, one member after another."""
        start = time.perf_counter()
        for k, member_chunks in enumerate(self.chunks):
            for chunk in member_chunks:
                self.single_states[k], _ = self.single_chunk(
                    self.single_states[k], self.device_data, train.shard_chunk(chunk, self.mesh),
                    self.single_rngs[k])
        jax.block_until_ready(self.single_states)
        return time.perf_counter() - start

    def members(self) -> float:
        start = time.perf_counter()
        for chunk in self.stacked_chunks:
            self.members_state, _ = self.members_chunk(
                self.members_state, self.device_data,
                train.shard_chunk(chunk, self.mesh, members=True), self.members_rng)
        jax.block_until_ready(self.members_state)
        return time.perf_counter() - start


def mlp_workload(batch_size: int, num_members: int, hidden, mesh) -> Workload:
    data = benchmark_train.random_data(benchmark_train.NUM_EXAMPLES)
    configs = []
    for k in range(num_members):
        config = benchmark_train.make_config("layer", batch_size, MLP_STEPS[batch_size], hidden)
        config.seed = k
        configs.append(config)
    splits = {"train": (data["image"], data["label"]),
              "validation": (data["image"][:8], data["label"][:8]),
              "test": (data["image"][:8], data["label"][:8])}
    task = pi_mnist.build_task(configs[0], load_split=lambda _, split: splits[split])
    chunks = [[np.random.default_rng([k, 0]).integers(
        0, len(data["label"]), (MLP_STEPS[batch_size], batch_size)).astype(np.int32)]
        for k in range(num_members)]
    return Workload(f"mlp bs{batch_size}", task, configs, chunks, data, mesh, batch_size)


def reader_workload(size: dict, num_members: int, mesh) -> Workload:
    rng = np.random.default_rng(0)
    configs = []
    for k in range(num_members):
        config = benchmark_reader.make_config(size, "lnlstm")
        config.seed = k
        configs.append(config)
    batches = [benchmark_reader.random_batch(size, rng) for _ in range(READER_STEPS)]
    task = benchmark_reader.make_task(configs[0], size, batches[0])
    chunks = [[{key: v[None] for key, v in batches[(s + k) % READER_STEPS].items()}
               for s in range(READER_STEPS)] for k in range(num_members)]
    return Workload("reader lnlstm", task, configs, chunks, None, mesh, size["batch"])


def copy_bandwidth(repeats: int) -> float:
    """Bytes/s of a jitted in-place update (read + write) of a 256 MB float32 array; donated,
    so no fresh output buffer is allocated (and page-faulted) per call."""
    x = jnp.ones((64 << 20,), jnp.float32)
    nbytes = x.nbytes
    update = jax.jit(lambda a: a + 1.0, donate_argnums=0)
    x = jax.block_until_ready(update(x))
    times = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        x = jax.block_until_ready(update(x))
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times)


def measure(workload: Workload, repeats: int) -> tuple[float, float]:
    """(sequential, members) median seconds per repetition; both warmed up first."""
    workload.sequential(), workload.members()  # compile
    sequential, members = [], []
    for _ in range(repeats):
        sequential.append(workload.sequential())
        members.append(workload.members())
    return statistics.median(sequential), statistics.median(members)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", default=",".join(map(str, MEMBERS)),
                        help="comma-separated K values")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and K = 2: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    if args.quick:
        benchmark_common.fast_compile()
    members = (2,) if args.quick else tuple(int(k) for k in args.members.split(","))
    hidden = benchmark_train.QUICK_HIDDEN if args.quick else (1000, 1000)
    size = (benchmark_reader.QUICK_SIZES["quick"] if args.quick
            else benchmark_reader.SIZES["cpu"])
    mesh = train.make_mesh()
    device = jax.devices()[0]
    bandwidth = copy_bandwidth(args.repeats)
    print(f"backend: {jax.default_backend()} ({device.device_kind}, {jax.device_count()} "
          f"device(s)); copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"train_members here: "
          f"{'vmapped' if train.vmaps_members(2) else 'one member after another (sequential)'}")
    print("| workload | K | sequential examples/s | vmapped examples/s | ratio vmapped/"
          "sequential | us per member-step (vmapped) | floor us | member-step / floor |")
    print("|---|---|---|---|---|---|---|---|")
    ratios, best_floor_ratio = [], {}
    for batch_size in (4, 128):
        for k in members:
            workload = mlp_workload(batch_size, k, hidden, mesh)
            num_params = sum(x.size for x in jax.tree.leaves(workload.single_states[0].params))
            floor = 40 * num_params / bandwidth
            row = _row(workload, k, args.repeats, floor)
            ratios.append(row[0])
            if batch_size == 4 and k >= 10:
                best_floor_ratio[k] = row[1]
    for k in members:
        ratios.append(_row(reader_workload(size, k, mesh), k, args.repeats, None)[0])
    worst_ratio, best_ratio = min(ratios), max(ratios)
    print()
    if train.vmaps_members(2):
        print(f"worst ratio vmapped/sequential: {worst_ratio:.2f}x")
    else:
        print(f"CPU: train_members runs the sequential program, 1.00x by construction (goal >= "
              f"0.95x: MET); vmapped would run at {worst_ratio:.2f}x-{best_ratio:.2f}x")
    if best_floor_ratio:
        print("batch-4 MLP member-step (vmapped) / floor at K >= 10: " + ", ".join(
            f"K={k}: {r:.2f}x" for k, r in best_floor_ratio.items())
              + " (GPU goal <= 1.5x)")
    return 0


def _row(workload: Workload, k: int, repeats: int, floor: float | None) -> tuple[float, float]:
    sequential, members = measure(workload, repeats)
    examples = workload.examples * k
    member_steps = k * sum(len(jax.tree.leaves(c)[0]) for c in workload.chunks[0])
    per_member_step = members / member_steps
    ratio = sequential / members
    floor_text = "-" if floor is None else f"{floor * 1e6:.1f}"
    floor_ratio = float("nan") if floor is None else per_member_step / floor
    print(f"| {workload.name} | {k} | {examples / sequential:.0f} | {examples / members:.0f} | "
          f"{ratio:.2f}x | {per_member_step * 1e6:.1f} | {floor_text} | "
          f"{'-' if floor is None else f'{floor_ratio:.2f}x'} |", flush=True)
    return ratio, floor_ratio


if __name__ == "__main__":
    sys.exit(main())
