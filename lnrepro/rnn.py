"""Recurrent cells (LSTM, LN-LSTM, BN-LSTM, GRU, LN-GRU) and the sequence runner.

Every cell has the same interface, so the runner treats them all alike:

  project_inputs(xs, mask, train) -> InputTerms(terms [B, T, G], batch_stats)
      the input-side terms W_x x of all time steps in one matmul, normalized in one vectorized
      call (LN works per row, so LN of [B, T, G] is LN at every time step)
  step(carry, StepInput, train) -> (carry, StepOutput(h [B, H], batch_stats))
      one step of the recurrence, run by `nn.scan`
  hidden(carry) -> h [B, H]
      the output in a carry ((c, h) for LSTMs, h for GRUs)
  population_statistics(num_steps), update_population(input_stats, step_stats, mask)
      the running statistics; `_Cell`'s defaults are those of a cell that keeps none

and `__call__(carry, x)` composes project_inputs and step for one step: flax's
`(carry, x) -> (carry, y)` interface, so a cell also works with `flax.linen.RNN` or a
hand-written loop.

LSTM, GRU and their LN versions keep no statistics (Ba et al. 2016, sec. 3: train and test compute
the same function): their `batch_stats` are always None, they ignore `train` and the step's
population, and they have no `batch_stats` collection. Only BNLSTMCell keeps population statistics
per time step ([T_max, F] arrays in the `batch_stats` collection, Cooijmans et al. 2016, sec. 4):
the runner passes each step its slice (steps past T_max reuse step T_max's) and, in training,
feeds the per-step batch statistics back into an EMA after the scan. Padding is excluded from
every statistic.

Equations: Ba et al. 2016, suppl. eq. 17-28; Cooijmans et al. 2016, eq. 6-8; spelled out in each
cell's docstring.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnrepro import cell_ops, layers, ops

Array = jax.Array
Carry = Any
Initializer = Callable[..., Array]

# Cooijmans et al. 2016, sec. 4: gamma = 0.1 for BN-LSTM; gamma <= 0.01 trained unstably.
BN_GAMMA_INIT = 0.1


class InputTerms(NamedTuple):
    """What project_inputs returns for a whole sequence. terms [B, T, G]: the (normalized) input
    terms of every step; batch_stats: their per-step batch statistics (ops.BatchStats, [T, G]
    each) where a cell keeps statistics and is training, else None."""
    terms: Array
    batch_stats: Any = None


class StepInput(NamedTuple):
    """What one time step of a cell sees. Shapes: projected [B, G], mask [B], population: a dict
    of ops.BatchStats for this step (BN cells in evaluation) or None."""
    projected: Array
    mask: Array
    population: Any = None


class StepOutput(NamedTuple):
    """What one time step gives out: h [B, H], and the step's batch statistics (a dict of
    ops.BatchStats, [F] each) where a cell keeps statistics and is training, else None."""
    h: Array
    batch_stats: Any = None


def _split_gates(gates: Array, n: int) -> list[Array]:
    return jnp.split(gates, n, axis=-1)


def _lstm_update(gates: Array, c: Array) -> tuple[Array, Array]:
    """Gate order [i; f; o; g]: c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g). Returns (c_t, o)."""
    i, f, o, g = _split_gates(gates, 4)
    return jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g), o


class _Cell(nn.Module):
    """Shared pieces: kernels without bias, the carry, the single-step interface, and the
    statistics hooks of a cell that keeps no statistics (only BNLSTMCell overrides them)."""
    features: int
    kernel_init: Initializer = nn.initializers.lecun_normal()
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros

    num_gates = 4  # overridden by GRUs
    carry_parts = 2  # (c, h) for LSTMs, h alone for GRUs
    num_feature_axes = 1  # read by flax.linen.RNN (inputs [..., D])

    def _input_dense(self, name: str, width: int | None = None) -> nn.Dense:
        return nn.Dense(width or self.num_gates * self.features, use_bias=False,
                        kernel_init=self.kernel_init, name=name)

    def _hidden_dense(self, name: str, width: int | None = None) -> nn.Dense:
        return nn.Dense(width or self.num_gates * self.features, use_bias=False,
                        kernel_init=self.recurrent_kernel_init, name=name)

    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Carry:
        """Zero state for a batch shaped input_shape[:-1]."""
        del rng
        zeros = jnp.zeros(input_shape[:-1] + (self.features,), jnp.float32)
        return (zeros, zeros) if self.carry_parts == 2 else zeros

    def hidden(self, carry: Carry) -> Array:
        """h [B, H] of a carry: the second part of an LSTM's (c, h), a GRU's whole carry."""
        return carry[1] if self.carry_parts == 2 else carry

    def learnable_initial_carry(self) -> tuple[bool, ...]:
        """Which parts of the carry ((c, h) or h) a runner may learn as an initial state."""
        return (True,) * self.carry_parts

    def population_statistics(self, num_steps: int) -> Any:
        """Per-step population statistics for `num_steps` steps ([T, F] each): none here."""
        del num_steps
        return None

    def update_population(self, input_stats: Any, step_stats: Any, mask: Array) -> None:
        """EMA of the per-step batch statistics gathered by the runner: nothing to update here."""
        del input_stats, step_stats, mask

    def __call__(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One step on raw inputs x [B, D] (flax's cell interface): returns (carry, h).

        Training mode: a BN cell normalizes with this batch's statistics (it has no time step to
        take population statistics from) and leaves its population alone; the other cells
        compute the same function in either mode."""
        mask = jnp.ones(x.shape[:-1], jnp.float32)
        inputs = self.project_inputs(x[..., None, :], mask[..., None], train=True)
        carry, out = self.step(carry, StepInput(inputs.terms[..., 0, :], mask), train=True)
        return carry, out.h


