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

import dataclasses
import functools
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

from lnrepro import checkpoints, locking, metrics, provenance

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


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam, optionally after clipping the global gradient norm (the attentive reader's 10)."""
    adam = optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2,
                      eps=config.adam_eps)
    clip = config.get("grad_clip_norm")
    return optax.chain(optax.clip_by_global_norm(clip), adam) if clip else adam


def create_train_state(rng: jax.Array, model: nn.Module, init_batch: Batch,
                       tx: optax.GradientTransformation) -> TrainState:
    variables = jax.jit(functools.partial(model.init, train=False))(
        {"params": rng, "dropout": rng}, init_batch)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats"))


def _variables(state: TrainState, params=None) -> dict[str, Any]:
    variables = {"params": state.params if params is None else params}
    if state.batch_stats is not None:
        variables["batch_stats"] = state.batch_stats
    return variables


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example NLL [B] of integer labels, computed in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def train_step(state: TrainState, batch: Batch, rng: jax.Array,
               log_grad_norm: bool = True) -> tuple[TrainState, dict]:
    """One Adam step on the mean NLL; BN population statistics are updated by the model.

    Returns the new state and {'loss'} (+ 'grad_norm', the global gradient norm, when
    log_grad_norm). The norm is a diagnostic, not part of the update (unless the optimizer clips):
    at batch 4 on the MNIST MLP its extra pass over the 1.8M gradients costs ~25% of a step.
    """
    has_batch_stats = state.batch_stats is not None

    def loss_fn(params):
        out = state.apply_fn(_variables(state, params), batch, train=True,
                             rngs={"dropout": rng},
                             mutable=["batch_stats"] if has_batch_stats else False)
        logits, updates = out if has_batch_stats else (out, {})
        return jnp.mean(cross_entropy(logits, batch["label"])), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
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


def summarize(sums: Iterable[dict[str, jax.Array]], prefix: str) -> dict[str, float]:
    """Adds up eval_step sums over batches into '<prefix>_nll' and '<prefix>_error'."""
    total = {"nll": 0.0, "errors": 0.0, "count": 0.0}
    for s in jax.device_get(list(sums)):
        for k in total:
            total[k] += float(s[k])
    count = max(total["count"], 1.0)
    return {f"{prefix}_nll": total["nll"] / count, f"{prefix}_error": total["errors"] / count}


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device (all hosts' when jax.distributed is initialized)."""
    # Auto axis types: the compiler propagates shardings (the batch gather in `select_batch` has
    # a replicated operand and sharded indices, which explicit sharding would have us annotate).
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,))


def make_run_chunk(task: Task, mesh: jax.sharding.Mesh, log_grad_norm: bool = True) -> Callable:
    """jit(scan(train_step)) over the steps of a chunk; the state's buffers are donated.

    Each step's batch is constrained to be sharded over the data axis, so under several devices
    the forward and backward passes are data-parallel and BN's statistics cover the global batch.
    """
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))

    def run_chunk(state, device_data, chunk, rng):
        def body(state, item):
            batch = task.select_batch(device_data, item)
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            # Fold in the step so a resumed run draws the same dropout masks.
            return train_step(state, batch, jax.random.fold_in(rng, state.step), log_grad_norm)
        return jax.lax.scan(body, state, chunk)

    return jax.jit(run_chunk, donate_argnums=(0,))


def put_global(tree: Any, sharding: NamedSharding) -> Any:
    """Host arrays -> global arrays with `sharding`. Every process holds the whole value (the
    data pipeline is deterministic), so each fills in only the shards of its own devices: this is
    also what works under several processes (jax.distributed), where device_put cannot reach the
    other hosts' devices."""
    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(put, tree)


