"""One trainer for every experiment.

An experiment hands the trainer a `Task`: its model, how to cut a round of training into chunks of
steps, how a chunk item becomes a batch on the device, and how to evaluate. The trainer owns
everything else: the TrainState (with BN's population statistics when the model has any), the
jitted chunk of steps (several small-batch steps inside one `lax.scan`, the state buffers donated),
data-parallel sharding, the NaN guard, the workdir record, checkpoints and resume.

A run is a sequence of rounds (an epoch for MNIST, a validation interval for the reader); after
each round the trainer evaluates, appends one line to metrics.jsonl and checkpoints. Re-running the
same command resumes from the last checkpoint and recomputes any round after it, so an interrupted
run ends with the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec as P

from lnrepro import checkpoints, locking, metrics, provenance, tensorboard

Batch = dict[str, jax.Array]
DATA_AXIS = "data"
LOCK_FILE = ".lock"  # in the workdir, held for the whole run
class TrainState(train_state.TrainState):
    """Params and optimizer state, plus BN's population statistics (None for LN and no-norm
    models: layer norm keeps no state)."""
    batch_stats: Any = None


@dataclasses.dataclass(frozen=True)
class Task:
    """What differs between experiments; the trainer takes it as an argument.

    model: `apply(variables, batch, train=...)` -> logits [B, C]; batch['label'] holds [B] ints
      and an optional batch['weight'] [B] marks padded examples (0) in evaluation.
    init_batch: a batch of the training shape, to initialize the model.
    num_rounds: training rounds; each is followed by an evaluation.
    train_chunks: round -> iterable of chunks (pytrees whose leading axis is the steps of one
      jitted call). The shapes should be few: each new shape compiles once.
    select_batch: (device_data, chunk item) -> batch, traced inside the jitted step.
    device_data: arrays kept on the devices for the whole run (replicated), or None.
    evaluate: (state, eval_step) -> metrics for the round, where eval_step(state, batch) returns
      sums {'nll', 'errors', 'count'}.
    examples_per_step: the global batch size, for examples seen and throughput.
    round_name: how the metrics name a round ('epoch', 'interval').
    """
    model: nn.Module
    init_batch: Batch
    num_rounds: int
    train_chunks: Callable[[int], Iterable[Any]]
    select_batch: Callable[[Any, Any], Batch]
    device_data: Any
    evaluate: Callable[[TrainState, Callable], dict[str, float]]
    examples_per_step: int
    round_name: str = "round"
    # The members' chunk items -> one item with a leading member axis (train_members). The
    # default stacks equal shapes; a task whose batches vary in shape pads them first.
    stack_members: Callable[[list[Any]], Any] = None  # None: stack_arrays


def _adam(learning_rate, b1, b2, eps, clip_norm=None) -> optax.GradientTransformation:
    """Adam, after clipping the global gradient norm to clip_norm when one is given."""
    adam = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    return adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam, optionally after clipping the global gradient norm (the attentive reader's 10).

    The hyperparameters live in the optimizer state (optax.inject_hyperparams), so the members
    of a group (`train_members`) can each have their own learning rate, Adam settings and clip
    norm in one vmapped program. Whether to clip at all is the program's choice: the global norm
    is one more pass over the gradients, ~25% of a batch-4 MLP step.
    """
    hyperparams = dict(learning_rate=config.learning_rate, b1=config.adam_b1, b2=config.adam_b2,
                       eps=config.adam_eps)
    if config.get("grad_clip_norm"):
        hyperparams["clip_norm"] = config.grad_clip_norm
    return optax.inject_hyperparams(_adam)(**hyperparams)


def create_train_state(rng: jax.Array, model: nn.Module, init_batch: Batch,
                       tx: optax.GradientTransformation) -> TrainState:
    variables = jax.jit(functools.partial(model.init, train=False))(
        {"params": rng, "dropout": rng}, init_batch)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats"))


