"""The config files: one argument syntax for all, the settings they list, and what every file
shares."""

import pytest

from configs import attentive_reader as reader_config
from configs import common
from configs import pi_mnist as mnist_config
from lnrepro import metrics
from lnrepro.tasks import attentive_reader, pi_mnist


def test_presets_and_nested_keys_apply_left_to_right():
    config = reader_config.get_config("paper,features=128,synthetic.num_facts=6")
    assert (config.corpus, config.features, config.learning_rate) == ("cnn", 128, 8e-5)
    assert config.synthetic.num_facts == 6
    assert reader_config.get_config("features=128,paper").features == 240  # paper came last
    with pytest.raises(ValueError, match="unknown preset 'papr'.*presets: \\['hard', 'paper'\\]"):
        reader_config.get_config("papr")
    with pytest.raises(ValueError, match="unknown config key 'synthetic.num_fact'"):
        reader_config.get_config("synthetic.num_fact=6")
    with pytest.raises(ValueError, match="neither a preset name nor key=value"):
        mnist_config.get_config("norm=layer,3x")
    # The harder corpus's preset changes the corpus and the width only.
    hard, default = reader_config.get_config("hard"), reader_config.get_config()
    assert (hard.features, hard.synthetic.num_filler, hard.synthetic.num_facts) == (240, 30, 12)
    assert (hard.corpus, hard.learning_rate, hard.batch_size) == (
        default.corpus, default.learning_rate, default.batch_size)


def test_values_may_hold_commas_inside_brackets_and_quotes():
    config = mnist_config.get_config("hidden_sizes=(32,32,32),norm=batch")
    assert tuple(config.hidden_sizes) == (32, 32, 32) and config.norm == "batch"
    assert common.parse_overrides("a='x,y',b=[1,2]") == [("a", "x,y"), ("b", [1, 2])]
    with pytest.raises(ValueError, match="neither a preset name nor key=value"):
        mnist_config.get_config("norm=batch,")  # a stray comma is an empty item, not "batch,"
    with pytest.raises(ValueError, match="unclosed bracket"):
        mnist_config.get_config("hidden_sizes=(32,32")


def test_an_explicit_none_is_a_value_not_a_preset():
    assert common.parse_overrides("normalize_logits=None,paper") == [
        ("normalize_logits", None), ("paper", common.PRESET)]
    assert mnist_config.get_config("normalize_logits=None").normalize_logits is None


def test_every_config_file_shares_the_run_settings():
    shared = {"data_dir", "matmul_precision", "seed", "distributed"}
    for config in (mnist_config.get_config(), reader_config.get_config()):
        assert shared <= set(config)
        assert "experiment" not in config  # read by nothing


@pytest.mark.parametrize("norm, batch_size, expected", [
    ("layer", 128, 4.5e-4), ("layer", 4, 1e-4), ("batch", 4, 3e-4), ("none", 128, 4.5e-4),
    ("weight", 4, 1e-4),
    ("layer", 16, 1e-4),   # nearer 4 than 128 on a log scale
    ("batch", 64, 6.7e-5),   # nearer 128
])
def test_the_learning_rate_comes_from_the_configs_searched_table(norm, batch_size, expected):
    config = mnist_config.get_config(f"norm={norm},batch_size={batch_size}")
    assert pi_mnist.resolve_config(config).learning_rate == expected
    config.searched_learning_rates[norm]["bs4"] = 7e-4
    config.searched_learning_rates[norm]["bs128"] = 7e-4
    assert pi_mnist.resolve_config(config).learning_rate == 7e-4  # the table is the source


def test_a_broken_rate_table_is_named():
    config = mnist_config.get_config()
    del config.searched_learning_rates["batch"]
    with pytest.raises(ValueError, match="config.searched_learning_rates must be"):
        pi_mnist.resolve_config(config)


def test_the_table_and_the_retired_field_do_not_make_old_records_stale():
    old = {"experiment": "pi_mnist", "learning_rate": 1e-4, "norm": "layer"}
    new = {"searched_learning_rates": {"layer": {"bs4": 1e-4}}, "learning_rate": 1e-4,
           "norm": "layer"}
    assert metrics.config_differences(old, new, metrics.RESUMABLE_CHANGES) == {}
    assert metrics.config_differences(old, {**new, "learning_rate": 2e-4},
                                      metrics.RESUMABLE_CHANGES) == {
        "learning_rate": (1e-4, 2e-4)}


def test_both_tasks_resolve_their_default_config():
    assert pi_mnist.resolve_config(mnist_config.get_config()).learning_rate == 4.5e-4
    assert attentive_reader.resolve_config(reader_config.get_config()).learning_rate == 2e-3
