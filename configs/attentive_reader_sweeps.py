"""Sweeps over configs/attentive_reader.py (synthetic corpus), run by experiments/sweep.py.

  fig2       Fig. 2 analogue: LSTM, BN-LSTM, BN-everywhere, LN-LSTM, seeds 0-2 (seed 0 of every
             variant first).
  quick      The four variants, one seed, 1000 updates: what `make reproduce` runs.
  gain       LN gain initialization 0.1, seeds 0-2 (sec. 6.2). Its 1.0 arm is fig2's lnlstm runs,
             which have exactly that config; the gain plot reads both directories.
  lr_search  The CPU profile's learning rate, chosen on the synthetic validation split.
  long_lr_search
             Every variant at each of 1e-3, 2e-3 and 4e-3 for 30k updates (seed 0, the cheap
             LSTM and LN-LSTM first): the rate per variant, chosen on validation where the
             curves have flattened, for the long runs.
  long       Each variant at its rate from long_lr_search (LONG_RATES), 30k updates, seeds
             0-4, seed by seed so that every finished prefix is balanced (BN-everywhere, searched
             last, comes last in each seed).
  hard       The four variants on the harder corpus (configs/attentive_reader.py:hard: 300+
             token passages, 240 units), 30k updates, seeds 0-2, each at its long-run rate
             (HARD_RATES; nothing searched on this corpus). Hours a run on 2 cores: a GPU's job.

  python -m experiments.sweep --sweep=configs/attentive_reader_sweeps.py:fig2 \
      --workdir_root=runs/attentive_reader/fig2 --results_dir=results/attentive_reader/fig2
"""

from ml_collections import config_dict

VARIANTS = {  # name: overrides
    "lstm": {"cell": "lstm"},
    "bnlstm": {"cell": "bnlstm"},
    "bn_everywhere": {"cell": "bnlstm", "bn_everywhere": True},
    "lnlstm": {"cell": "lnlstm"},
}
QUICK_UPDATES, QUICK_EVAL_EVERY = 1000, 200
# Around the CPU profile's 2e-3; 2000 updates is where the quick profile's readers leave chance.
LR_SEARCH_RATES, LR_SEARCH_UPDATES = (1e-3, 2e-3, 4e-3), 2000


# Long enough for the validation curves to flatten on the CPU profile's corpus.
LONG_UPDATES, LONG_EVAL_EVERY = 30_000, 500


# The rate per variant with the lowest final validation error in long_lr_search (seed 0);
# tests/test_sweep.py checks these against the committed records.
LONG_RATES = {"lnlstm": 1e-3, "lstm": 2e-3, "bnlstm": 2e-3, "bn_everywhere": 1e-3}
LONG_SEEDS = (0, 1, 2, 3, 4)
# The harder corpus has no search of its own (a GPU's job): each variant at its long-run rate.
HARD_RATES = dict(LONG_RATES)
HARD_SEEDS = (0, 1, 2)

BASE_CONFIG = "configs/attentive_reader.py"
BASE_CONFIGS = {"hard": f"{BASE_CONFIG}:hard"}  # sweep -> its base config, where not the default


def _run(name, **overrides):
    return {"name": name, "overrides": overrides}


def fig2_runs(seeds=(0, 1, 2), **extra):
    return [_run(f"{variant}_seed{seed}", seed=seed, **overrides, **extra)
            for seed in seeds for variant, overrides in VARIANTS.items()]


def gain_runs(seeds=(0, 1, 2), gains=(0.1,)):
    return [_run(f"lnlstm_gain{gain:g}_seed{seed}", cell="lnlstm", ln_gain_init=gain, seed=seed)
            for seed in seeds for gain in gains]


def lr_search_runs():
    return [_run(f"{variant}_lr{lr:g}", learning_rate=lr, num_updates=LR_SEARCH_UPDATES,
                 eval_every=LR_SEARCH_UPDATES // 4, **VARIANTS[variant])
            for lr in LR_SEARCH_RATES for variant in ("lstm", "lnlstm")]


def long_lr_search_runs():
    return [_run(f"{variant}_lr{lr:g}", learning_rate=lr, num_updates=LONG_UPDATES,
                 eval_every=LONG_EVAL_EVERY, **VARIANTS[variant])
            for variant in ("lnlstm", "lstm", "bnlstm", "bn_everywhere")
            for lr in LR_SEARCH_RATES]


def long_runs():
    return [_run(f"{variant}_seed{seed}", seed=seed, learning_rate=lr,
                 num_updates=LONG_UPDATES, eval_every=LONG_EVAL_EVERY, **VARIANTS[variant])
            for seed in LONG_SEEDS for variant, lr in LONG_RATES.items()]


def hard_runs():
    return [_run(f"{variant}_seed{seed}", seed=seed, learning_rate=HARD_RATES[variant],
                 num_updates=LONG_UPDATES, eval_every=LONG_EVAL_EVERY, **VARIANTS[variant])
            for seed in HARD_SEEDS for variant in ("lnlstm", "lstm", "bnlstm", "bn_everywhere")]


SWEEPS = {
    "fig2": fig2_runs,
    "quick": lambda: fig2_runs(seeds=(0,), num_updates=QUICK_UPDATES,
                               eval_every=QUICK_EVAL_EVERY),
    "gain": gain_runs,
    "lr_search": lr_search_runs,
    "long_lr_search": long_lr_search_runs,
    "long": long_runs,
    "hard": hard_runs,
}


def get_config(name: str) -> config_dict.ConfigDict:
    if name not in SWEEPS:
        raise KeyError(f"unknown sweep {name!r}; choose one of {sorted(SWEEPS)}.")
    return config_dict.ConfigDict({
        "driver": "experiments.attentive_reader",
        "task": "lnrepro.tasks.attentive_reader",
        "base_config": BASE_CONFIGS.get(name, BASE_CONFIG),
        "runs": SWEEPS[name](),
    })