class LSTMCell(_Cell):
    """[i;f;o;g] = W_x x_t + W_h h_{t-1} + b; c_t = s(f) c + s(i) tanh(g); h_t = s(o) tanh(c_t)."""

    def setup(self):
        self.input_kernel = self._input_dense("input_kernel")
        self.hidden_kernel = self._hidden_dense("hidden_kernel")
        self.bias = self.param("bias", self.bias_init, (4 * self.features,))

    def project_inputs(self, xs: Array, mask: Array | None = None, *,
                       train: bool = False) -> InputTerms:
        del mask, train
        return InputTerms(self.input_kernel(xs))  # [B, T, 4H]

    def step(self, carry: Carry, inputs: StepInput, *,
             train: bool = False) -> tuple[Carry, StepOutput]:
        del train
        c, h = carry
        gates = inputs.projected + self.hidden_kernel(h) + self.bias
        c, o = _lstm_update(gates, c)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), StepOutput(h)


class LNLSTMCell(_Cell):
    """Layer-normalized LSTM (Ba et al. 2016, suppl. eq. 20-22; ryankiros/layer-norm lnlstm_layer).

      [i;f;o;g] = LN(W_x x_t; a1, b1) + LN(W_h h_{t-1}; a2, b2) + b    (each LN over all 4H jointly)
      c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)
      h_t = sigmoid(o) tanh(LN(c_t; a3, b3))        (the raw c_t carries to the next step)

    `gain_init` is the initial value of every LN gain (1.0; sec. 6.2 found 0.1 worse). No
    statistics to keep: each LN uses the current example and step only. The step after W_h h runs
    as one function with a hand-written VJP (`cell_ops.ln_lstm_update`); the hidden and cell LNs
    therefore hold only their parameters (`layers.LayerNormParams`, same names as a LayerNorm's).
    """
    gain_init: float = 1.0
    epsilon: float = ops.DEFAULT_EPSILON

    def setup(self):
        gain = nn.initializers.constant(self.gain_init)
        self.input_kernel = self._input_dense("input_kernel")
        self.hidden_kernel = self._hidden_dense("hidden_kernel")
        self.bias = self.param("bias", self.bias_init, (4 * self.features,))
        self.input_norm = layers.LayerNorm(self.epsilon, scale_init=gain)
        self.hidden_norm = layers.LayerNormParams(4 * self.features, scale_init=gain)
        self.cell_norm = layers.LayerNormParams(self.features, scale_init=gain)

    def project_inputs(self, xs: Array, mask: Array | None = None, *,
                       train: bool = False) -> InputTerms:
        del mask, train
        # One LN call over [B, T, 4H]: statistics per example and per time step.
        return InputTerms(self.input_norm(self.input_kernel(xs)))

    def step(self, carry: Carry, inputs: StepInput, *,
             train: bool = False) -> tuple[Carry, StepOutput]:
        del train
        c, h = carry
        c, h = cell_ops.ln_lstm_update(inputs.projected, self.hidden_kernel(h), c, self.bias,
                                       *self.hidden_norm(), *self.cell_norm(), self.epsilon)
        return (c, h), StepOutput(h)