def stack_members(states: list[TrainState]) -> TrainState:
    """K single-member states -> one state whose arrays have a leading member axis [K, ...].

    The static parts (the apply function and the optimizer, whose hyperparameters sit in the
    state) are taken from the first member: members differ only in their arrays."""
    first = states[0]
    arrays = [dataclasses.replace(s, apply_fn=first.apply_fn, tx=first.tx) for s in states]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *arrays)


def member(tree: Any, index: int) -> Any:
    """Member `index` of a member-stacked pytree."""
    return jax.tree.map(lambda x: x[index], tree)


def _variables(state: TrainState, params=None) -> dict[str, Any]:
    variables = {"params": state.params if params is None else params}
    if state.batch_stats is not None:
        variables["batch_stats"] = state.batch_stats
    return variables


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example NLL [B] of integer labels, computed in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def loss_and_gradients(state: TrainState, batch: Batch, rng: jax.Array
                       ) -> tuple[jax.Array, Any, dict]:
    """The training loss (mean NLL, dropout from `rng`, BN on batch statistics), its gradient
    with respect to the parameters, and the model's updated BN statistics ({} without BN)."""
    has_batch_stats = state.batch_stats is not None

    def loss_fn(params):
        out = state.apply_fn(_variables(state, params), batch, train=True,
                             rngs={"dropout": rng},
                             mutable=["batch_stats"] if has_batch_stats else False)
        logits, updates = out if has_batch_stats else (out, {})
        return jnp.mean(cross_entropy(logits, batch["label"])), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, grads, updates


def step_rng(train_rng: jax.Array, step) -> jax.Array:
    """The dropout rng of one training step: the run's rng with the step folded in, so that a
    resumed run draws the same masks."""
    return jax.random.fold_in(train_rng, step)


def first_batch(task: Task) -> Batch:
    """The batch of a run's first training step, as its first chunk's first item selects it."""
    item = jax.tree.map(lambda x: x[0], next(iter(task.train_chunks(0))))
    return task.select_batch(task.device_data, item)


def train_step(state: TrainState, batch: Batch, rng: jax.Array,
               log_grad_norm: bool = True) -> tuple[TrainState, dict]:
    """One Adam step on the mean NLL; BN population statistics are updated by the model.

    Returns the new state and {'loss'} (+ 'grad_norm', the global gradient norm, when
    log_grad_norm). The norm is a diagnostic, not part of the update (unless the optimizer clips):
    at batch 4 on the MNIST MLP its extra pass over the 1.8M gradients costs ~25% of a step.
    """
    has_batch_stats = state.batch_stats is not None
    loss, grads, updates = loss_and_gradients(state, batch, rng)
    new_state = state.apply_gradients(grads=grads)
    if has_batch_stats:
        new_state = new_state.replace(batch_stats=updates["batch_stats"])
    step_metrics = {"loss": loss}
    if log_grad_norm:
        step_metrics["grad_norm"] = optax.global_norm(grads)
    return new_state, step_metrics


def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    """Sums of NLL and errors over the (weighted) examples of one batch, in evaluation mode."""
    logits = state.apply_fn(_variables(state), batch, train=False)
    weight = batch.get("weight", jnp.ones(batch["label"].shape, jnp.float32))
    nll = cross_entropy(logits, batch["label"])
    errors = (jnp.argmax(logits, axis=-1) != batch["label"]).astype(jnp.float32)
    return {"nll": jnp.sum(nll * weight), "errors": jnp.sum(errors * weight),
            "count": jnp.sum(weight)}


def summarize(sums: Iterable[dict[str, jax.Array]], prefix: str) -> dict[str, Any]:
    """Adds up eval_step sums over batches into '<prefix>_nll' and '<prefix>_error': floats, or
    arrays [K] of per-member values when the sums carry a member axis."""
    total = {"nll": 0.0, "errors": 0.0, "count": 0.0}
    for s in jax.device_get(list(sums)):
        for k in total:
            total[k] = total[k] + np.asarray(s[k], np.float64)
    count = np.maximum(total["count"], 1.0)
    out = {f"{prefix}_nll": total["nll"] / count, f"{prefix}_error": total["errors"] / count}
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in out.items()}


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device (all hosts' when jax.distributed is initialized)."""
    # Auto axis types: the compiler propagates shardings (the batch gather in `select_batch` has
    # a replicated operand and sharded indices, which explicit sharding would have us annotate).
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,))


