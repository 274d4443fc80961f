"""Attentive reader driver: the only place its flags are defined.

  python -m experiments.attentive_reader --config=configs/attentive_reader.py \
      --config.cell=lnlstm --workdir=runs/attentive_reader/lnlstm_seed0

Re-running the same command resumes from the last checkpoint in --workdir.
"""

from absl import app, flags
from ml_collections import config_flags

from experiments import common
from lnrepro import train
from lnrepro.tasks import attentive_reader

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/attentive_reader.py",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where config.json, metrics.jsonl and "
                               "checkpoints go; re-running resumes.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    common.setup_runtime(_CONFIG.value)
    config = attentive_reader.resolve_config(_CONFIG.value)
    train.train_and_evaluate(config, _WORKDIR.value, attentive_reader.build_task)


if __name__ == "__main__":
    app.run(main)