class GRUCell(_Cell):
    """[z;r] = W_zr x + U_zr h + b_zr; h~ = tanh(W x + b + s(r) * (U h));
    h_t = (1-s(z)) h + s(z) h~."""
    num_gates = 3
    carry_parts = 1

    def setup(self):
        self.input_kernel = self._input_dense("input_kernel")
        self.hidden_kernel = self._hidden_dense("hidden_kernel")
        self.bias = self.param("bias", self.bias_init, (3 * self.features,))

    def project_inputs(self, xs: Array, mask: Array | None = None, *,
                       train: bool = False) -> InputTerms:
        del mask, train
        return InputTerms(self.input_kernel(xs) + self.bias)  # [B, T, 3H]: [z; r], candidate

    def step(self, h: Array, inputs: StepInput, *,
             train: bool = False) -> tuple[Array, StepOutput]:
        del train
        h = _gru_update(h, inputs.projected, self.hidden_kernel(h), self.features)
        return h, StepOutput(h)


def _gru_update(h: Array, x_terms: Array, h_terms: Array, features: int) -> Array:
    """Shared GRU arithmetic on the (normalized) [.., 3H] input and hidden terms: returns h_t."""
    zr = jax.nn.sigmoid(x_terms[..., :2 * features] + h_terms[..., :2 * features])
    z, r = zr[..., :features], zr[..., features:]
    candidate = jnp.tanh(x_terms[..., 2 * features:] + r * h_terms[..., 2 * features:])
    return (1.0 - z) * h + z * candidate


class LNGRUCell(_Cell):
    """Layer-normalized GRU (Ba et al. 2016, suppl. eq. 23-28; ryankiros/layer-norm lngru_layer).

      [z;r] = LN(W_h h) + LN(W_x x)            (over the 2H gate pre-activations jointly)
      h~ = tanh(LN(W x) + sigmoid(r) * LN(U h))
      h_t = (1 - sigmoid(z)) h_{t-1} + sigmoid(z) h~
    Four LNs, each with its own gain and bias (the LN biases play the role of b). No statistics
    to keep.
    """
    num_gates = 3
    carry_parts = 1
    gain_init: float = 1.0
    epsilon: float = ops.DEFAULT_EPSILON

    def setup(self):
        gain = nn.initializers.constant(self.gain_init)
        self.input_kernel = self._input_dense("input_kernel")
        self.hidden_kernel = self._hidden_dense("hidden_kernel")
        make = lambda name: layers.LayerNorm(self.epsilon, scale_init=gain, name=name)
        self.input_gate_norm, self.input_candidate_norm = make("input_gate_norm"), make(
            "input_candidate_norm")
        self.hidden_gate_norm, self.hidden_candidate_norm = make("hidden_gate_norm"), make(
            "hidden_candidate_norm")

    def _normalize(self, terms: Array, gate_norm, candidate_norm) -> Array:
        split = 2 * self.features
        return jnp.concatenate(
            [gate_norm(terms[..., :split]), candidate_norm(terms[..., split:])], axis=-1)

    def project_inputs(self, xs: Array, mask: Array | None = None, *,
                       train: bool = False) -> InputTerms:
        del mask, train
        return InputTerms(self._normalize(self.input_kernel(xs), self.input_gate_norm,
                                          self.input_candidate_norm))

    def step(self, h: Array, inputs: StepInput, *,
             train: bool = False) -> tuple[Array, StepOutput]:
        del train
        h_terms = self._normalize(self.hidden_kernel(h), self.hidden_gate_norm,
                                  self.hidden_candidate_norm)
        h = _gru_update(h, inputs.projected, h_terms, self.features)
        return h, StepOutput(h)