def make_run_chunk(task: Task, mesh: jax.sharding.Mesh, log_grad_norm: bool = True,
                   members: bool = False) -> Callable:
    """jit(scan(train_step)) over the steps of a chunk; the state's buffers are donated.

    Each step's batch is constrained to be sharded over the data axis, so under several devices
    the forward and backward passes are data-parallel and BN's statistics cover the global batch.
    With `members`, the state, the chunk and the rng carry a leading member axis and the scan is
    vmapped over it: K independent runs in one program (device_data is shared).
    """
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))

    def run_chunk(state, device_data, chunk, rng):
        def body(state, item):
            batch = task.select_batch(device_data, item)
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            return train_step(state, batch, step_rng(rng, state.step), log_grad_norm)
        return jax.lax.scan(body, state, chunk)

    if members:
        run_chunk = jax.vmap(run_chunk, in_axes=(0, None, 0, 0))
    return jax.jit(run_chunk, donate_argnums=(0,))


def make_train_chunk(task: Task, mesh: jax.sharding.Mesh, log_grad_norm: bool = True,
                     members: bool = False) -> Callable:
    """(state, item, rng) -> (state, step metrics): trains one item of `task.train_chunks`, put
    on the devices (`shard_chunk`), by one call of `make_run_chunk`'s program; the task's device
    data are replicated once, here. With `members`, `item` is the members' items: stacked
    (`task.stack_members`) and trained vmapped. What each round of `train_members` calls per
    chunk, and what scripts/benchmark_*.py time.
    """
    run_chunk = make_run_chunk(task, mesh, log_grad_norm, members)
    device_data = replicate(task.device_data, mesh)
    stack = task.stack_members or stack_arrays

    def train_chunk(state, item, rng):
        chunk = stack(list(item)) if members else item
        return run_chunk(state, device_data, shard_chunk(chunk, mesh, members), rng)
    return train_chunk


def vmaps_members(num_members: int) -> bool:
    """Whether train_members stacks its members and vmaps them (accelerators) or calls the one
    compiled single-run program once per member (the CPU, and any group of one).

    A vmapped program fills the accelerator that one small-batch run leaves idle. The CPU is
    busy with one run already: there a vmapped batch-4 MLP step ran at 0.5-0.8x the speed of
    K single runs and a lax.map over members at 0.8x at batch 128
    (scripts/benchmark_members.py), so the members take turns, and the group saves start-up,
    data loading and compiling but not step time.
    """
    return num_members > 1 and jax.default_backend() != "cpu"


def put_global(tree: Any, sharding: NamedSharding) -> Any:
    """Host arrays -> global arrays with `sharding`. Every process holds the whole value (the
    data pipeline is deterministic), so each fills in only the shards of its own devices: this is
    also what works under several processes (jax.distributed), where device_put cannot reach the
    other hosts' devices."""
    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(put, tree)


