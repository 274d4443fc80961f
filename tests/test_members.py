"""Many runs in one program: K members vmapped in one jitted program train what K single runs
train, each writing its own record; a killed group resumes to the same metrics; a diverging
member is stopped and recorded while the others go on.

On the CPU, train_members runs its members one after another (train.vmaps_members); the
`vmapped` fixture forces the vmapped program an accelerator runs, so both are tested here."""


import numpy as np
import pytest

from lnrepro import metrics, train
from lnrepro.tasks import attentive_reader
from tests import test_attentive_reader
from tests.test_train import build, killed_after, small_config, without_timing

COMPARED = ("train_loss_running", "train_nll", "valid_nll", "test_nll", "valid_error",
            "test_error")


@pytest.fixture
def vmapped(monkeypatch):
    """train_members stacks and vmaps its members, as on an accelerator."""
    monkeypatch.setattr(train, "vmaps_members", lambda num_members: num_members > 1)


def _assert_member_matches_single(member_rows, single_rows, keys, rtol):
    assert [r["round"] for r in member_rows] == [r["round"] for r in single_rows]
    for member_row, single_row in zip(member_rows, single_rows):
        assert member_row["step"] == single_row["step"]
        for key in keys:
            if key in single_row:
                np.testing.assert_allclose(member_row[key], single_row[key], rtol=rtol,
                                           atol=1e-7, err_msg=key)


def _mnist_members(data_dir):
    """BN at batch 8 (n - 1 variance, population statistics): three members with their own
    seeds and learning rates."""
    return [small_config(data_dir, norm="batch", batch_size=8, num_epochs=2, seed=seed,
                         learning_rate=lr)
            for seed, lr in ((0, 3e-3), (1, 1e-3), (2, 3e-3))]


def test_pi_mnist_members_train_what_single_runs_train(tiny, tmp_path, vmapped):
    data_dir, load_split = tiny
    configs = _mnist_members(data_dir)
    group = train.train_members(configs, [str(tmp_path / f"member{k}") for k in range(3)],
                                build(load_split))
    for k, config in enumerate(configs):
        single = train.train_and_evaluate(config, str(tmp_path / f"single{k}"), build(load_split))
        _assert_member_matches_single(group[k], single, COMPARED, rtol=RTOL)
        # Each member's record is a standard record, made with its own config.
        record = metrics.load_run(str(tmp_path / f"member{k}"))
        assert record.finished and record.config == metrics.read_config(
            str(tmp_path / f"single{k}"))
        assert record.provenance[0]["first_round"] == 0


def test_reader_members_train_what_single_runs_train(tmp_path, vmapped):
    """BN-LSTM members whose batches are bucketed to different lengths (padded to the longest
    in the group): each trains what its single run trains. With bucket width 8 the two seeds'
    documents are padded to 40 and 48 steps in different updates."""
    data_dir = tmp_path / "cloze"
    make = lambda seed, lr: test_attentive_reader.tiny_config(
        data_dir, cell="bnlstm", bucket_width=8, seed=seed, learning_rate=lr)
    configs = [make(0, 2e-3), make(1, 4e-3)]
    workdirs = [str(tmp_path / f"member{k}") for k in range(2)]
    group = train.train_members(configs, workdirs, attentive_reader.build_task)
    for k, config in enumerate(configs):
        single = train.train_and_evaluate(config, str(tmp_path / f"single{k}"),
                                          attentive_reader.build_task)
        _assert_member_matches_single(group[k], single, ("train_loss_running", "valid_nll",
                                                         "valid_error"), rtol=RTOL)


