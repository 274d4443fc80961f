"""The main job: run a profile's sweeps, then rebuild its figures and tables from the records.

  .venv/bin/python -m scripts.reproduce --profile=quick   # `make reproduce` (README: runtimes)
  .venv/bin/python -m scripts.reproduce --profile=full    # `make reproduce-full`: paper length

quick writes runs/quick/ (records, figures, tables as <name>.md; nothing committed). full writes
its records to results/ (commit them as runs finish) and its figures beside them. Both skip
finished runs, so an interrupted reproduction continues where it stopped. scripts/reports.py
says which sweeps each profile runs and what is built from them.
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags

from scripts import reports

_PROFILE = flags.DEFINE_enum("profile", "quick", sorted(reports.PROFILES),
                             "Which reproduction to run.")


def run_sweep(sweep: str, workdir_root: str, records_dir: str,
              reuse_from: tuple[str, ...] = ()) -> None:
    command = [sys.executable, "-m", "experiments.sweep", f"--sweep={sweep}",
               f"--workdir_root={workdir_root}", f"--results_dir={records_dir}"]
    command += [f"--reuse_from={directory}" for directory in reuse_from]
    subprocess.run(command, check=True)


def reproduce(profile: reports.Profile) -> str:
    """Runs the profile's sweeps in order, then builds its figures and tables; returns the
    tables (also written as <name>.md into its out_dir)."""
    for name in profile.sweeps:
        source = profile.sources[name]
        run_sweep(source.sweep, os.path.join(profile.workdir_root, source.directory),
                  os.path.join(profile.records_root, source.directory),
                  tuple(os.path.join(profile.records_root, directory)
                        for directory in source.reuse_from))
    blocks = reports.build(profile, computed=False)
    os.makedirs(profile.out_dir, exist_ok=True)
    for name, text in blocks.items():
        with open(os.path.join(profile.out_dir, name.replace(" ", "_") + ".md"), "w") as f:
            f.write(text + "\n")
    figures = sorted(f for f in os.listdir(profile.out_dir) if f.endswith(".png"))
    return "\n\n".join([f"Figures in {profile.out_dir}/: {', '.join(figures)}"]
                       + [f"{name}:\n\n{text}" for name, text in blocks.items()]) + "\n"


def main(argv):
    del argv
    print(reproduce(reports.PROFILES[_PROFILE.value]))


if __name__ == "__main__":
    app.run(main)