def shard_chunk(chunk: Any, mesh: jax.sharding.Mesh, members: bool = False) -> Any:
    """Puts a host chunk [steps, batch, ...] ([members, steps, batch, ...] with `members`) on
    the devices, batch axis split over `data`."""
    spec = P(None, None, DATA_AXIS) if members else P(None, DATA_AXIS)
    return put_global(chunk, NamedSharding(mesh, spec))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A copy of `tree` on every device of the mesh (all processes')."""
    return put_global(tree, NamedSharding(mesh, P()))


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss, gradient norm or evaluation metric."""


class RecordWithoutCheckpointError(RuntimeError):
    """The workdir holds metrics of an unfinished run but no checkpoint to continue it from."""


def _first_non_finite(values: dict[str, Any]) -> tuple[str, float] | None:
    """(key, value) of the first value that is not finite (arrays of step metrics, or a row's
    floats: a float32 sum can overflow although every step's loss is finite), or None."""
    for key, value in values.items():
        if isinstance(value, (float, np.ndarray)) and not np.all(np.isfinite(value)):
            array = np.atleast_1d(np.asarray(value, np.float64))
            return key, float(array[~np.isfinite(array)][0])
    return None


def _non_finite_message(key: str, round_index: int, round_name: str, workdir: str) -> str:
    last_good = (f"The last good checkpoint (after {round_name} {round_index}) is in "
                 f"{workdir}/checkpoints; " if round_index else "No checkpoint was saved; ")
    return (f"{key} stopped being finite in {round_name} {round_index + 1}. {last_good}lower "
            f"config.learning_rate (or set config.grad_clip_norm) and start a new workdir.")


# The settings in which the members of one program may differ: each member's own seed
# (initialization, data order, dropout) and optimizer hyperparameters, and the LN gain's
# initial value. Everything else (shapes, norms, data, precision, whether to clip) is the
# program's.
MEMBER_SETTINGS = ("seed", "learning_rate", "adam_b1", "adam_b2", "adam_eps", "grad_clip_norm",
                   "ln_gain_init")


def program_key(config: ml_collections.ConfigDict | dict) -> str:
    """Runs with equal keys can train as members of one program (`train_members`)."""
    settings = metrics.as_json(config.to_dict() if hasattr(config, "to_dict") else config)
    key = {k: v for k, v in settings.items()
           if k not in MEMBER_SETTINGS and k not in metrics.RESUMABLE_CHANGES}
    key["clips"] = bool(settings.get("grad_clip_norm"))
    return json.dumps(key, sort_keys=True)


def stack_arrays(items: list[Any]) -> Any:
    """Chunk items of the members (equal shapes) -> one item with a leading member axis."""
    return jax.tree.map(lambda *xs: np.stack(xs), *items)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       build_task: Callable[[ml_collections.ConfigDict], Task]) -> list[dict]:
    """Trains and evaluates one run as `config` says, recording everything in `workdir`: a
    group of one member (see `train_members`). Raises NonFiniteLossError if it diverges (now
    or, as its record says, before)."""
    (rows,) = train_members([config], [workdir], build_task)
    diverged = metrics.read_diverged(workdir)
    if diverged is not None:
        raise NonFiniteLossError(_non_finite_message(
            diverged["key"], diverged["round"], diverged.get("round_name", "round"), workdir))
    return rows


def train_members(configs: list[ml_collections.ConfigDict], workdirs: list[str],
                  build_task: Callable[[ml_collections.ConfigDict], Task]) -> list[list[dict]]:
    """Trains K runs as the members of one jitted program and records each in its own workdir.

    The members share every setting but MEMBER_SETTINGS (`program_key`); the state of each
    carries a leading member axis and the steps are vmapped over it, so K runs cost one
    program's start-up, compile and dispatch. Member k trains what the single run of configs[k]
    trains, and writes the same record (config.json, metrics.jsonl, provenance.json,
    checkpoints). A member whose loss or metrics stop being finite is stopped and recorded as
    diverged (diverged.json: the round, the key, the value) while the others go on.

    Every float32 matmul runs at config.matmul_precision. Under jax.distributed every process
    trains (data-parallel over all hosts' devices) and only process 0 writes the records.
    A finished or diverged record is returned as it is, without writing (read-only workdirs
    work). Otherwise one process at a time may write a workdir (a lock, released by the kernel
    if its holder dies), and the group resumes from the newest round at which every member has a
    checkpoint that verifies.
    Returns each member's metric rows (including rounds done before a resume; a process other
    than 0 returns the rows it computed).
    """
    if not configs or len(configs) != len(workdirs):
        raise ValueError(f"train_members needs one workdir per config, got {len(configs)} "
                         f"configs and {len(workdirs)} workdirs.")
    keys = [program_key(c) for c in configs]
    if len(set(keys)) > 1:
        first, other = json.loads(keys[0]), json.loads(next(k for k in keys if k != keys[0]))
        differing = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        raise ValueError(f"the members of one program may differ only in {MEMBER_SETTINGS}; "
                         f"these differ in {differing}.")
    results: list[list[dict] | None] = [None] * len(configs)
    todo = []
    for k, (config, workdir) in enumerate(zip(configs, workdirs)):
        existing = metrics.load_run(workdir)
        if existing is not None and existing.done:
            metrics.check_config(workdir, config.to_dict(), ignore=metrics.RESUMABLE_CHANGES)
            logging.info("%s holds a %s record; nothing to do.", workdir,
                         "finished" if existing.finished else "diverged")
            results[k] = existing.rows
        else:
            todo.append(k)
    if not todo:
        return results
    configs, workdirs = [configs[k] for k in todo], [workdirs[k] for k in todo]
    with jax.default_matmul_precision(configs[0].matmul_precision):
        # First: a run that cannot start (no data) leaves no record.
        tasks = [build_task(config) for config in configs]
        mesh = make_mesh()
        if tasks[0].examples_per_step % mesh.size:
            raise ValueError(f"batch size {tasks[0].examples_per_step} must be divisible by the "
                             f"{mesh.size} devices of the data-parallel mesh.")
        for config, workdir in zip(configs, workdirs):
            metrics.check_config(workdir, config.to_dict(), ignore=metrics.RESUMABLE_CHANGES)
        with contextlib.ExitStack() as locks:
            if jax.process_index() == 0:  # process 0 holds the locks for all processes
                for workdir in workdirs:
                    locks.enter_context(locking.exclusive_or_fail(
                        os.path.join(workdir, LOCK_FILE),
                        f"another process (pid {{pid}}) is training in {workdir}. Wait for it "
                        f"to finish or stop it; two writers would interleave one record."))
            # Members resume in lockstep, so those at the same progress train together (a run
            # half done and a fresh one, grouped by a sweep, train one after the other).
            by_progress: dict[int, list[int]] = {}
            for i, workdir in enumerate(workdirs):
                record = metrics.load_run(workdir)
                if record is not None and record.done:  # another writer finished it meanwhile
                    results[todo[i]] = record.rows
                    continue
                by_progress.setdefault(len(record.rows) if record else 0, []).append(i)
            for members in by_progress.values():
                trained = _train_members([configs[i] for i in members],
                                         [workdirs[i] for i in members],
                                         [tasks[i] for i in members], mesh)
                for i, rows in zip(members, trained):
                    results[todo[i]] = rows
    return results


def _resume_round(managers, workdirs: list[str], round_name: str) -> int | None:
    """The newest round at which every member has a checkpoint that verifies (None: start
    fresh). Refuses records that cannot be continued rather than emptying them."""
    steps = [set(checkpoints.verified_steps(manager)) for manager in managers]
    common = set.intersection(*steps)
    if common:
        return max(common)
    for workdir, member_steps in zip(workdirs, steps):
        recorded = metrics.read_metrics(workdir)
        if recorded:
            raise RecordWithoutCheckpointError(
                f"{workdir} records {len(recorded)} {round_name}(s) of an unfinished run but "
                f"holds no checkpoint to continue from"
                + (" at a round its group's other members have" if member_steps else "")
                + f". Move its {metrics.METRICS_FILE} away to start over there, or use a new "
                f"--workdir.")
    return None


def create_member_states(configs, tasks: list[Task], mesh: jax.sharding.Mesh
                         ) -> tuple[list[TrainState], list[jax.Array]]:
    """Each member's initial state (replicated over the mesh) and training rng, both drawn from
    its config's seed: what a run of that config starts from."""
    states, train_rngs = [], []
    for config, member_task in zip(configs, tasks):
        init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
        state = create_train_state(init_rng, member_task.model, member_task.init_batch,
                                   make_optimizer(config))
        if states:
            # The first member's apply function and optimizer serve all (the members' own
            # hyperparameters are in their optimizer states), so the members share one
            # compiled program: jit keys on these static fields.
            state = state.replace(apply_fn=states[0].apply_fn, tx=states[0].tx)
        states.append(replicate(state, mesh))
        train_rngs.append(train_rng)
    return states, train_rngs


def _train_members(configs, workdirs: list[str], tasks: list[Task], mesh) -> list[list[dict]]:
    states, train_rngs = create_member_states(configs, tasks, mesh)
    managers = [checkpoints.make_manager(workdir) for workdir in workdirs]
    try:
        return _run_rounds(configs, workdirs, tasks, mesh, states, train_rngs, managers)
    finally:
        for manager in managers:
            manager.close()


def _stack_member_metrics(per_member: list[dict | None]) -> dict[str, np.ndarray]:
    """One chunk's step metrics of each member (None: diverged, no turn) -> {key: [members,
    steps]}, NaN for the members without a turn."""
    template = next(m for m in per_member if m is not None)
    return {key: np.stack([np.full(np.shape(template[key]), np.nan) if m is None
                           else np.asarray(m[key]) for m in per_member]) for key in template}


def _run_rounds(configs, workdirs, tasks, mesh, states, train_rngs, managers):
    task, num_members = tasks[0], len(configs)
    writes_record = jax.process_index() == 0
    last_round = _resume_round(managers, workdirs, task.round_name)
    first_round = 0 if last_round is None else last_round + 1
    if last_round is not None:
        states = [checkpoints.restore(manager, last_round, state)
                  for manager, state in zip(managers, states)]
    vmapped = vmaps_members(num_members)
    if vmapped:
        state, train_rng = stack_members(states), jnp.stack(train_rngs)
    names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    if writes_record:
        for config, workdir in zip(configs, workdirs):
            metrics.write_config(workdir, config.to_dict(), ignore=metrics.RESUMABLE_CHANGES)
            dropped = [r["round"] + 1 for r in metrics.read_metrics(workdir)
                       if r["round"] >= first_round]
            if dropped:
                logging.warning("Dropping %s(s) %s of %s/%s: recorded after the last checkpoint, "
                                "they are recomputed.", task.round_name, dropped, workdir,
                                metrics.METRICS_FILE)
            metrics.truncate_metrics(workdir, first_round - 1)
            now = provenance.collect(config.matmul_precision)
            earlier = [entry for entry in metrics.read_provenance(workdir)
                       if entry["first_round"] < first_round]
            changes = provenance.numerics_changes(earlier[-1], now) if earlier else []
            if changes:
                logging.warning("Resuming %s with %s changed since its last start: the rounds "
                                "from here match an uninterrupted run to float32 rounding, not "
                                "bit for bit.", workdir, "; ".join(changes))
            if earlier and provenance.source_changed(earlier[-1], now):
                logging.warning("Resuming %s with lnrepro's source changed since its last start "
                                "(sha256 %s at %s -> %s at %s): the rounds from here are the new "
                                "code's, and differ from an uninterrupted run's as far as the "
                                "change reaches.", workdir, earlier[-1]["source_sha256"][:12],
                                metrics.commit_label(earlier[-1]), now["source_sha256"][:12],
                                metrics.commit_label(now))
            metrics.append_provenance(workdir, first_round, now)
    if first_round:
        logging.info("Resuming %s after %s %d.", ", ".join(workdirs), task.round_name,
                     first_round)
    # A live view for `tensorboard --logdir`, beside the record (a new events file per start).
    event_files = [tensorboard.EventFile(workdir) for workdir in workdirs]

    train_chunk = make_train_chunk(task, mesh, configs[0].get("log_grad_norm", True),
                                   members=vmapped)
    replicated = NamedSharding(mesh, P())
    jitted_eval_step = jax.jit(jax.vmap(eval_step, in_axes=(0, None)) if vmapped else eval_step)
    # Evaluation batches come from the host; place them on every device of the mesh (a host
    # array cannot be mixed with global arrays under several processes).
    jit_eval_step = lambda state, batch: jitted_eval_step(state, put_global(batch, replicated))
    progress = metrics.Progress(task.num_rounds, first_round)
    alive = [True] * num_members
    rows: list[list[dict]] = [[] for _ in range(num_members)]  # this process's rows
    for round_index in range(first_round, task.num_rounds):
        start = time.time()
        # Seconds each member's own turns took (taking turns), or the program's (vmapped).
        member_seconds = np.zeros(num_members)
        step_metrics = []  # per chunk: {key: [members, steps]}
        for items in zip(*(t.train_chunks(round_index) for t in tasks)):
            if vmapped:
                state, chunk_metrics = train_chunk(state, items, train_rng)
                step_metrics.append(jax.tree.map(np.asarray, chunk_metrics))
                continue
            per_member = []
            for k, item in enumerate(items):
                if not alive[k]:  # a diverged member takes no more turns
                    per_member.append(None)
                    continue
                turn = time.time()
                states[k], chunk_metrics = train_chunk(states[k], item, train_rngs[k])
                if num_members > 1:  # time the member's turn (waiting for it)
                    chunk_metrics = jax.tree.map(np.asarray, chunk_metrics)
                    member_seconds[k] += time.time() - turn
                per_member.append(chunk_metrics)
            # Kept on the device until the round ends: a lone run's chunks stay asynchronous.
            step_metrics.append(per_member)
        if not vmapped:
            step_metrics = [_stack_member_metrics(per_member) for per_member in step_metrics]
        step_metrics = {k: np.concatenate([m[k] for m in step_metrics], axis=1)
                        for k in step_metrics[0]}  # [members, steps]
        if vmapped or num_members == 1:
            member_seconds[:] = time.time() - start
        train_seconds = member_seconds.copy()
        if vmapped:
            evaluation = task.evaluate(state, jit_eval_step)  # per-member arrays [members]
            steps_done = np.asarray(state.step)
            member_seconds[:] = time.time() - start
        else:
            evaluations = []
            for k in range(num_members):
                turn = time.time()
                evaluations.append(task.evaluate(states[k], jit_eval_step) if alive[k] else None)
                member_seconds[k] += time.time() - turn
            template = next(e for e in evaluations if e is not None)
            evaluation = {key: np.array([np.nan if e is None else e[key] for e in evaluations])
                          for key in template}
            steps_done = np.array([int(s.step) for s in states])
        for k in range(num_members):
            if not alive[k]:
                continue
            own_steps = {key: values[k] for key, values in step_metrics.items()}
            row = {"round": round_index, "num_rounds": task.num_rounds,
                   task.round_name: round_index + 1, "step": int(steps_done[k]),
                   "examples_seen": int(steps_done[k]) * task.examples_per_step,
                   "train_loss_running": float(np.mean(own_steps["loss"]))}
            if "grad_norm" in own_steps:
                row["grad_norm_max"] = float(np.max(own_steps["grad_norm"]))
            row.update({key: float(np.broadcast_to(value, (num_members,))[k])
                        for key, value in evaluation.items()})
            row["examples_per_sec"] = (own_steps["loss"].size * task.examples_per_step
                                       / train_seconds[k])
            row["round_seconds"] = float(member_seconds[k])
            bad = _first_non_finite(own_steps) or _first_non_finite(row)
            if bad is not None:
                alive[k] = False
                logging.warning("%s diverged: %s", workdirs[k],
                                _non_finite_message(bad[0], round_index, task.round_name,
                                                    workdirs[k]))
                if writes_record:
                    metrics.write_diverged(workdirs[k], round_index, task.round_name, *bad)
                continue
            if writes_record:
                metrics.append_metrics(workdirs[k], row)
                event_files[k].write_row(row)
            rows[k].append(row)
            progress.log(round_index, row, names[k] if num_members > 1 else None)
        if not any(alive):
            break
        for k in range(num_members):
            if alive[k]:
                checkpoints.save(managers[k], round_index,
                                 member(state, k) if vmapped else states[k])
    if not writes_record:
        return rows
    return [metrics.read_metrics(workdir) for workdir in workdirs]
