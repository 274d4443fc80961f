"""Where the first update goes: the gradient of a run's first training step.

  .venv/bin/python -m scripts.init_gradients --config=configs/attentive_reader.py:hard \
      --config.cell=lnlstm
  .venv/bin/python -m scripts.init_gradients      # the README's tables (make diagnostics)

Builds a run's task and initial state as the trainer does and takes the gradient of its first
step: the same initial parameters, first batch and dropout rng (from the config's seed), at the
config's matmul precision. With --config: the gradient's global norm, the factor by which the
config's gradient clip scales it, and the parameters with the largest gradient norms. Without:
the global norm for every reader variant on several corpora and widths (GRID), then the
largest parameters of one cell of it (DETAIL) and its first training steps' norms. They show the
LN-LSTM's first gradient growing with the passage length (README, the harder reader corpus).
"""

from __future__ import annotations

import contextlib
import importlib
import statistics
import sys

import jax
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from experiments import common
from lnrepro import train
from lnrepro.data import synthetic_cloze
from lnrepro.tasks import attentive_reader

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, as the drivers take it (configs/<task>.py[:arg], then "
    "--config.key=value); none: the README's tables (GRID and DETAIL).", lock_config=True)
_TOP = flags.DEFINE_integer("top", 8, "How many parameters to list, largest gradient first.")

READER = "configs/attentive_reader.py"
# Row label: the config argument it adds to each variant's. The second row changes only the
# passage length of the first; the third changes the corpus's facts, distractors and entities too.
GRID = {
    "CPU profile, 64 units": "",
    "CPU profile + 30 filler sentences, 64 units": "synthetic.num_filler=30",
    "harder corpus, 64 units": "hard,features=64",
    "harder corpus, 240 units": "hard",
}
VARIANTS = {"LSTM": "cell=lstm", "BN-LSTM": "cell=bnlstm",
            "BN-everywhere": "cell=bnlstm,bn_everywhere=True", "LN-LSTM": "cell=lnlstm"}
DETAIL = f"{READER}:hard,cell=lnlstm"
DETAIL_STEPS = 40


def task_module(config_spec: str):
    """configs/<task>.py[:arg] -> lnrepro.tasks.<task>."""
    config_path = config_spec.partition(":")[0]
    name = config_path.rsplit("/", 1)[-1].removesuffix(".py")
    try:
        return importlib.import_module(f"lnrepro.tasks.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"--config={config_path!r}: no task lnrepro.tasks.{name}; give one of "
                         "configs/pi_mnist.py or configs/attentive_reader.py.") from None


def first_step_gradients(config, task: train.Task) -> dict[str, np.ndarray]:
    """Parameter path -> its gradient in the first training step of a run of `config`: the
    trainer's initial state, first batch and dropout rng."""
    states, train_rngs = train.create_member_states([config], [task], train.make_mesh())
    state = jax.device_get(states[0])
    rng = train.step_rng(train_rngs[0], 0)
    with jax.default_matmul_precision(config.matmul_precision):
        _, grads, _ = jax.jit(train.loss_and_gradients)(state, train.first_batch(task), rng)
    return {jax.tree_util.keystr(path): np.asarray(g)
            for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]}


def first_steps_norms(config, task: train.Task, steps: int) -> list[float]:
    """The logged global gradient norm of each of a run's first `steps` training steps (at least
    `steps`: whole chunks), from the trainer's own chunk program."""
    mesh = train.make_mesh()
    states, train_rngs = train.create_member_states([config], [task], mesh)
    state, train_chunk, norms = states[0], train.make_train_chunk(task, mesh), []
    with jax.default_matmul_precision(config.matmul_precision):
        for item in task.train_chunks(0):
            state, step_metrics = train_chunk(state, item, train_rngs[0])
            norms += [float(n) for n in np.asarray(step_metrics["grad_norm"])]
            if len(norms) >= steps:
                break
    return norms