class BNLSTMCell(_Cell):
    """Recurrent batch norm LSTM (Cooijmans et al. 2016, eq. 6-8).

      [i;f;o;g] = BN(W_h h_{t-1}; gamma_h, 0) + BN(W_x x_t; gamma_x, 0) + b
      c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)
      h_t = sigmoid(o) tanh(BN(c_t; gamma_c, beta_c))

    Statistics per unit over the batch and separately at every time step, excluding padding;
    gamma init 0.1. Population statistics per step 1..max_steps, EMA with `momentum`; steps past
    max_steps use step max_steps's statistics.
    """
    max_steps: int = 1000
    momentum: float = 0.99
    epsilon: float = ops.DEFAULT_EPSILON
    gamma_init: float = BN_GAMMA_INIT

    def setup(self):
        gamma = nn.initializers.constant(self.gamma_init)
        self.input_kernel = self._input_dense("input_kernel")
        self.hidden_kernel = self._hidden_dense("hidden_kernel")
        self.bias = self.param("bias", self.bias_init, (4 * self.features,))
        self.input_gamma = self.param("input_gamma", gamma, (4 * self.features,))
        self.hidden_gamma = self.param("hidden_gamma", gamma, (4 * self.features,))
        self.cell_gamma = self.param("cell_gamma", gamma, (self.features,))
        self.cell_beta = self.param("cell_beta", nn.initializers.zeros, (self.features,))
        widths = {"input": 4 * self.features, "hidden": 4 * self.features, "cell": self.features}
        self.population = {
            name: (self.variable("batch_stats", f"{name}_mean", jnp.zeros,
                                 (self.max_steps, width), jnp.float32),
                   self.variable("batch_stats", f"{name}_var", jnp.ones,
                                 (self.max_steps, width), jnp.float32))
            for name, width in widths.items()}

    def learnable_initial_carry(self) -> tuple[bool, ...]:
        """c0 only; h0 stays zero. A learned h0 is the same for every example, so W_h h0 has no
        variance over the batch and its batch norm at step 0 is exactly 0 in training: h0 would
        get no gradient but round-off, which Adam turns into a random walk, while at evaluation
        the step-0 population statistics (mean lagging that walk, variance ~0) would amplify the
        drift by 1/sqrt(eps). With h0 = 0 the step-0 hidden term is 0 in both modes."""
        return (True, False)

    def population_statistics(self, num_steps: int) -> dict[str, ops.BatchStats]:
        # Steps past max_steps reuse the last step's statistics (Cooijmans et al. 2016, sec. 4).
        index = jnp.minimum(jnp.arange(num_steps), self.max_steps - 1)
        return {name: ops.BatchStats(mean.value[index], var.value[index])
                for name, (mean, var) in self.population.items()}

    def update_population(self, input_stats: ops.BatchStats,
                          step_stats: dict[str, ops.BatchStats], mask: Array) -> None:
        """input_stats: BatchStats([T, 4H]) from project_inputs; step_stats: {'hidden', 'cell'}:
        BatchStats([T, F]) stacked over the scan; mask [B, T]. Steps with no real example, and
        steps past max_steps, leave the population unchanged."""
        if self.is_initializing() or not self.is_mutable_collection("batch_stats"):
            return
        batch_stats = {"input": input_stats, **step_stats}
        num_steps = mask.shape[1]
        used = min(num_steps, self.max_steps)
        valid = (jnp.sum(mask[:, :used], axis=0) > 0)[:, None]  # [used, 1]
        for name, (mean, var) in self.population.items():
            stats = ops.BatchStats(batch_stats[name].mean[:used], batch_stats[name].var[:used])
            old = ops.BatchStats(mean.value[:used], var.value[:used])
            new = ops.update_population_statistics(old, stats, momentum=self.momentum,
                                                   valid=valid)
            mean.value = mean.value.at[:used].set(new.mean)
            var.value = var.value.at[:used].set(new.var)

    def _bn(self, a, gamma, beta, mask, population, *, train, axis=0):
        """(BN(a), batch statistics) in training; (BN(a) with population, None) in evaluation."""
        if train:
            return ops.batch_norm(a, gamma, beta, axis=axis, epsilon=self.epsilon, mask=mask)
        return ops.batch_norm_inference(a, gamma, beta, population.mean, population.var,
                                        axis=axis, epsilon=self.epsilon), None

    def project_inputs(self, xs: Array, mask: Array | None = None, *,
                       train: bool = False) -> InputTerms:
        """BN over the batch axis only of [B, T, 4H]: per-time-step statistics in one call
        (batch_stats [T, 4H] in training)."""
        a = self.input_kernel(xs)
        if mask is None:
            mask = jnp.ones(a.shape[:-1], jnp.float32)
        population = None if train else self.population_statistics(a.shape[1])["input"]
        return InputTerms(*self._bn(a, self.input_gamma, None, mask, population, train=train))

    def step(self, carry: Carry, inputs: StepInput, *,
             train: bool = False) -> tuple[Carry, StepOutput]:
        c, h = carry
        pop = inputs.population or {}
        a_h, h_stats = self._bn(self.hidden_kernel(h), self.hidden_gamma, None, inputs.mask,
                                pop.get("hidden"), train=train)
        c, o = _lstm_update(inputs.projected + a_h + self.bias, c)
        c_norm, c_stats = self._bn(c, self.cell_gamma, self.cell_beta, inputs.mask,
                                   pop.get("cell"), train=train)
        h = jax.nn.sigmoid(o) * jnp.tanh(c_norm)
        return (c, h), StepOutput(h, {"hidden": h_stats, "cell": c_stats} if train else None)


