"""The attentive reader: LSTM vs BN-LSTM vs BN-everywhere vs LN-LSTM (Ba et al. 2016, sec. 6.2).

Default (`configs/attentive_reader.py`): the CPU profile on the synthetic cloze corpus
(lnrepro/data/synthetic_cloze.py), which runs anywhere. One run:

  python -m experiments.attentive_reader --config=configs/attentive_reader.py \
      --config.cell=lnlstm --workdir=runs/attentive_reader/lnlstm_seed0

`--config=configs/attentive_reader.py:paper` gives the paper's settings for the real CNN corpus
(needs --config.manual_dir=<dir holding cnn/questions>; days of compute on a CPU).
"""

import os

from ml_collections import config_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.experiment = "attentive_reader"
    c.data_dir = os.path.join(REPO, "data", "tfds")
    c.corpus = "synthetic"  # synthetic | cnn
    c.manual_dir = ""  # cnn: the directory holding cnn/questions/{training,validation,test}
    c.dataset_config = "full"  # full | top4 (top4: the 4 best-matching sentences, [RBN])
    c.vocab_min_count = 1
    # The synthetic corpus (our CPU stand-in for CNN; see the module docstring for what it can
    # and cannot say about the paper's claim).
    # Difficulty: 4 facts (2 of them distractors) and 1 filler sentence, ~50 tokens a passage:
    # on 2 cores the reader starts to learn within ~1000 updates (the generator's default, 6
    # facts and 3 fillers, took longer than a session's budget allows; README).
    c.synthetic = config_dict.ConfigDict(dict(
        num_train=20_000, num_validation=2_000, num_test=2_000, num_entities=8, num_facts=4,
        num_distractors=2, num_filler=1, paraphrase_prob=0.5, seed=0))

    # Model (cooijmanstim/Attentive_reader, ryankiros/layer-norm README).
    c.cell = "lnlstm"  # lstm | bnlstm | lnlstm
    c.bn_everywhere = False  # BN on the attention and readout terms too ([AR-code] bnff)
    c.ln_gain_init = 1.0  # sec. 6.2: 1.0 was significantly better than 0.1
    c.features = 64  # CPU profile (the paper: 240)
    c.dropout_rate = 0.1  # CPU profile, our choice (0.5 slowed early learning); paper: 0.5
    c.permute_entities = True  # entity ids permuted per training minibatch, not at validation

    # Optimization: Adam, clip global norm 10 (paper). The CPU profile's learning rate, batch
    # size and dropout are our choice from short runs on the synthetic validation split (README).
    c.learning_rate = 2e-3
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.adam_eps = 1e-8
    c.grad_clip_norm = 10.0
    c.batch_size = 32
    c.eval_batch_size = 200
    c.bucket_width = 32  # documents padded to a multiple of this: few shapes, few compiles
    c.num_updates = 6000
    c.eval_every = 250  # the paper: 1000
    # Log the global gradient norm of every step (grad_norm_max per interval). Free here: the
    # gradient clipping computes it anyway.
    c.log_grad_norm = True
    # float32 matmul precision for training and evaluation (jax.default_matmul_precision).
    # "highest": true float32 products on every backend, so a record means the same on a CPU and
    # a GPU; that is what a reproduction needs. "default" lets a GPU use TF32 (a 10-bit mantissa)
    # and a TPU bfloat16 passes: faster there, but the numbers then depend on the backend (on a
    # CPU both are float32). Recorded in config.json and provenance.json.
    c.matmul_precision = "highest"
    c.seed = 0
    # Several hosts: jax.distributed.initialize() reads the processes from the cluster
    # environment (SLURM's srun, Open MPI, Kubernetes). Without a cluster manager, the drivers'
    # --coordinator_address, --num_processes and --process_id name them instead (README).
    c.distributed = False

    if arg == "paper":
        c.corpus = "cnn"
        c.dataset_config = "top4"
        c.features = 240
        c.dropout_rate = 0.5
        c.learning_rate = 8e-5
        c.batch_size = 64
        c.num_updates = 800_000  # Fig. 2's x axis
        c.eval_every = 1000
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'paper' or nothing.")
    return c
