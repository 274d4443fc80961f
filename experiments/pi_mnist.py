"""Permutation-invariant MNIST driver: the only place its flags are defined.

  python -m experiments.pi_mnist --config=configs/pi_mnist.py --config.norm=layer \
      --config.batch_size=4 --workdir=runs/pi_mnist/layer_bs4_seed0

Re-running the same command resumes from the last checkpoint in --workdir.
"""

from experiments import common
from lnrepro.tasks import pi_mnist

if __name__ == "__main__":
    common.run(pi_mnist, "Config file (configs/pi_mnist.py[:arg]).")