CELLS: dict[str, type[_Cell]] = {
    "lstm": LSTMCell,
    "lnlstm": LNLSTMCell,
    "bnlstm": BNLSTMCell,
    "gru": GRUCell,
    "lngru": LNGRUCell,
}


def make_cell(name: str, features: int, **kwargs) -> _Cell:
    """Cell constructor by config name: one of CELLS."""
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; choose one of {sorted(CELLS)}.")
    return CELLS[name](features, **kwargs)


class SequenceRunner(nn.Module):
    """Runs a cell over [B, T, D] inputs with a mask [B, T] (1 = real step, 0 = padding).

    1. cell.project_inputs: all time steps' input terms at once (one matmul, one vectorized norm);
    2. nn.scan over time of cell.step; on padded steps the carry is copied from the previous step,
       so the final carry of each sequence is its last real step's;
    3. in training, cell.update_population with the per-step batch statistics (a no-op for every
       cell but BN's).

    Returns (final carry, outputs [B, T, H]); outputs on padded steps repeat the last real h.
    """
    cell: _Cell
    # The attentive reader learns the initial state (ryankiros/layer-norm: learned h0; we learn c0
    # too). BN cells learn c0 only (see BNLSTMCell.learnable_initial_carry).
    learn_initial_carry: bool = False

    @nn.compact
    def __call__(self, xs: Array, mask: Array | None = None, *, train: bool = False,
                 initial_carry: Carry | None = None) -> tuple[Carry, Array]:
        batch, num_steps = xs.shape[:2]
        mask = (jnp.ones((batch, num_steps), jnp.float32) if mask is None
                else mask.astype(jnp.float32))
        if initial_carry is None:
            initial_carry = self._initial_carry(batch)

        inputs = self.cell.project_inputs(xs, mask, train=train)
        population = None if train else self.cell.population_statistics(num_steps)

        def body(cell, carry, step_input: StepInput):
            new_carry, out = cell.step(carry, step_input, train=train)
            keep = step_input.mask[:, None] > 0
            new_carry = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_carry, carry)
            return new_carry, out._replace(h=jnp.where(keep, out.h, cell.hidden(carry)))

        scan = nn.scan(body, variable_broadcast=("params", "batch_stats"),
                       split_rngs={"params": False},
                       in_axes=0, out_axes=0)
        time_major = StepInput(jnp.swapaxes(inputs.terms, 0, 1), mask.T, population)
        carry, outputs = scan(self.cell, initial_carry, time_major)  # StepOutput, [T, B, H]

        if train:
            self.cell.update_population(inputs.batch_stats, outputs.batch_stats, mask)
        return carry, jnp.swapaxes(outputs.h, 0, 1)

    def _initial_carry(self, batch: int) -> Carry:
        carry = self.cell.initialize_carry(jax.random.key(0), (batch, self.cell.features))
        if not self.learn_initial_carry:
            return carry
        leaves, treedef = jax.tree.flatten(carry)
        learned = [jnp.broadcast_to(self.param(f"initial_carry_{i}", nn.initializers.zeros,
                                               leaf.shape[-1:]), leaf.shape) if learn else leaf
                   for i, (leaf, learn) in enumerate(zip(leaves,
                                                         self.cell.learnable_initial_carry()))]
        return jax.tree.unflatten(treedef, learned)
