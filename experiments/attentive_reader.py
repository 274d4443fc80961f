"""Attentive reader driver: the only place its flags are defined.

  python -m experiments.attentive_reader --config=configs/attentive_reader.py \
      --config.cell=lnlstm --workdir=runs/attentive_reader/lnlstm_seed0

Re-running the same command resumes from the last checkpoint in --workdir.
"""

from experiments import common
from lnrepro.tasks import attentive_reader

if __name__ == "__main__":
    common.run(attentive_reader, "Config file (configs/attentive_reader.py[:arg]).")
