"""Sweeps over configs/pi_mnist.py, run by experiments/sweep.py (finished runs are skipped).

  fig6        Fig. 6: norm in {none, batch, layer} x batch size {128, 4}, 60 epochs, seeds 0-9,
              most informative first: every norm and batch size at seed 0, then the cheap
              batch-128 runs of the other seeds, then batch 4's (README, runtimes table). Each
              norm at configs/pi_mnist.py's default rate (SEARCHED_LEARNING_RATES).
  fig6_short_search
              Fig. 6 at batch 128, seeds 0-4, at the short search's rates: the batch-128 runs
              made before the 60-epoch search chose other rates, kept as a check of how much
              the claims depend on the rate (5 seeds: the rank test cannot settle 3 against 3).
  quick       Fig. 6 in a few epochs, one seed, at the short search's rates: what
              `make reproduce` runs.
  batch_sizes Final test error vs batch size 1, 2, 4, ..., 256 at an equal budget of examples
              seen (the same number of epochs, 3), seeds 0-2, at the short search's rates (a
              3-epoch search). BN is left out at batch size 1 (one example has no batch
              variance). Batch 1 then gets seeds 3-7 (BATCH_SIZE_MORE_SEEDS): LN against no
              normalization there was not settled at 3 seeds, and the README's power estimate
              from those 3 asked for 8 per norm.
  batch_sizes_long
              The same at 20 epochs, at the default rates: where each norm ends, not only how
              it starts.
  lr_search   The learning-rate search on the validation split that chose the defaults in
              configs/pi_mnist.py (short runs; README, "Choices the paper leaves open").
  lr_search_full
              A fair search: 7 rates from 1e-5 to 3e-3, the full 60 epochs, seeds 0-1, for every
              (norm, batch size 4 or 128), chosen on the validation split. Batch 128's runs (both
              seeds, ~3 minutes each on 2 cores) go before batch 4's (~40 minutes each on 2 cores,
              an hour on one pinned core: README, runtimes table), so that one half of the search
              is complete long before the other.
  bn_controls BN's open choices at batch 128 and 4, 60 epochs, seeds 0-4 at batch 128 (a few
              minutes a run) and 0-2 at batch 4 (40): BN on the hidden layers only (as LN),
              batch statistics at evaluation, and the other variance (biased at batch 4, n - 1
              at 128). Each differs from fig6's BN runs in one setting.

  python -m experiments.sweep --sweep=configs/pi_mnist_sweeps.py:fig6 \
      --workdir_root=runs/pi_mnist/fig6 --results_dir=results/pi_mnist/fig6
"""

from ml_collections import config_dict

from configs import pi_mnist
from lnrepro.tasks.pi_mnist import searched_learning_rate

NORMS = ("layer", "batch", "none")  # the order runs go in: LN first
QUICK_EPOCHS = 3
BATCH_SIZE_EPOCHS = 3
# Batch size -> seeds the 3-epoch ablation runs there after its seeds 0-2, added after a power
# estimate from those 3 (README, "How many seeds would settle the open claims").
BATCH_SIZE_MORE_SEEDS = {1: range(3, 8)}
LR_SEARCH = {128: ((3e-4, 1e-3, 3e-3), 3), 4: ((3e-5, 1e-4, 3e-4), 1)}  # rates, epochs
# 1e-5 to 3e-3, evenly spaced on a log scale (2 significant digits).
LR_SEARCH_FULL_RATES = (1e-5, 2.6e-5, 6.7e-5, 1.7e-4, 4.5e-4, 1.2e-3, 3e-3)
BN_CONTROLS = {  # name: overrides of fig6's BN run
    "hidden_only": lambda bs: {"normalize_logits": False},
    "batch_stats_eval": lambda bs: {"bn_eval_statistics": "batch"},
    "other_variance": lambda bs: {"bn_unbiased_variance": bs > 16},
}


def _run(name, **overrides):
    return {"name": name, "overrides": overrides}


def _rate(table, norm, batch_size):
    """No override (the config's default rate) for table None; else the rate `table` gives."""
    if table is None:
        return {}
    return {"learning_rate": searched_learning_rate(table, norm, batch_size)}