def load(config_spec: str, config) -> tuple:
    """(resolved config, its first step's gradients) for `config`, loaded from `config_spec`
    ('configs/<task>.py[:arg]')."""
    module = task_module(config_spec)
    config = module.resolve_config(config)
    return config, first_step_gradients(config, module.build_task(config))


def load_spec(spec: str) -> tuple:
    """load() for 'configs/<task>.py[:arg]'."""
    return load(spec, common.load_config_file(spec))


def global_norm(gradients: dict[str, np.ndarray]) -> float:
    return float(optax.global_norm(list(gradients.values())))


def report(gradients: dict[str, np.ndarray], clip_norm: float | None, top: int) -> str:
    """The global norm, the clip's scale, and the `top` parameters by gradient norm."""
    total = global_norm(gradients)
    lines = [f"global gradient norm: {total:.4g}"]
    if clip_norm:
        scale = min(1.0, clip_norm / total) if total > 0 else 1.0
        lines.append(f"gradient clip at {clip_norm:g}: the gradient is scaled by {scale:.3g}")
    lines += ["", "| parameter | gradient norm | share of the squared norm |", "|---|---|---|"]
    norms = {path: float(np.linalg.norm(g)) for path, g in gradients.items()}
    for path, norm in sorted(norms.items(), key=lambda kv: -kv[1])[:top]:
        share = norm ** 2 / total ** 2 if total > 0 else 0.0
        lines.append(f"| {path} | {norm:.4g} | {share:.1%} |")
    return "\n".join(lines)


def median_passage_tokens(config) -> int:
    """The median passage length of a synthetic-corpus config's validation split."""
    corpus = attentive_reader.synthetic_config(config)
    return int(statistics.median(len(story.split("\n\n")[1].split())
                                 for story in synthetic_cloze.generate_split(corpus, "validation")))


def grid_table(grid: dict[str, str], variants: dict[str, str], extra: str = "") -> str:
    """One row per corpus and width of `grid`, one column per reader variant: the global norm
    of the first step's gradient. `extra` is appended to every config argument."""
    lines = ["| corpus, width | median passage (tokens) | " + " | ".join(variants) + " |",
             "|---|---|" + "---|" * len(variants)]
    settings = set()
    for label, arg in grid.items():
        cells = []
        for variant in variants.values():
            config, gradients = load_spec(
                f"{READER}:{','.join(filter(None, (arg, variant, extra)))}")
            cells.append(f"{global_norm(gradients):.3g}")
            settings.add((config.seed, config.grad_clip_norm, config.dropout_rate))
        lines.append(f"| {label} | {median_passage_tokens(config)} | " + " | ".join(cells) + " |")
    described = "; ".join(f"seed {seed}, dropout {dropout:g}, gradient clip at norm {clip:g}"
                          for seed, clip, dropout in sorted(settings))
    lines += ["", f"Global norm of the first training step's gradient (before the clip; "
                  f"{described}; BN on batch statistics)."]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    # Data preparation (TFDS) prints to stdout: keep it out of the saved tables.
    with contextlib.redirect_stdout(sys.stderr):
        text = readme_tables() if _CONFIG.value is None else report_of_flag_config()
    print(text)


def readme_tables() -> str:
    """GRID's table, then DETAIL's largest parameters and first steps' norms."""
    grid = grid_table(GRID, VARIANTS)
    config, gradients = load_spec(DETAIL)
    norms = first_steps_norms(config, task_module(READER).build_task(config), DETAIL_STEPS)
    return (f"{grid}\n\nThe largest parameter gradients of `{DETAIL}`:\n\n"
            f"{report(gradients, config.grad_clip_norm, _TOP.value)}\n\n"
            f"Its first {DETAIL_STEPS} training steps' global gradient norms (before the clip): "
            f"{', '.join(f'{n:.2g}' for n in norms[:DETAIL_STEPS])}.")


def report_of_flag_config() -> str:
    config, gradients = load(config_flags.get_config_filename(flags.FLAGS["config"]),
                             _CONFIG.value)
    return report(gradients, config.get("grad_clip_norm"), _TOP.value)


if __name__ == "__main__":
    app.run(main)
