"""Where the first update goes: the training gradient at initialization.

  .venv/bin/python -m scripts.init_gradients --config=configs/attentive_reader.py:hard,cell=lnlstm
  .venv/bin/python -m scripts.init_gradients      # the README's table (make diagnostics)

Builds a run's task and initial state as training does (from the config's seed) and takes the
gradient of the training loss on the task's first training batch (dropout on, BN on batch
statistics). With --config: its global norm, the factor by which the config's gradient clip
scales it, and the parameters with the largest gradient norms. Without: the global norm for
every reader variant on the two synthetic corpora (GRID), which shows the LN-LSTM's gradient
exploding with the passage length (README, the harder reader corpus).
"""

from __future__ import annotations

import importlib

import jax
import numpy as np
import optax
from absl import app, flags

from experiments import common
from lnrepro import train

_CONFIG = flags.DEFINE_string("config", None, "Config file, as the drivers take it "
                              "(configs/<task>.py[:arg]); none: the README's table (GRID).")
_TOP = flags.DEFINE_integer("top", 8, "How many parameters to list, largest gradient first.")


def task_module(config_spec: str):
    """configs/<task>.py[:arg] -> lnrepro.tasks.<task>."""
    name = config_spec.partition(":")[0].rsplit("/", 1)[-1].removesuffix(".py")
    try:
        return importlib.import_module(f"lnrepro.tasks.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"--config={config_spec!r}: no task lnrepro.tasks.{name}; give one of "
                         "configs/pi_mnist.py or configs/attentive_reader.py.") from None


def initial_gradients(config, task: train.Task) -> dict[str, np.ndarray]:
    """Parameter path -> its gradient at the initial state of a run of `config`."""
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    state = train.create_train_state(init_rng, task.model, task.init_batch,
                                     train.make_optimizer(config))
    step_rng = jax.random.fold_in(train_rng, 0)
    _, grads, _ = jax.jit(train.loss_and_gradients)(state, task.init_batch, step_rng)
    return {jax.tree_util.keystr(path): np.asarray(g)
            for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]}


def report(gradients: dict[str, np.ndarray], clip_norm: float | None, top: int) -> str:
    norms = {path: float(np.linalg.norm(g)) for path, g in gradients.items()}
    total = float(optax.global_norm(list(gradients.values())))
    lines = [f"global gradient norm: {total:.4g}"]
    if clip_norm:
        scale = min(1.0, clip_norm / total) if total > 0 else 1.0
        lines.append(f"gradient clip at {clip_norm:g}: the update is scaled by {scale:.3g}")
    lines += ["", "| parameter | gradient norm | share of the squared norm |", "|---|---|---|"]
    for path, norm in sorted(norms.items(), key=lambda kv: -kv[1])[:top]:
        share = norm ** 2 / total ** 2 if total > 0 else 0.0
        lines.append(f"| {path} | {norm:.4g} | {share:.1%} |")
    return "\n".join(lines)


READER = "configs/attentive_reader.py"
GRID = {  # row label: the config argument it adds to each variant's
    "CPU profile (~50 tokens), 64 units": "",
    "harder corpus (~350 tokens), 64 units": "hard,features=64",
    "harder corpus (~350 tokens), 240 units": "hard",
}
VARIANTS = {"LSTM": "cell=lstm", "BN-LSTM": "cell=bnlstm",
            "BN-everywhere": "cell=bnlstm,bn_everywhere=True", "LN-LSTM": "cell=lnlstm"}


def global_norm(config_spec: str) -> float:
    """The global norm of the initial gradient of a run of `config_spec`."""
    module = task_module(config_spec)
    config = module.resolve_config(common.load_config_file(config_spec))
    gradients = initial_gradients(config, module.build_task(config))
    return float(optax.global_norm(list(gradients.values())))


def grid_table(grid: dict[str, str], variants: dict[str, str], extra: str = "") -> str:
    """One row per corpus and width of `grid`, one column per reader variant: the global
    gradient norm at initialization (seed 0). `extra` is appended to every config argument."""
    lines = ["| corpus, width | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    for label, arg in grid.items():
        norms = [global_norm(f"{READER}:{','.join(filter(None, (arg, variant, extra)))}")
                 for variant in variants.values()]
        lines.append(f"| {label} | " + " | ".join(f"{n:.3g}" for n in norms) + " |")
    lines += ["", "Global norm of the first training gradient (seed 0, dropout on, BN on batch "
              "statistics); the gradient clip is at norm 10."]
    return "\n".join(lines)


def main(argv):
    del argv
    if _CONFIG.value is None:
        print(grid_table(GRID, VARIANTS))
        return
    module = task_module(_CONFIG.value)
    config = module.resolve_config(common.load_config_file(_CONFIG.value))
    gradients = initial_gradients(config, module.build_task(config))
    print(report(gradients, config.get("grad_clip_norm"), _TOP.value))


if __name__ == "__main__":
    app.run(main)