def shard_chunk(chunk: Any, mesh: jax.sharding.Mesh) -> Any:
    """Puts a host chunk [steps, batch, ...] on the devices, batch axis split over `data`."""
    return put_global(chunk, NamedSharding(mesh, P(None, DATA_AXIS)))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A copy of `tree` on every device of the mesh (all processes')."""
    return put_global(tree, NamedSharding(mesh, P()))


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss, gradient norm or evaluation metric."""


class RecordWithoutCheckpointError(RuntimeError):
    """The workdir holds metrics of an unfinished run but no checkpoint to continue it from."""


def _check_finite(values: dict[str, Any], round_index: int, round_name: str,
                  workdir: str) -> None:
    """Stops the run, naming the round, if any value (arrays of step metrics, or a row's
    floats: a float32 sum can overflow although every step's loss is finite) is not finite."""
    bad = [k for k, v in values.items()
           if isinstance(v, (float, np.ndarray)) and not np.all(np.isfinite(v))]
    if bad:
        last_good = (f"The last good checkpoint (after {round_name} {round_index}) is in "
                     f"{workdir}/checkpoints; " if round_index else "No checkpoint was saved; ")
        raise NonFiniteLossError(
            f"{' and '.join(bad)} stopped being finite in {round_name} {round_index + 1}. "
            f"{last_good}lower config.learning_rate (or set config.grad_clip_norm) and start a "
            f"new workdir.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       build_task: Callable[[ml_collections.ConfigDict], Task]) -> list[dict]:
    """Trains and evaluates as `config` says, recording everything in `workdir`.

    Every float32 matmul runs at config.matmul_precision. Under jax.distributed every process
    trains (data-parallel over all hosts' devices) and only process 0 writes the record.
    A finished record is returned as it is, without writing (read-only workdirs work). Otherwise
    one process at a time may write the workdir (a lock, released by the kernel if its holder
    dies), and the run resumes from its newest checkpoint that verifies.
    Returns the metric rows of the whole run (including rounds done before a resume); a process
    other than 0 returns the rows it computed.
    """
    existing = metrics.load_run(workdir)
    if existing is not None and existing.finished:
        metrics.check_config(workdir, config.to_dict(), ignore=metrics.RESUMABLE_CHANGES)
        logging.info("%s holds a finished record; nothing to do.", workdir)
        return existing.rows
    with jax.default_matmul_precision(config.matmul_precision):
        task = build_task(config)  # first: a run that cannot start (no data) leaves no record
        mesh = make_mesh()
        if task.examples_per_step % mesh.size:
            raise ValueError(f"batch size {task.examples_per_step} must be divisible by the "
                             f"{mesh.size} devices of the data-parallel mesh.")
        metrics.check_config(workdir, config.to_dict(), ignore=metrics.RESUMABLE_CHANGES)
        if jax.process_index() != 0:  # process 0 holds the lock for all of them
            return _train_and_evaluate(config, workdir, task, mesh)
        with locking.exclusive_or_fail(
                os.path.join(workdir, LOCK_FILE),
                f"another process (pid {{pid}}) is training in {workdir}. Wait for it to finish "
                f"or stop it; two writers would interleave one record."):
            return _train_and_evaluate(config, workdir, task, mesh)


def _train_and_evaluate(config, workdir: str, task: Task, mesh) -> list[dict]:
    writes_record = jax.process_index() == 0

    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    state = replicate(create_train_state(init_rng, task.model, task.init_batch,
                                         make_optimizer(config)), mesh)
    manager = checkpoints.make_manager(workdir)
    last_round, state = checkpoints.restore_latest(manager, state)
    first_round = 0 if last_round is None else last_round + 1
    recorded = metrics.read_metrics(workdir)
    if last_round is None and recorded:
        raise RecordWithoutCheckpointError(
            f"{workdir} records {len(recorded)} {task.round_name}(s) of an unfinished run but "
            f"holds no checkpoint to continue from. Move its {metrics.METRICS_FILE} away to "
            f"start over there, or use a new --workdir.")
    if writes_record:
        metrics.write_config(workdir, config.to_dict(), ignore=metrics.RESUMABLE_CHANGES)
        dropped = [r["round"] + 1 for r in recorded if r["round"] >= first_round]
        if dropped:
            logging.warning("Dropping %s(s) %s of %s: recorded after the last checkpoint, they "
                            "are recomputed.", task.round_name, dropped, metrics.METRICS_FILE)
        metrics.truncate_metrics(workdir, first_round - 1)
        metrics.append_provenance(workdir, first_round,
                                  provenance.collect(config.matmul_precision))
    if first_round:
        logging.info("Resuming %s after %s %d.", workdir, task.round_name, first_round)

    device_data = replicate(task.device_data, mesh)
    log_grad_norm = config.get("log_grad_norm", True)
    run_chunk = make_run_chunk(task, mesh, log_grad_norm)
    replicated = NamedSharding(mesh, P())
    jitted_eval_step = jax.jit(eval_step)
    # Evaluation batches come from the host; place them on every device of the mesh (a host
    # array cannot be mixed with global arrays under several processes).
    jit_eval_step = lambda state, batch: jitted_eval_step(state, put_global(batch, replicated))
    progress = metrics.Progress(task.num_rounds, first_round)
    rows = []  # this process's rows (the record's when it writes none)
    for round_index in range(first_round, task.num_rounds):
        start = time.time()
        step_metrics = []
        for chunk in task.train_chunks(round_index):
            state, chunk_metrics = run_chunk(state, device_data, shard_chunk(chunk, mesh),
                                             train_rng)
            step_metrics.append(chunk_metrics)
        step_metrics = {k: np.concatenate([np.asarray(m[k]) for m in step_metrics])
                        for k in step_metrics[0]}
        train_seconds = time.time() - start
        _check_finite(step_metrics, round_index, task.round_name, workdir)

        steps_done = int(state.step)
        row = {"round": round_index, "num_rounds": task.num_rounds,
               task.round_name: round_index + 1, "step": steps_done,
               "examples_seen": steps_done * task.examples_per_step,
               "train_loss_running": float(np.mean(step_metrics["loss"]))}
        if "grad_norm" in step_metrics:
            row["grad_norm_max"] = float(np.max(step_metrics["grad_norm"]))
        row.update(task.evaluate(state, jit_eval_step))
        row["examples_per_sec"] = len(step_metrics["loss"]) * task.examples_per_step / train_seconds
        row["round_seconds"] = time.time() - start
        _check_finite(row, round_index, task.round_name, workdir)
        if writes_record:
            metrics.append_metrics(workdir, row)
        progress.log(round_index, row)
        checkpoints.save(manager, round_index, state)
        rows.append(row)
    manager.close()
    return metrics.read_metrics(workdir) if writes_record else rows
