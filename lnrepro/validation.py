"""Checking a config before anything is written: one rule per setting, every problem reported at
once, each message naming the setting, its value and what is allowed.

  validation.check(config, [validation.Rule("seed", validation.integer(0), "an integer >= 0")])
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Iterable


class ConfigError(ValueError):
    """One or more settings have values the experiment cannot run with."""


@dataclasses.dataclass(frozen=True)
class Rule:
    key: str  # a dotted path into the config, e.g. "synthetic.num_train"
    ok: Callable[[Any], bool]
    allowed: str  # what the message says is allowed, e.g. ">= 1" or "one of ('a', 'b')"


def _get(config, key: str):
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def check(config, rules: Iterable[Rule], *, extra: Iterable[str] = ()) -> None:
    """Raises ConfigError listing every rule the config breaks (and the `extra` problems, for
    conditions that involve several settings)."""
    problems = []
    for rule in rules:
        value = _get(config, rule.key)
        try:
            ok = rule.ok(value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            problems.append(f"config.{rule.key} must be {rule.allowed}, got {value!r}.")
    problems.extend(extra)
    if problems:
        raise ConfigError(" ".join(problems) if len(problems) == 1 else
                          "invalid settings:\n  " + "\n  ".join(problems))


def one_of(*choices) -> Callable[[Any], bool]:
    return lambda value: value in choices


def is_bool(value) -> bool:
    return isinstance(value, bool)


def integer(low: int, high: int | None = None) -> Callable[[Any], bool]:
    return lambda value: (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                          and value >= low and (high is None or value <= high))


def number(low: float, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[Any], bool]:
    """A finite real number in [low, high] (either end open on request)."""
    def ok(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        value = float(value)
        if not math.isfinite(value):
            return False
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        return above and below
    return ok


def optional(inner: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """None ("the default for this setting") or what `inner` allows."""
    return lambda value: value is None or inner(value)


# jax.default_matmul_precision's values (config.matmul_precision; see configs/pi_mnist.py).
MATMUL_PRECISIONS = ("highest", "float32", "high", "tensorfloat32", "default", "bfloat16")


def shared_rules() -> list[Rule]:
    """The settings every experiment has: optimizer, seed, switches, precision."""
    return [
        Rule("learning_rate", number(0, low_open=True), "a number > 0"),
        Rule("matmul_precision", one_of(*MATMUL_PRECISIONS), f"one of {MATMUL_PRECISIONS}"),
        Rule("adam_b1", number(0, 1, high_open=True), "in [0, 1)"),
        Rule("adam_b2", number(0, 1, high_open=True), "in [0, 1)"),
        Rule("adam_eps", number(0, low_open=True), "a number > 0"),
        Rule("grad_clip_norm", number(0), "a number >= 0 (0: off)"),
        Rule("seed", integer(0, 2**32 - 1), "an integer in [0, 2**32 - 1]"),
        Rule("log_grad_norm", is_bool, "True or False"),
        Rule("distributed", is_bool, "True or False"),
    ]
