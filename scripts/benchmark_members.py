"""Benchmarks K runs vmapped in one program against K runs one after another.

For the pi-MNIST MLP (784-1000-1000-10, LN, Adam) at batch 4 and 128, and the attentive reader's
LN-LSTM (CPU profile), K in {1, 3, 10, 30}: examples/s of
    sequential  the K members' states, each advanced by the trainer's single-run chunk step, one
                member after another, as `train.train_members` runs its members on the CPU
                (`train.vmaps_members`) and as K separate runs would be
    vmapped     one member-stacked state (`train.stack_members`) advanced by the vmapped chunk
                step (`train.make_train_chunk(..., members=True)`), as `train.train_members`
                runs its members on an accelerator
both built as `train.train_members` builds them (scripts/benchmark_common.py): each member's Task
(its seed: its own data order), its initial state and rng (`train.create_member_states`) and the
chunk steps (`train.make_train_chunk`), on random data of the real shapes (no dataset needed). A
repetition is a round of every member's task: one chunk of the default steps_per_call (512
examples) for the MLP, 4 updates for the reader. Examples/s counts every member's examples;
ratio = vmapped / sequential from the same run; medians over --repeats repetitions (default 3),
interleaved, after a warm-up round.

The memory floor of an MLP member-step: the weights read twice (forward, backward), the
gradients written and read once, and Adam's read and write of the parameters and both moments:
10 passes over the P parameters, 40 P bytes in float32. The floor is that over the bandwidth of a
jitted in-place update measured in the same run (2 passes of a 256 MB array); a member-step can
approach it only when K is large enough to hide the per-step latency. On a CPU whose caches
hold much of the model the measured time can fall below this floor.

Goals: on a GPU, the batch-4 MLP's time per member-step within 1.5x of the floor at K >= 10
(vmapped); on the 2-core CPU, train_members no slower than sequential runs (>= 0.95x): there it
runs the members one after another in one process, i.e. the sequential column.

  .venv/bin/python -m scripts.benchmark_members [--repeats=N] [--members=1,3,10,30] [--quick]
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lnrepro import train
from scripts import benchmark_common

MEMBERS = (1, 3, 10, 30)
MLP_STEPS = {4: 128, 128: 4}  # steps per round: the trainer's default steps_per_call
READER_STEPS = 4  # updates per round, one per jitted call as the reader's trainer runs them

flags.adopt_module_key_flags(benchmark_common)  # --repeats, --quick: listed by --help
_MEMBERS = flags.DEFINE_list("members", [str(k) for k in MEMBERS], "K, the members of one "
                             "program: comma-separated counts (--quick: 2).")
flags.register_validator("members", lambda ks: all(k.isdigit() and int(k) >= 1 for k in ks),
                         "--members takes comma-separated whole numbers >= 1.")


class Workload:
    """K runs of one program, built as `train.train_members` builds them, trained a round at a
    time: one after another through the single-run chunk step (sequential) or stacked through
    the vmapped one."""

    def __init__(self, name: str, configs, tasks: list[train.Task], mesh):
        self.name, self.tasks = name, tasks
        self.precision = configs[0].matmul_precision
        states, self.rngs = train.create_member_states(configs, tasks, mesh)
        log = configs[0].get("log_grad_norm", True)
        self.single_chunk = train.make_train_chunk(tasks[0], mesh, log)
        self.members_chunk = train.make_train_chunk(tasks[0], mesh, log, members=True)
        # Stacking copies the arrays: the sequential runs donate their own.
        self.members_state, self.members_rng = train.stack_members(states), jnp.stack(self.rngs)
        self.single_states = states
        self.steps_per_round = sum(len(jax.tree.leaves(c)[0]) for c in tasks[0].train_chunks(0))
        self.num_params = sum(x.size for x in jax.tree.leaves(states[0].params))

    def _items(self, round_index: int) -> list[list]:
        """Each member's chunks of the round, made on the host before the timing."""
        return [list(task.train_chunks(round_index)) for task in self.tasks]

    def sequential(self, round_index: int) -> float:
        """Seconds for every member's round, one member after another."""
        seconds = 0.0
        for k, items in enumerate(self._items(round_index)):
            self.single_states[k], member_seconds = benchmark_common.train_timed(
                self.single_chunk, self.single_states[k], items, self.rngs[k], self.precision)
            seconds += member_seconds
        return seconds

    def vmapped(self, round_index: int) -> float:
        """Seconds for the members' round as one stacked state."""
        items = list(zip(*self._items(round_index)))  # per chunk: the members' items
        self.members_state, seconds = benchmark_common.train_timed(
            self.members_chunk, self.members_state, items, self.members_rng, self.precision)
        return seconds