def fig6_runs(seeds=tuple(range(10)), num_epochs=60, batch_sizes=(128, 4), rates=None):
    order = ([(seeds[0], bs) for bs in batch_sizes]
             + [(s, bs) for bs in batch_sizes for s in seeds[1:]])
    return [_run(f"{norm}_bs{bs}_seed{seed}", norm=norm, batch_size=bs, seed=seed,
                 num_epochs=num_epochs, **_rate(rates, norm, bs))
            for seed, bs in order for norm in NORMS]


def batch_size_runs(seeds=(0, 1, 2), num_epochs=BATCH_SIZE_EPOCHS, rates=None, more_seeds=None):
    """Every norm at batch 256 down to 1 for each seed, then `more_seeds` (batch size -> further
    seeds run at that batch size only)."""
    order = [(seed, bs) for seed in seeds for bs in (256, 128, 64, 32, 16, 8, 4, 2, 1)]
    order += [(seed, bs) for bs, extra in (more_seeds or {}).items() for seed in extra]
    return [_run(f"{norm}_bs{bs}_seed{seed}", norm=norm, batch_size=bs, seed=seed,
                 num_epochs=num_epochs, **_rate(rates, norm, bs))
            for seed, bs in order for norm in NORMS if not (norm == "batch" and bs == 1)]


def lr_search_runs():
    return [_run(f"{norm}_bs{bs}_lr{lr:g}", norm=norm, batch_size=bs, learning_rate=lr,
                 num_epochs=epochs)
            for bs, (rates, epochs) in LR_SEARCH.items() for lr in rates for norm in NORMS]


def lr_search_full_runs(seeds=(0, 1)):
    return [_run(f"{norm}_bs{bs}_lr{lr:g}_seed{seed}", norm=norm, batch_size=bs,
                 learning_rate=lr, seed=seed, num_epochs=60)
            for bs in (128, 4) for seed in seeds for lr in LR_SEARCH_FULL_RATES
            for norm in NORMS]


BN_CONTROL_SEEDS = {128: range(5), 4: range(3)}  # batch size: seeds


def bn_control_runs(seeds=BN_CONTROL_SEEDS):
    """Most informative first, as fig6: every control at seed 0 at each batch size, then the
    other seeds, the cheap large batches' before the small ones'."""
    order = sorted(((seed, bs) for bs, bs_seeds in seeds.items() for seed in bs_seeds),
                   key=lambda pair: (pair[0] > 0, -pair[1], pair[0]))
    return [_run(f"{control}_bs{bs}_seed{seed}", norm="batch", batch_size=bs, seed=seed,
                 num_epochs=60, **overrides(bs))
            for seed, bs in order for control, overrides in BN_CONTROLS.items()]


SWEEPS = {
    "fig6": fig6_runs,
    "fig6_short_search": lambda: fig6_runs(seeds=range(5), batch_sizes=(128,),
                                           rates=pi_mnist.SHORT_SEARCH_LEARNING_RATES),
    "quick": lambda: fig6_runs(seeds=(0,), num_epochs=QUICK_EPOCHS,
                               rates=pi_mnist.SHORT_SEARCH_LEARNING_RATES),
    "batch_sizes": lambda: batch_size_runs(rates=pi_mnist.SHORT_SEARCH_LEARNING_RATES,
                                           more_seeds=BATCH_SIZE_MORE_SEEDS),
    "lr_search": lr_search_runs,
    "batch_sizes_long": lambda: batch_size_runs(num_epochs=20),
    "lr_search_full": lr_search_full_runs,
    "bn_controls": bn_control_runs,
}


def get_config(name: str) -> config_dict.ConfigDict:
    if name not in SWEEPS:
        raise KeyError(f"unknown sweep {name!r}; choose one of {sorted(SWEEPS)}.")
    return config_dict.ConfigDict({
        "driver": "experiments.pi_mnist",
        "task": "lnrepro.tasks.pi_mnist",
        "base_config": "configs/pi_mnist.py",
        "runs": SWEEPS[name](),
    })