def test_a_killed_group_resumes_to_the_same_metrics(tiny, tmp_path, vmapped):
    data_dir, load_split = tiny
    configs = _mnist_members(data_dir)[:2]
    for config in configs:
        config.num_epochs = 3
    straight = train.train_members(configs, [str(tmp_path / f"s{k}") for k in range(2)],
                                   build(load_split))

    build_killed_in_epoch_3, Killed = killed_after(2, load_split)
    workdirs = [str(tmp_path / f"k{k}") for k in range(2)]
    with pytest.raises(Killed):
        train.train_members(configs, workdirs, build_killed_in_epoch_3)
    resumed = train.train_members(configs, workdirs, build(load_split))
    for k in range(2):
        assert without_timing(resumed[k]) == without_timing(straight[k])
        assert [p["first_round"] for p in metrics.read_provenance(workdirs[k])] == [0, 2]


@pytest.mark.parametrize("batched", [False, True], ids=["one_after_another", "vmapped"])
def test_a_diverging_member_is_stopped_and_recorded_while_the_others_go_on(tiny, tmp_path,
                                                                          monkeypatch, batched):
    monkeypatch.setattr(train, "vmaps_members", lambda num_members: batched and num_members > 1)
    data_dir, load_split = tiny
    configs = _mnist_members(data_dir)
    configs[1].learning_rate = 1e30  # overflows in the first epoch
    workdirs = [str(tmp_path / f"m{k}") for k in range(3)]
    group = train.train_members(configs, workdirs, build(load_split))
    diverged = metrics.read_diverged(workdirs[1])
    assert diverged["round"] == 0 and diverged["round_name"] == "epoch"
    assert diverged["key"] in ("loss", "train_loss_running", "train_nll")
    assert not np.isfinite(float(diverged["value"]))
    assert group[1] == [] and metrics.read_metrics(workdirs[1]) == []
    assert metrics.load_run(workdirs[1]).done and not metrics.load_run(workdirs[1]).finished
    for k in (0, 2):  # the others went on
        assert metrics.load_run(workdirs[k]).finished
    if batched:  # undisturbed by the NaNs in their program (one after another, trivially so)
        single = train.train_and_evaluate(configs[2], str(tmp_path / "single2"),
                                          build(load_split))
        _assert_member_matches_single(group[2], single, COMPARED, rtol=RTOL)
    # Re-running the group runs nothing: every member is done.
    assert train.train_members(configs, workdirs, build(load_split)) == group
    with pytest.raises(train.NonFiniteLossError, match="stopped being finite in epoch 1"):
        train.train_and_evaluate(configs[1], workdirs[1], build(load_split))


def test_members_must_share_their_program(tiny):
    data_dir, _ = tiny
    configs = [small_config(data_dir, norm="batch"), small_config(data_dir, norm="layer")]
    with pytest.raises(ValueError, match=r"differ only in .*; these differ in \['norm'"):
        train.train_members(configs, ["a", "b"], None)
    same_program = [small_config(data_dir, seed=1, learning_rate=1e-3, adam_b2=0.99),
                    small_config(data_dir, seed=2)]
    assert len({train.program_key(c) for c in same_program}) == 1


# Not bitwise: the vmapped program's batched matmuls add in another order than the single run's,
# and training amplifies float32 rounding: after 2 epochs of BN at batch 8, 1.5e-4 relative at
# worst (measured with XLA's default flags; the tests' fast-compile flags give less).
RTOL = 5e-4


def test_a_half_done_run_and_a_fresh_one_in_one_group_both_finish(tiny, tmp_path):
    """A sweep may group a run that has progressed with a fresh one; they cannot resume in
    lockstep, so they train one group after the other, each from its own round."""
    data_dir, load_split = tiny
    configs = _mnist_members(data_dir)[:2]
    for config in configs:
        config.num_epochs = 2
    workdirs = [str(tmp_path / f"m{k}") for k in range(2)]
    straight = train.train_and_evaluate(configs[0], str(tmp_path / "straight"),
                                        build(load_split))
    build_killed_in_epoch_2, Killed = killed_after(1, load_split)
    with pytest.raises(Killed):
        train.train_and_evaluate(configs[0], workdirs[0], build_killed_in_epoch_2)
    rows = train.train_members(configs, workdirs, build(load_split))
    assert without_timing(rows[0]) == without_timing(straight)
    assert all(metrics.load_run(w).finished for w in workdirs)
