"""Permutation-invariant MNIST driver: the only place its flags are defined.

  python -m experiments.pi_mnist --config=configs/pi_mnist.py --config.norm=layer \
      --config.batch_size=4 --workdir=runs/pi_mnist/layer_bs4_seed0

Re-running the same command resumes from the last checkpoint in --workdir.
"""

from absl import app, flags
from ml_collections import config_flags

from experiments import common
from lnrepro import train
from lnrepro.tasks import pi_mnist

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/pi_mnist.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where config.json, metrics.jsonl and "
                               "checkpoints go; re-running resumes.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    common.setup_runtime(_CONFIG.value)
    config = pi_mnist.resolve_config(_CONFIG.value)
    train.train_and_evaluate(config, _WORKDIR.value, pi_mnist.build_task)


if __name__ == "__main__":
    app.run(main)