def mlp_workload(batch_size: int, num_members: int, hidden, mesh) -> Workload:
    # One round's examples: an epoch of the task is one chunk of the default steps_per_call.
    data = benchmark_common.random_mnist(MLP_STEPS[batch_size] * batch_size)
    configs = [benchmark_common.mlp_config("layer", batch_size, MLP_STEPS[batch_size], hidden,
                                           seed=k) for k in range(num_members)]
    tasks = [benchmark_common.mlp_task(config, data) for config in configs]
    return Workload(f"mlp bs{batch_size}", configs, tasks, mesh)


def reader_workload(size: dict, num_members: int, mesh) -> Workload:
    rng = np.random.default_rng(0)
    batches = [benchmark_common.random_reader_batch(size, rng) for _ in range(READER_STEPS)]
    configs = [benchmark_common.reader_config(size, "lnlstm", seed=k)
               for k in range(num_members)]
    tasks = [benchmark_common.reader_task(config, size, batches, READER_STEPS)
             for config in configs]
    return Workload("reader lnlstm", configs, tasks, mesh)


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
    """(sequential, vmapped) median seconds per repetition (rounds 1..repeats, interleaved),
    after a warm-up round (compiles) of each."""
    workload.sequential(0), workload.vmapped(0)
    sequential, vmapped = [], []
    for round_index in range(1, repeats + 1):
        sequential.append(workload.sequential(round_index))
        vmapped.append(workload.vmapped(round_index))
    return statistics.median(sequential), statistics.median(vmapped)


def main(argv):
    quick, repeats = benchmark_common.start(argv, repeats=3, quick_repeats=3)
    members = (2,) if quick else tuple(int(k) for k in _MEMBERS.value)
    hidden = benchmark_common.mlp_hidden_sizes(quick)
    size = (benchmark_common.READER_QUICK_SIZES["quick"] if quick
            else benchmark_common.READER_SIZES["cpu"])
    mesh = train.make_mesh()
    device = jax.devices()[0]
    bandwidth = copy_bandwidth(repeats)
    print(f"backend: {jax.default_backend()} ({device.device_kind}, {jax.device_count()} "
          f"device(s)); copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(f"train_members here: "
          f"{'vmapped' if train.vmaps_members(2) else 'one member after another (sequential)'}\n")
    print("| workload | K | sequential examples/s | vmapped examples/s | ratio vmapped/"
          "sequential | us per member-step (vmapped) | floor us | member-step / floor |")
    print("|---|---|---|---|---|---|---|---|")
    ratios, best_floor_ratio = [], {}
    for batch_size in (4, 128):
        for k in members:
            workload = mlp_workload(batch_size, k, hidden, mesh)
            floor = 40 * workload.num_params / bandwidth
            row = _row(workload, k, repeats, floor)
            ratios.append(row[0])
            if batch_size == 4 and k >= 10:
                best_floor_ratio[k] = row[1]
    for k in members:
        ratios.append(_row(reader_workload(size, k, mesh), k, repeats, None)[0])
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


def _row(workload: Workload, k: int, repeats: int, floor: float | None) -> tuple[float, float]:
    sequential, vmapped = measure(workload, repeats)
    member_steps = k * workload.steps_per_round
    examples = member_steps * workload.tasks[0].examples_per_step
    per_member_step = vmapped / member_steps
    ratio = sequential / vmapped
    floor_text = "-" if floor is None else f"{floor * 1e6:.1f}"
    floor_ratio = float("nan") if floor is None else per_member_step / floor
    print(f"| {workload.name} | {k} | {examples / sequential:.0f} | {examples / vmapped:.0f} | "
          f"{ratio:.2f}x | {per_member_step * 1e6:.1f} | {floor_text} | "
          f"{'-' if floor is None else f'{floor_ratio:.2f}x'} |", flush=True)
    return ratio, floor_ratio


if __name__ == "__main__":
    app.run(main)
