"""The main job: run the experiments' sweeps, then rebuild every figure and table from the records.

  python -m scripts.reproduce --profile=quick   # `make reproduce`: a few epochs, ~8 min on 2 cores
  python -m scripts.reproduce --profile=full    # `make reproduce-full`: the paper-length runs

quick writes runs/quick/ (records, figures, tables; nothing committed). full writes its records to
results/ (commit them as runs finish) and its figures beside them. Both skip finished runs, so an
interrupted reproduction continues where it stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags

from lnrepro import metrics
from scripts import plot_ablation, plot_curves, plot_reader, results_table

PROFILES = {
    # profile: (pi_mnist sweep, workdir root, records dir, figure/table dir)
    "quick": ("quick", "runs/quick/workdirs/pi_mnist", "runs/quick/records/pi_mnist",
              "runs/quick"),
    "full": ("fig6", "runs/pi_mnist/fig6", "results/pi_mnist/fig6", "results"),
}

READER_PROFILES = {
    # profile: [(sweep, workdir root, records dir, figure)], figures/tables beside PROFILES' out_dir
    "quick": [("quick", "runs/quick/workdirs/attentive_reader", "runs/quick/records/attentive_reader",
               "attentive_reader_fig2.png")],
    "full": [("fig2", "runs/attentive_reader/fig2", "results/attentive_reader/fig2",
              "attentive_reader_fig2.png"),
             ("gain", "runs/attentive_reader/gain", "results/attentive_reader/gain",
              "attentive_reader_gain.png")],
}

_PROFILE = flags.DEFINE_enum("profile", "quick", sorted(PROFILES), "Which reproduction to run.")


def run_sweep(sweep: str, workdir_root: str, records_dir: str) -> None:
    command = [sys.executable, "-m", "experiments.sweep", f"--sweep={sweep}",
               f"--workdir_root={workdir_root}", f"--results_dir={records_dir}"]
    subprocess.run(command, check=True)


def reproduce_pi_mnist(profile: str) -> str:
    sweep, workdir_root, records_dir, out_dir = PROFILES[profile]
    run_sweep(f"configs/pi_mnist_sweeps.py:{sweep}", workdir_root, records_dir)
    records = metrics.load_runs(records_dir)
    figure = plot_curves.plot_fig6(records, os.path.join(out_dir, "pi_mnist_fig6.png"))
    text = results_table.table(records)
    with open(os.path.join(out_dir, "pi_mnist_table.md"), "w") as f:
        f.write(text + "\n")
    return f"Permutation-invariant MNIST ({profile}): {figure}\n\n{text}\n"


def reproduce_batch_size_ablation() -> str:
    """The wide batch-size sweep (full profile only: ~45 min a seed on 2 cores)."""
    records_dir = "results/pi_mnist/batch_sizes"
    run_sweep("configs/pi_mnist_sweeps.py:batch_sizes", "runs/pi_mnist/batch_sizes", records_dir)
    records = metrics.load_runs(records_dir)
    figure = plot_ablation.plot(records, "results/pi_mnist_batch_sizes.png")
    return f"Batch-size ablation: {figure}\n\n{plot_ablation.table(records)}\n"


def reproduce_reader(profile: str) -> str:
    out_dir = PROFILES[profile][3]
    report = []
    for sweep, workdir_root, records_dir, figure in READER_PROFILES[profile]:
        run_sweep(f"configs/attentive_reader_sweeps.py:{sweep}", workdir_root, records_dir)
        records = metrics.load_runs(records_dir)
        if sweep == "gain":  # the gain 1.0 arm is fig2's lnlstm runs (same config)
            records += metrics.load_runs(READER_PROFILES[profile][0][2])
        path = plot_reader.plot(records, os.path.join(out_dir, figure), gain=sweep == "gain")
        report.append(f"Attentive reader, {sweep} ({profile}): {path}")
        if sweep != "gain":
            text = plot_reader.table(records)
            with open(os.path.join(out_dir, "attentive_reader_table.md"), "w") as f:
                f.write(text + "\n")
            report.append(text)
    return "\n\n".join(report) + "\n"


def main(argv):
    del argv
    print(reproduce_pi_mnist(_PROFILE.value))
    print(reproduce_reader(_PROFILE.value))
    if _PROFILE.value == "full":
        print(reproduce_batch_size_ablation())


if __name__ == "__main__":
    app.run(main)
