"""The unidirectional attentive reader (Hermann et al. 2015) as Ba et al. 2016, sec. 6.2, used it.

Follows cooijmanstim/Attentive_reader (branch bn), codes/att_reader/model.py, with d = 240:

  e = dropout(Embed(tokens))                                  shared by document and query
  y_d = LSTM_doc(e_doc)            [B, T, d]                  u = last state of LSTM_q(e_q) [B, d]
  s_t = (W_bi^T y_d(t)) . (W_bi^T u)                          scalar bilinear similarity
  m_t = tanh(W_ctx y_d(t) + b_ctx + W_q u + s_t)              [B, T, d]
  alpha = masked_softmax_t(w^T m_t),  r = sum_t alpha_t y_d(t)
  g = dropout(tanh(W_oc r + W_oq u + b + W_md mean_t(y_d)))
  logits = W_out g                 [B, V]                      NLL over the whole vocabulary

`cell` picks the recurrent cell (lstm | bnlstm | lnlstm). LN sits only inside the LSTMs (sec. 6.2).
`bn_everywhere` adds BN (gamma 0.1, statistics masked) to each linear term feeding a tanh in the
attention and the readout: ff_att_ctx, ff_att_q, ff_out_ctx, ff_out_q, ff_out_mean_d; the BN's
beta replaces the bias of the terms that have one (b_ctx, b). The bilinear similarity and the
logit layer are not normalized.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnrepro import layers, rnn

CELLS = ("lstm", "bnlstm", "lnlstm")


class AttentiveReader(nn.Module):
    vocab_size: int
    features: int = 240
    cell: str = "lnlstm"
    bn_everywhere: bool = False
    ln_gain_init: float = 1.0  # sec. 6.2: 1.0 was significantly better than 0.1
    dropout_rate: float = 0.5
    max_document_steps: int = 1000  # BN-LSTM keeps population statistics for this many steps
    max_query_steps: int = 100

    def _runner(self, name: str, max_steps: int) -> rnn.SequenceRunner:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}.")
        kwargs = {"lnlstm": {"gain_init": self.ln_gain_init},
                  "bnlstm": {"max_steps": max_steps}}.get(self.cell, {})
        # parent=None: the runner adopts the cell, so its params sit under <name>/cell.
        cell = rnn.make_cell(self.cell, self.features, parent=None, **kwargs)
        return rnn.SequenceRunner(cell, learn_initial_carry=True, name=name)

    def _feedforward(self, name: str, x, *, train: bool, mask=None, use_bias: bool = False):
        """A linear term feeding a tanh: BN'd (gamma 0.1) when bn_everywhere, the BN's beta then
        standing in for the term's bias (b_ctx, the readout's b), as in the
        cooijmanstim/Attentive_reader code's bn(dot(x, W), gamma, b)."""
        y = nn.Dense(self.features, use_bias=use_bias and not self.bn_everywhere, name=name)(x)
        if not self.bn_everywhere:
            return y
        norm = layers.BatchNorm(use_bias=use_bias, name=f"{name}_bn",
                                scale_init=nn.initializers.constant(rnn.BN_GAMMA_INIT))
        return norm(y, use_running_average=not train, mask=mask)

    def _sequence_dropout(self, x: jax.Array, max_steps: int, train: bool) -> jax.Array:
        """Dropout on [B, T, F] whose mask does not depend on how far the batch is padded: it is
        drawn for max_steps steps and cut to T. A member of a group (lnrepro.train.
        train_members), padded to the longest member's length, then draws the masks its single
        run draws."""
        if not train or self.dropout_rate == 0.0:
            return x
        if x.shape[1] > max_steps:
            raise ValueError(f"a batch of {x.shape[1]} steps exceeds max_steps={max_steps}.")
        keep_prob = 1.0 - self.dropout_rate
        keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob,
                                    (x.shape[0], max_steps, x.shape[2]))[:, :x.shape[1]]
        return jax.lax.select(keep, x / keep_prob, jnp.zeros_like(x))

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
        """batch: document [B, T], document_mask [B, T], query [B, Q], query_mask [B, Q] ->
        logits [B, vocab_size]."""
        doc_mask = batch["document_mask"].astype(jnp.float32)
        query_mask = batch["query_mask"].astype(jnp.float32)
        embed = nn.Embed(self.vocab_size, self.features, name="embedding")
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)

        _, y_d = self._runner("document_lstm", self.max_document_steps)(
            self._sequence_dropout(embed(batch["document"]), self.max_document_steps, train),
            doc_mask, train=train)                                              # [B, T, d]
        (_, u), _ = self._runner("query_lstm", self.max_query_steps)(
            self._sequence_dropout(embed(batch["query"]), self.max_query_steps, train),
            query_mask, train=train)                                            # [B, d]

        bilinear = nn.Dense(self.features, use_bias=False, name="bilinear")
        similarity = jnp.einsum("btd,bd->bt", bilinear(y_d), bilinear(u))      # [B, T]
        m = jnp.tanh(self._feedforward("ff_att_ctx", y_d, train=train, mask=doc_mask, use_bias=True)
                     + self._feedforward("ff_att_q", u, train=train)[:, None, :]
                     + similarity[..., None])
        scores = nn.Dense(1, use_bias=False, name="attention_score")(m)[..., 0]  # [B, T]
        alpha = jax.nn.softmax(jnp.where(doc_mask > 0, scores, -1e9), axis=-1)
        r = jnp.einsum("bt,btd->bd", alpha, y_d)
        mean_d = jnp.sum(y_d * doc_mask[..., None], 1) / jnp.maximum(
            jnp.sum(doc_mask, 1, keepdims=True), 1.0)

        g = jnp.tanh(self._feedforward("ff_out_ctx", r, train=train, use_bias=True)
                     + self._feedforward("ff_out_q", u, train=train)
                     + self._feedforward("ff_out_mean_d", mean_d, train=train))
        return nn.Dense(self.vocab_size, name="logits")(dropout(g))
