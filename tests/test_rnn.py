"""Tests for lnrepro.rnn: every cell in rnn.CELLS through the SequenceRunner and the flax
single-step interface, against step-by-step float64 numpy references written here.

Sizes are tiny (B=3, T<=6, D=4, H=3) so the whole file runs in seconds.
"""

from __future__ import annotations

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrepro import ops, rnn

B, T, D, H = 3, 5, 4, 3
EPS = ops.DEFAULT_EPSILON
CELL_NAMES = sorted(rnn.CELLS)
CELL_KWARGS = {"bnlstm": {"max_steps": 8}}
LENGTHS = np.array([5, 2, 4])  # the padded batch of T=5


def _make(name, **kwargs):
    return rnn.make_cell(name, H, **{**CELL_KWARGS.get(name, {}), **kwargs})


def _inputs(seed=0, b=B, t=T):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, D)), jnp.float32)


def _mask(lengths, t):
    return jnp.asarray(np.arange(t)[None, :] < np.asarray(lengths)[:, None], jnp.float32)


def _randomize(params, seed=1, scale=0.4):
    """Random values for every parameter (non-zero biases, non-unit gains) so that each one is
    exercised; float32."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    new = [jnp.asarray(np.asarray(l) + scale * rng.normal(size=l.shape), jnp.float32)
           for l in leaves]
    return jax.tree.unflatten(treedef, new)


@functools.lru_cache(maxsize=None)
def _runner(name, **kwargs):
    return rnn.SequenceRunner(_make(name, **kwargs))


@functools.lru_cache(maxsize=None)
def _init(name, t, masked, kwargs):
    """Initial variables (cached: initialization is the slow part of these tests)."""
    runner = _runner(name, **dict(kwargs))
    mask = _mask(np.full(B, t), t) if masked else None
    return runner.init(jax.random.key(0), _inputs(0, t=t), mask, train=True)


def _runner_variables(name, seed=1, xs=None, mask=None, **kwargs):
    """(runner, variables) with randomized params (BN population statistics at init values)."""
    t = T if xs is None else xs.shape[1]
    variables = _init(name, t, mask is not None, tuple(sorted(kwargs.items())))
    return _runner(name, **kwargs), {**variables, "params": _randomize(variables["params"], seed)}


@functools.lru_cache(maxsize=None)
def _apply(runner, train, mutable):
    return jax.jit(functools.partial(runner.apply, train=train,
                                     mutable=["batch_stats"] if mutable else False))


def _run(runner, variables, xs, mask=None, *, train=False, initial_carry=None):
    """Runner outputs (carry, hs), jitted; in BN training also the updated batch_stats.

    A missing mask (all ones) and initial carry (zeros, unless learned) are passed explicitly, so
    that fewer signatures are compiled."""
    if mask is None:
        mask = jnp.ones(xs.shape[:2], jnp.float32)
    if initial_carry is None and not runner.learn_initial_carry:
        initial_carry = runner.cell.initialize_carry(None, xs.shape[:1] + (H,))
    if "batch_stats" in variables and train:
        (carry, hs), updates = _apply(runner, True, True)(variables, xs, mask,
                                                          initial_carry=initial_carry)
        return carry, hs, updates["batch_stats"]
    carry, hs = _apply(runner, train, False)(variables, xs, mask, initial_carry=initial_carry)
    return carry, hs, None


# ----------------------------------------------------------------------------------------------
# float64 numpy references
# ----------------------------------------------------------------------------------------------

def _np(a):
    return np.asarray(a, np.float64)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def np_ln(a, p):
    mean = a.mean(-1, keepdims=True)
    var = np.square(a - mean).mean(-1, keepdims=True)
    return (a - mean) / np.sqrt(var + EPS) * _np(p["scale"]) + _np(p["bias"])


def np_bn(a, m, gamma, beta=None, pop=None):
    """BN over the rows of a [B, F] with mask m [B] (pop: given (mean, var)). Returns (y, stats)."""
    if pop is None:
        count = max(m.sum(), 1.0)
        mean = (a * m[:, None]).sum(0) / count
        var = (np.square(a - mean) * m[:, None]).sum(0) / count
    else:
        mean, var = pop
    y = (a - mean) / np.sqrt(var + EPS) * _np(gamma)
    return (y if beta is None else y + _np(beta)), (mean, var)


def _lstm_gates(gates, c):
    i, f, o, g = np.split(gates, 4, axis=-1)
    return sigmoid(f) * c + sigmoid(i) * np.tanh(g), o


def np_run(name, p, xs, mask, carry, *, train=True, population=None, max_steps=None):
    """Step-by-step float64 reference for every cell. p: the cell's params. Returns
    (final carry, outputs [B, T, H], per-step batch statistics {name: (mean [T, F], var)})."""
    xs, mask = _np(xs), _np(mask)
    carry = tuple(_np(c) for c in carry) if isinstance(carry, tuple) else _np(carry)
    wx, wh = _np(p["input_kernel"]["kernel"]), _np(p["hidden_kernel"]["kernel"])
    outputs, stats = [], {"input": [], "hidden": [], "cell": []}
    for t in range(xs.shape[1]):
        x, m = xs[:, t], mask[:, t]
        if name in ("lstm", "lnlstm", "bnlstm"):
            c, h = carry
            if name == "lstm":
                gates = x @ wx + h @ wh + _np(p["bias"])
            elif name == "lnlstm":
                gates = np_ln(x @ wx, p["input_norm"]) + np_ln(h @ wh, p["hidden_norm"]) + \
                    _np(p["bias"])
            else:
                pop = None
                if not train:
                    k = min(t, max_steps - 1)
                    pop = {n: (population[f"{n}_mean"][k], population[f"{n}_var"][k])
                           for n in ("input", "hidden", "cell")}
                get = lambda n: None if pop is None else pop[n]
                ax, sx = np_bn(x @ wx, m, p["input_gamma"], pop=get("input"))
                ah, sh = np_bn(h @ wh, m, p["hidden_gamma"], pop=get("hidden"))
                gates = ax + ah + _np(p["bias"])
            c_new, o = _lstm_gates(gates, c)
            if name == "lstm":
                h_new = sigmoid(o) * np.tanh(c_new)
            elif name == "lnlstm":
                h_new = sigmoid(o) * np.tanh(np_ln(c_new, p["cell_norm"]))  # raw c carries on
            else:
                c_hat, sc = np_bn(c_new, m, p["cell_gamma"], p["cell_beta"], pop=get("cell"))
                h_new = sigmoid(o) * np.tanh(c_hat)
                for n, s in (("input", sx), ("hidden", sh), ("cell", sc)):
                    stats[n].append(s)
            keep = m[:, None] > 0
            carry = (np.where(keep, c_new, c), np.where(keep, h_new, h))
            outputs.append(carry[1])
        else:
            h = carry
            if name == "gru":
                xt, ht = x @ wx + _np(p["bias"]), h @ wh
            else:
                xt = np.concatenate([np_ln((x @ wx)[:, :2 * H], p["input_gate_norm"]),
                                     np_ln((x @ wx)[:, 2 * H:], p["input_candidate_norm"])], -1)
                ht = np.concatenate([np_ln((h @ wh)[:, :2 * H], p["hidden_gate_norm"]),
                                     np_ln((h @ wh)[:, 2 * H:], p["hidden_candidate_norm"])], -1)
            z = sigmoid(xt[:, :H] + ht[:, :H])
            r = sigmoid(xt[:, H:2 * H] + ht[:, H:2 * H])
            cand = np.tanh(xt[:, 2 * H:] + r * ht[:, 2 * H:])
            h_new = (1 - z) * h + z * cand
            carry = np.where(m[:, None] > 0, h_new, h)
            outputs.append(carry)
    stats = {n: tuple(np.stack(s) for s in zip(*v)) for n, v in stats.items() if v}
    return carry, np.stack(outputs, 1), stats


def _random_carry(name, seed=2, b=B):
    rng = np.random.default_rng(seed)
    parts = [jnp.asarray(rng.normal(size=(b, H)) * 0.5, jnp.float32)
             for _ in range(rnn.CELLS[name].carry_parts)]
    return tuple(parts) if len(parts) == 2 else parts[0]


def _assert_carry_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


# ----------------------------------------------------------------------------------------------
# All cells
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CELL_NAMES)
def test_shapes(name):
    runner, variables = _runner_variables(name)
    for train in (True, False):
        carry, hs, _ = _run(runner, variables, _inputs(), _mask(LENGTHS, T), train=train)
        assert hs.shape == (B, T, H) and hs.dtype == jnp.float32
        parts = carry if isinstance(carry, tuple) else (carry,)
        assert len(parts) == rnn.CELLS[name].carry_parts
        assert all(p.shape == (B, H) for p in parts)
        assert np.all(np.isfinite(np.asarray(hs)))
    assert ("batch_stats" in variables) == (name == "bnlstm")


@pytest.mark.parametrize("name", CELL_NAMES)
def test_matches_numpy_reference(name):
    """Every cell, with random params, random initial carry and a padded batch, in training
    mode (batch statistics for BN), against the float64 step-by-step reference."""
    runner, variables = _runner_variables(name)
    xs, mask, carry0 = _inputs(3), _mask(LENGTHS, T), _random_carry(name)
    carry, hs, _ = _run(runner, variables, xs, mask, train=True, initial_carry=carry0)
    ref_carry, ref_hs, _ = np_run(name, variables["params"]["cell"], xs, mask, carry0)
    np.testing.assert_allclose(np.asarray(hs), ref_hs, rtol=1e-5, atol=1e-5)
    _assert_carry_close(carry, ref_carry, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_single_step_interface_matches_runner(name):
    """flax's (carry, x) -> (carry, y): one call equals the runner on a one-step sequence
    (BN cells: training mode, batch statistics)."""
    cell = _make(name)
    x = _inputs(4)[:, 0]
    carry0 = _random_carry(name)
    assert jax.tree.map(jnp.shape, cell.initialize_carry(jax.random.key(0), x.shape)) == \
        jax.tree.map(jnp.shape, carry0)
    runner, variables = _runner_variables(name)
    cell_vars = {k: v["cell"] for k, v in variables.items()}
    carry, y = cell.apply(cell_vars, carry0, x)
    r_carry, r_hs, _ = _run(runner, variables, x[:, None], train=True, initial_carry=carry0)
    np.testing.assert_allclose(np.asarray(y), np.asarray(r_hs[:, 0]), rtol=1e-6, atol=1e-6)
    _assert_carry_close(carry, r_carry, rtol=1e-6, atol=1e-6)
    # The cell's own init gives the same parameter structure as the runner's.
    own = cell.init(jax.random.key(0), carry0, x)
    assert jax.tree.map(jnp.shape, own["params"]) == jax.tree.map(jnp.shape, cell_vars["params"])


@pytest.mark.parametrize("name", CELL_NAMES)
def test_every_cell_has_the_runners_interface(name):
    """project_inputs -> InputTerms, step -> StepOutput, hidden(carry) -> h, for every cell in
    both modes; batch statistics and population statistics exist for BN-LSTM only (LN keeps
    none), batch statistics in training only."""
    cell = _make(name)
    _, variables = _runner_variables(name)
    cell_vars = {k: v["cell"] for k, v in variables.items()}
    xs, mask, carry0 = _inputs(), _mask(LENGTHS, T), _random_carry(name)
    population = cell.apply(cell_vars, T, method="population_statistics")
    assert (population is not None) == (name == "bnlstm")
    for train in (True, False):
        with_stats = name == "bnlstm" and train
        inputs = cell.apply(cell_vars, xs, mask, train=train, method="project_inputs")
        assert isinstance(inputs, rnn.InputTerms)
        assert inputs.terms.shape == (B, T, cell.num_gates * H)
        assert (inputs.batch_stats is not None) == with_stats
        step_population = None if train else jax.tree.map(lambda a: a[0], population)
        step_input = rnn.StepInput(inputs.terms[:, 0], mask[:, 0], step_population)
        carry, out = cell.apply(cell_vars, carry0, step_input, train=train, method="step")
        assert isinstance(out, rnn.StepOutput) and out.h.shape == (B, H)
        assert (out.batch_stats is not None) == with_stats
        np.testing.assert_array_equal(cell.apply(cell_vars, carry, method="hidden"), out.h)


@pytest.mark.parametrize("name", [n for n in CELL_NAMES if n != "bnlstm"])
def test_works_with_flax_rnn(name):
    cell = _make(name)
    xs = _inputs(5)
    rnn_module = nn.RNN(cell, return_carry=True)
    variables = rnn_module.init(jax.random.key(0), xs)
    variables = {"params": _randomize(variables["params"])}
    carry, hs = rnn_module.apply(variables, xs)
    r_carry, r_hs, _ = _run(_runner(name), variables, xs)
    np.testing.assert_allclose(np.asarray(hs), np.asarray(r_hs), rtol=1e-5, atol=1e-6)
    _assert_carry_close(carry, r_carry, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_gradients_match_float64_finite_differences(name):
    """Reverse-mode gradients (float32, jitted) of sum(w * outputs) w.r.t. every parameter, the
    inputs and the initial carry, on a padded batch in training mode, each projected on a random
    direction, against central differences of the float64 numpy reference (accurate to ~1e-9,
    so the comparison can be float32-tight, unlike finite differences of float32 code)."""
    runner, variables = _runner_variables(name)
    xs, mask, carry0 = _inputs(6), _mask(LENGTHS, T), _random_carry(name)
    w = np.random.default_rng(17).normal(size=(B, T, H))

    def loss(params, xs, carry0):
        (_, hs), _ = runner.apply({**variables, "params": params}, xs, mask, train=True,
                                  initial_carry=carry0, mutable=["batch_stats"])
        return jnp.sum(hs * w)

    primals = (variables["params"], xs, carry0)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*primals)
    leaves, treedef = jax.tree.flatten(jax.tree.map(_np, primals))
    grad_leaves = [_np(g) for g in jax.tree.leaves(grads)]
    assert len(grad_leaves) == len(leaves) >= 5

    def loss64(flat):
        params, xs64, c64 = jax.tree.unflatten(treedef, flat)
        return float(np.sum(np_run(name, params["cell"], xs64, mask, c64)[1] * w))

    rng = np.random.default_rng(18)
    for i, (leaf, g) in enumerate(zip(leaves, grad_leaves)):
        d = rng.normal(size=leaf.shape)
        step = 1e-6
        plus = [l + step * d if j == i else l for j, l in enumerate(leaves)]
        minus = [l - step * d if j == i else l for j, l in enumerate(leaves)]
        fd = (loss64(plus) - loss64(minus)) / (2 * step)
        assert np.sum(g * d) == pytest.approx(fd, rel=1e-4, abs=2e-5), i


@pytest.mark.parametrize("name", CELL_NAMES)
def test_padded_batch_equals_each_sequence_alone(name):
    """Right-padded batch vs each sequence run alone: same outputs on real steps, same final
    carry; padded steps repeat the last real h. BN-LSTM runs in evaluation mode with population
    statistics from one training step (training-mode BN depends on the batch by design)."""
    xs, mask = _inputs(7), _mask(LENGTHS, T)
    xs = jnp.where(mask[..., None] > 0, xs, 50.0)  # padding values that would show if used
    runner, variables = _runner_variables(name)
    if name == "bnlstm":
        _, _, stats = _run(runner, variables, xs, mask, train=True)
        variables = {**variables, "batch_stats": stats}
    carry0 = _random_carry(name)
    carry, hs, _ = _run(runner, variables, xs, mask, initial_carry=carry0)
    hs = np.asarray(hs)
    for i, n in enumerate(LENGTHS):
        alone_c0 = jax.tree.map(lambda c: c[i:i + 1], carry0)
        c_i, hs_i, _ = _run(runner, variables, xs[i:i + 1, :n], initial_carry=alone_c0)
        np.testing.assert_allclose(hs[i, :n], np.asarray(hs_i)[0], rtol=1e-5, atol=1e-6)
        _assert_carry_close(jax.tree.map(lambda c: c[i:i + 1], carry), c_i, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(hs[i, n:], np.repeat(hs[i, n - 1:n], T - n, axis=0))


@pytest.mark.parametrize("name", ["lstm", "gru"])  # (c, h) and h carries
def test_learned_initial_carry(name):
    runner = rnn.SequenceRunner(_make(name), learn_initial_carry=True)
    xs = _inputs(8)
    variables = runner.init(jax.random.key(0), xs, train=True)
    parts = rnn.CELLS[name].carry_parts
    names = {f"initial_carry_{i}" for i in range(parts)}
    assert names <= set(variables["params"])
    for n in names:
        assert variables["params"][n].shape == (H,)
        np.testing.assert_array_equal(np.asarray(variables["params"][n]), 0.0)
    params = _randomize(variables["params"], seed=9)
    variables = {**variables, "params": params}
    carry0 = tuple(jnp.broadcast_to(params[f"initial_carry_{i}"], (B, H)) for i in range(parts))
    carry0 = carry0 if parts == 2 else carry0[0]
    plain = _runner(name)
    plain_vars = {**variables, "params": {"cell": params["cell"]}}
    _, hs, _ = _run(runner, variables, xs)
    _, hs_explicit, _ = _run(plain, plain_vars, xs, initial_carry=carry0)
    np.testing.assert_allclose(np.asarray(hs), np.asarray(hs_explicit), rtol=1e-6, atol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(runner.apply({**variables, "params": p}, xs)[1]))(params)
    for n in names:
        assert np.abs(np.asarray(grads[n])).sum() > 1e-4


def test_bnlstm_learns_c0_only_and_matches_eval_when_population_is_this_batch():
    """A learned h0 would be constant over the batch, so BN(W_h h0) would be 0/0 at step 0 and
    drift at evaluation; BN-LSTM learns c0 alone. With momentum 0, one training pass makes the
    population statistics this batch's, so evaluation on the same batch must give the same
    outputs at every step, step 0 included."""
    runner = rnn.SequenceRunner(_make("bnlstm", momentum=0.0), learn_initial_carry=True)
    xs, mask = _inputs(8, b=4), _mask([5, 3, 5, 4], T)
    variables = runner.init(jax.random.key(0), xs, mask, train=True)
    assert "initial_carry_0" in variables["params"]  # c0
    assert "initial_carry_1" not in variables["params"]  # h0 stays zero
    params = _randomize(variables["params"], seed=4)
    variables = {**variables, "params": params}
    grads = jax.grad(lambda p: jnp.sum(runner.apply(
        {**variables, "params": p}, xs, mask, train=True, mutable=["batch_stats"])[0][1]))(params)
    assert np.abs(np.asarray(grads["initial_carry_0"])).sum() > 1e-3
    (_, hs_train), updates = runner.apply(variables, xs, mask, train=True,
                                          mutable=["batch_stats"])
    _, hs_eval = runner.apply({**variables, **updates}, xs, mask, train=False)
    real = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(hs_eval)[real], np.asarray(hs_train)[real],
                               rtol=1e-4, atol=1e-5)


def test_make_cell_unknown_name():
    msg = "unknown cell 'rnn'; choose one of ['bnlstm', 'gru', 'lngru', 'lnlstm', 'lstm']."
    with pytest.raises(ValueError, match=re.escape(msg)):
        rnn.make_cell("rnn", 4)
    assert isinstance(rnn.make_cell("lnlstm", 4), rnn.LNLSTMCell)


# ----------------------------------------------------------------------------------------------
# LN-LSTM
# ----------------------------------------------------------------------------------------------

def test_lnlstm_initialization_and_gain_init():
    for gain, expected in ((None, 1.0), (0.1, 0.1)):
        kwargs = {} if gain is None else {"gain_init": gain}
        runner = rnn.SequenceRunner(rnn.LNLSTMCell(H, **kwargs))
        params = runner.init(jax.random.key(0), _inputs())["params"]["cell"]
        for norm, width in (("input_norm", 4 * H), ("hidden_norm", 4 * H), ("cell_norm", H)):
            np.testing.assert_allclose(np.asarray(params[norm]["scale"]), np.full(width, expected))
            np.testing.assert_array_equal(np.asarray(params[norm]["bias"]), 0.0)
    params = rnn.SequenceRunner(rnn.LNGRUCell(H, gain_init=0.1)).init(
        jax.random.key(0), _inputs())["params"]["cell"]
    scales = [v["scale"] for k, v in params.items() if k.endswith("_norm")]
    assert len(scales) == 4
    for s in scales:
        np.testing.assert_allclose(np.asarray(s), 0.1)


def test_lnlstm_example_independent_of_batch():
    """LN-LSTM's output for one sequence doesn't depend on the other sequences in the batch."""
    runner, variables = _runner_variables("lnlstm")
    xs = _inputs(10)
    other = xs.at[1:].set(_inputs(11)[1:] * 5 + 2)
    _, a, _ = _run(runner, variables, xs, train=True)
    _, b, _ = _run(runner, variables, other, train=True)
    np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[0])


# ----------------------------------------------------------------------------------------------
# BN-LSTM
# ----------------------------------------------------------------------------------------------

def test_bnlstm_init_values():
    cell = rnn.BNLSTMCell(H, max_steps=6)
    assert rnn.BN_GAMMA_INIT == 0.1 and cell.gamma_init == 0.1 and cell.momentum == 0.99
    variables = rnn.SequenceRunner(cell).init(jax.random.key(0), _inputs(), train=True)
    p, s = variables["params"]["cell"], variables["batch_stats"]["cell"]
    for name, width in (("input_gamma", 4 * H), ("hidden_gamma", 4 * H), ("cell_gamma", H)):
        np.testing.assert_allclose(np.asarray(p[name]), np.full(width, 0.1, np.float32))
    np.testing.assert_array_equal(np.asarray(p["cell_beta"]), 0.0)
    np.testing.assert_array_equal(np.asarray(p["bias"]), 0.0)
    for name, width in (("input", 4 * H), ("hidden", 4 * H), ("cell", H)):
        np.testing.assert_array_equal(np.asarray(s[f"{name}_mean"]), np.zeros((6, width)))
        np.testing.assert_array_equal(np.asarray(s[f"{name}_var"]), np.ones((6, width)))


def test_bnlstm_population_per_time_step():
    """One training apply: the population EMA is updated per step with that step's batch
    statistics over the real examples only (float64 reference); fully padded steps and steps past
    the sequence keep their initial values; per-step means differ across steps."""
    t, lengths, max_steps = 6, [4, 2, 3], 8  # steps 4, 5: padding everywhere; 6, 7: beyond T
    xs, mask = _inputs(12, t=t), _mask(lengths, t)
    runner, variables = _runner_variables("bnlstm", xs=xs, mask=mask, max_steps=max_steps)
    carry0 = _random_carry("bnlstm")
    _, hs, stats = _run(runner, variables, xs, mask, train=True, initial_carry=carry0)
    _, ref_hs, ref_stats = np_run("bnlstm", variables["params"]["cell"], xs, mask, carry0)
    stats = stats["cell"]
    for name, width in (("input", 4 * H), ("hidden", 4 * H), ("cell", H)):
        mean, var = np.asarray(stats[f"{name}_mean"]), np.asarray(stats[f"{name}_var"])
        assert mean.shape == var.shape == (max_steps, width)
        ref_mean, ref_var = ref_stats[name]
        np.testing.assert_allclose(mean[:4], 0.01 * ref_mean[:4], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(var[:4], 0.99 + 0.01 * ref_var[:4], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(mean[4:], 0.0)
        np.testing.assert_array_equal(var[4:], 1.0)
        # Statistics are per step: no two real steps share a mean.
        for a in range(4):
            for b in range(a + 1, 4):
                assert np.abs(mean[a] - mean[b]).max() > 1e-5, (name, a, b)
    np.testing.assert_allclose(np.asarray(hs), ref_hs, rtol=1e-5, atol=1e-5)


def test_bnlstm_padding_excluded_from_statistics_in_training():
    xs, mask = _inputs(13), _mask(LENGTHS, T)
    runner, variables = _runner_variables("bnlstm")
    _, hs, stats = _run(runner, variables, xs, mask, train=True)
    garbage = jnp.where(mask[..., None] > 0, xs, xs * 100 - 40)
    _, hs2, stats2 = _run(runner, variables, garbage, mask, train=True)
    real = np.asarray(mask) > 0
    np.testing.assert_allclose(np.asarray(hs2)[real], np.asarray(hs)[real], rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                                                         atol=1e-7), stats, stats2)
    # ... whereas without the mask the padding values do change the real outputs.
    _, hs3, _ = _run(runner, variables, garbage, None, train=True)
    assert np.abs(np.asarray(hs3)[real] - np.asarray(hs)[real]).max() > 1e-2


def test_bnlstm_eval_uses_population_and_reuses_last_step_past_max_steps():
    """Evaluation on T=5 > max_steps=3: steps 3 and 4 use step 2's population statistics
    (float64 reference with min(t, max_steps - 1)), and the output doesn't depend on the batch."""
    max_steps, t = 3, 5
    xs = _inputs(14, t=t)
    runner, variables = _runner_variables("bnlstm", xs=xs, max_steps=max_steps)
    rng = np.random.default_rng(15)
    population = {k: jnp.asarray((rng.uniform(0.5, 2.0, v.shape) if k.endswith("_var")
                                  else rng.normal(size=v.shape)), jnp.float32)
                  for k, v in variables["batch_stats"]["cell"].items()}
    variables = {**variables, "batch_stats": {"cell": population}}
    carry0 = _random_carry("bnlstm")
    mask = _mask(LENGTHS, t)
    carry, hs, _ = _run(runner, variables, xs, mask, train=False, initial_carry=carry0)
    ref_carry, ref_hs, _ = np_run("bnlstm", variables["params"]["cell"], xs, mask, carry0,
                                  train=False, population=population, max_steps=max_steps)
    np.testing.assert_allclose(np.asarray(hs), ref_hs, rtol=1e-5, atol=1e-5)
    _assert_carry_close(carry, ref_carry, rtol=1e-5, atol=1e-5)
    # Past max_steps means "step max_steps - 1", not "step 0": a reference using step 0 differs.
    wrong = {k: v.at[2].set(v[0]) for k, v in population.items()}
    _, wrong_hs, _ = np_run("bnlstm", variables["params"]["cell"], xs, mask, carry0, train=False,
                            population=wrong, max_steps=max_steps)
    assert np.abs(wrong_hs[:, 2:] - ref_hs[:, 2:]).max() > 1e-3
    # Evaluation leaves the population statistics alone.
    _, updates = runner.apply(variables, xs, mask, train=False, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])
    # Training past max_steps: steps >= max_steps are not accumulated anywhere.
    _, _, stats = _run(runner, variables, xs, mask, train=True, initial_carry=carry0)
    _, _, ref_stats = np_run("bnlstm", variables["params"]["cell"], xs, mask, carry0)
    np.testing.assert_allclose(np.asarray(stats["cell"]["input_mean"]),
                               0.99 * np.asarray(population["input_mean"])
                               + 0.01 * ref_stats["input"][0][:max_steps], rtol=1e-4, atol=1e-6)


def test_bnlstm_train_and_eval_differ():
    xs = _inputs(16)
    runner, variables = _runner_variables("bnlstm")
    _, train_hs, _ = _run(runner, variables, xs, train=True)
    _, eval_hs, _ = _run(runner, variables, xs, train=False)
    assert np.abs(np.asarray(train_hs) - np.asarray(eval_hs)).max() > 1e-2
