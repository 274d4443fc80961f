"""lnrepro.models.attentive_reader.AttentiveReader on its own (no data pipeline):

1. the whole forward pass in evaluation mode against a float64 numpy reference written from the
   model's equations (module docstring; paper-spec sec. 3), for the LSTM and LN-LSTM readers, with
   every parameter randomized; the reference with any one term dropped must disagree;
2. document padding in training mode (dropout 0 so the pass is deterministic): extra padded
   document steps change neither the logits, the loss, the gradients, nor the BN batch
   statistics, for every cell and for BN-everywhere.

Sizes are tiny (V=11, d=4, B=3, T=6, Q=3) and each model variant is initialized and compiled
once, so the file runs in seconds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrepro import train
from lnrepro.models.attentive_reader import AttentiveReader
from tests.test_rnn import _np, np_ln, sigmoid  # the float64 references

V, F, B, T, Q = 11, 4, 3, 6, 3
DOC_LENGTHS = np.array([6, 3, 5])
QUERY_LENGTHS = np.array([3, 1, 2])
EXTRA = 4  # padded document steps appended in the padding tests
MAX_DOC_STEPS = T + EXTRA + 2  # BN-LSTM population arrays: some steps are never reached
BN_MOMENTUM = 0.99  # BNLSTMCell and layers.BatchNorm defaults (not configurable in the reader)
VARIANTS = {  # name: (cell, bn_everywhere)
    "lstm": ("lstm", False),
    "lnlstm": ("lnlstm", False),
    "bnlstm": ("bnlstm", False),
    "bn_everywhere": ("bnlstm", True),
}


# ----------------------------------------------------------------------------------------------
# Batches, models, variables (cached: initialization and compilation are the slow part)
# ----------------------------------------------------------------------------------------------

def _mask(lengths, t):
    return (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


def _batch(seed=0):
    """Document [B, T] and query [B, Q] with junk (non-pad) token ids under the zero mask, so
    that any leak of padding into the result would show."""
    rng = np.random.default_rng(seed)
    return {
        "document": jnp.asarray(rng.integers(0, V, size=(B, T)), jnp.int32),
        "document_mask": jnp.asarray(_mask(DOC_LENGTHS, T)),
        "query": jnp.asarray(rng.integers(0, V, size=(B, Q)), jnp.int32),
        "query_mask": jnp.asarray(_mask(QUERY_LENGTHS, Q)),
        "label": jnp.asarray(rng.integers(0, V, size=B), jnp.int32),
    }


def _pad_document(batch, extra=EXTRA, seed=1):
    """`extra` more document steps with random junk ids and mask 0."""
    junk = np.random.default_rng(seed).integers(0, V, size=(B, extra))
    return {**batch,
            "document": jnp.concatenate([batch["document"], jnp.asarray(junk, jnp.int32)], 1),
            "document_mask": jnp.pad(batch["document_mask"], ((0, 0), (0, extra)))}


@functools.lru_cache(maxsize=None)
def _model(variant, dropout_rate):
    cell, bn_everywhere = VARIANTS[variant]
    return AttentiveReader(vocab_size=V, features=F, cell=cell, bn_everywhere=bn_everywhere,
                           dropout_rate=dropout_rate, max_document_steps=MAX_DOC_STEPS,
                           max_query_steps=Q + 2)


@functools.lru_cache(maxsize=None)
def _init(variant):
    model = _model(variant, 0.0)  # the dropout rate creates no variables
    return jax.jit(functools.partial(model.init, train=False))(
        {"params": jax.random.key(0), "dropout": jax.random.key(0)}, _batch())


def _randomize(params, seed=1, scale=0.4):
    """Every parameter moved by scale * N(0, 1): non-zero biases and initial carries, non-unit
    gains; float32."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [
        jnp.asarray(np.asarray(l) + scale * rng.normal(size=l.shape), jnp.float32)
        for l in leaves])




def _cell_scope(tree, runner, cell):
    """Key path of a runner's cell variables in `tree` (params or batch_stats): the runner adopts
    its cell, so they sit under `<runner>/cell`, beside the runner's learned initial carry."""
    del cell
    assert "cell" in tree.get(runner, {}), f"no {runner}/cell in {sorted(tree)}"
    return (runner, "cell")


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _variables(variant, seed=1):
    variables = _init(variant)
    return {**variables, "params": _randomize(variables["params"], seed)}


# ----------------------------------------------------------------------------------------------
# float64 numpy reference of the forward pass (evaluation mode, LSTM and LN-LSTM cells)
# ----------------------------------------------------------------------------------------------

TERMS = ("initial_carry", "query_mask", "bilinear", "att_ctx", "b_ctx", "att_q", "att_mask",
         "readout_r", "readout_q", "readout_b", "readout_mean", "mean_mask")


def np_lstm_run(cell, p, xs, mask, carry):
    """LSTM / LN-LSTM (Ba et al. suppl. eq. 20-22) over xs [B, T, D]; on padded steps (mask 0)
    the carry (c, h) is kept. Returns (outputs [B, T, H] = h after each step, final (c, h))."""
    c, h = carry
    wx, wh, b = _np(p["input_kernel"]["kernel"]), _np(p["hidden_kernel"]["kernel"]), _np(p["bias"])
    outputs = []
    for t in range(xs.shape[1]):
        a_x, a_h = xs[:, t] @ wx, h @ wh
        if cell == "lnlstm":
            a_x, a_h = np_ln(a_x, p["input_norm"]), np_ln(a_h, p["hidden_norm"])
        i, f, o, g = np.split(a_x + a_h + b, 4, axis=-1)  # gate order [i; f; o; g]
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        c_out = np_ln(c_new, p["cell_norm"]) if cell == "lnlstm" else c_new
        h_new = sigmoid(o) * np.tanh(c_out)
        keep = mask[:, t, None] > 0
        c, h = np.where(keep, c_new, c), np.where(keep, h_new, h)
        outputs.append(h)
    return np.stack(outputs, 1), (c, h)


def np_reader(cell, params, batch, drop=()):
    """The attentive reader's logits [B, V] in float64, from the equations:

      e = E[tokens];  y_d = LSTM_doc(e_doc);  u = h at the query's last real step
      s_t = (W_bi^T y_d(t)) . (W_bi^T u)
      m_t = tanh(W_ctx y_d(t) + b_ctx + W_q u + s_t)
      alpha = softmax over the real steps of w^T m_t;  r = sum_t alpha_t y_d(t)
      g = tanh(W_oc r + b + W_oq u + W_md mean_{real t}(y_d));  logits = W_out g + b_out

    `drop`: names from TERMS to leave out (to show that the comparison sees each of them)."""
    unknown = set(drop) - set(TERMS)
    assert not unknown, unknown
    p = jax.tree.map(_np, params)
    doc_mask, query_mask = _np(batch["document_mask"]), _np(batch["query_mask"])
    if "query_mask" in drop:
        query_mask = np.ones_like(query_mask)
    embedding = p["embedding"]["embedding"]
    e_doc, e_query = embedding[np.asarray(batch["document"])], embedding[np.asarray(batch["query"])]

    def run(name, xs, mask):
        q = p.get(name, {})
        carry = [np.zeros((B, F)), np.zeros((B, F))]
        if "initial_carry" not in drop:  # learned (c0, h0) where the runner has them
            for k in range(2):
                if f"initial_carry_{k}" in q:
                    carry[k] = np.broadcast_to(q[f"initial_carry_{k}"], (B, F))
        return np_lstm_run(cell, _get(p, _cell_scope(p, name, cell)), xs, mask, tuple(carry))

    y_d, _ = run("document_lstm", e_doc, doc_mask)                          # [B, T, d]
    _, (_, u) = run("query_lstm", e_query, query_mask)                      # [B, d]

    dense = lambda name, x: x @ p[name]["kernel"] + (p[name]["bias"] if "bias" in p[name] else 0)
    keep = lambda term, x: 0.0 if term in drop else x
    w_bi = p["bilinear"]["kernel"]
    s = np.einsum("btd,bd->bt", y_d @ w_bi, u @ w_bi)                       # [B, T]
    m = np.tanh(keep("att_ctx", y_d @ p["ff_att_ctx"]["kernel"])
                + keep("b_ctx", p["ff_att_ctx"]["bias"])
                + keep("att_q", (u @ p["ff_att_q"]["kernel"])[:, None, :])
                + keep("bilinear", s[..., None]))
    scores = (m @ p["attention_score"]["kernel"])[..., 0]                   # [B, T]
    real = np.ones_like(doc_mask) if "att_mask" in drop else doc_mask
    weights = np.exp(scores - np.max(np.where(real > 0, scores, -np.inf), 1, keepdims=True))
    weights = weights * real
    alpha = weights / weights.sum(1, keepdims=True)
    r = np.einsum("bt,btd->bd", alpha, y_d)
    mean_mask = np.ones_like(doc_mask) if "mean_mask" in drop else doc_mask
    mean_d = (y_d * mean_mask[..., None]).sum(1) / mean_mask.sum(1, keepdims=True)
    g = np.tanh(keep("readout_r", r @ p["ff_out_ctx"]["kernel"])
                + keep("readout_b", p["ff_out_ctx"]["bias"])
                + keep("readout_q", u @ p["ff_out_q"]["kernel"])
                + keep("readout_mean", mean_d @ p["ff_out_mean_d"]["kernel"]))
    return dense("logits", g)


REF_RTOL, REF_ATOL = 1e-5, 2e-6  # float32 model vs float64 reference: errors ~3e-7 seen


@functools.lru_cache(maxsize=None)
def _eval_fn(variant):
    # Dropout 0.5 (the paper's): evaluation must not apply it.
    return jax.jit(functools.partial(_model(variant, 0.5).apply, train=False))


def _leaf_paths(tree):
    return {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("variant", ["lstm", "lnlstm"])
def test_forward_matches_float64_reference_in_evaluation(variant):
    variables = _variables(variant)
    params = variables["params"]
    # The reference reads exactly these parameters: any other one would be untested.
    cell_params = ["['bias']", "['hidden_kernel']['kernel']", "['input_kernel']['kernel']"]
    if variant == "lnlstm":
        cell_params += [f"['{n}']['{k}']" for n in ("input_norm", "hidden_norm", "cell_norm")
                        for k in ("scale", "bias")]
    prefix = lambda runner: "".join(f"['{k}']" for k in _cell_scope(params, runner, variant))
    expected = {prefix(r) + c for r in ("document_lstm", "query_lstm") for c in cell_params}
    expected |= {f"['{r}']['initial_carry_{k}']" for r in ("document_lstm", "query_lstm")
                 for k in (0, 1)}
    expected |= {"['embedding']['embedding']", "['bilinear']['kernel']",
                 "['ff_att_ctx']['kernel']", "['ff_att_ctx']['bias']", "['ff_att_q']['kernel']",
                 "['attention_score']['kernel']", "['ff_out_ctx']['kernel']",
                 "['ff_out_ctx']['bias']", "['ff_out_q']['kernel']",
                 "['ff_out_mean_d']['kernel']", "['logits']['kernel']", "['logits']['bias']"}
    assert _leaf_paths(params) == expected
    assert set(variables) == {"params"}  # no BN anywhere

    batch = _batch()
    logits = np.asarray(_eval_fn(variant)(variables, batch))
    assert logits.shape == (B, V) and logits.dtype == np.float32
    ref = np_reader(variant, params, batch)
    np.testing.assert_allclose(logits, ref, rtol=REF_RTOL, atol=REF_ATOL)  # |logits| ~ 1

    # The comparison sees every term: the reference without any one of them is far off (the
    # smallest effect, W_q u in the LSTM reader's attention, is ~1e-3).
    for term in TERMS:
        off = np.abs(np_reader(variant, params, batch, drop=(term,)) - logits).max()
        assert off > 50 * REF_ATOL, (term, off)
    # Other junk ids under the document mask change nothing.
    junk = {**batch, "document": jnp.where(batch["document_mask"] > 0, batch["document"],
                                           (batch["document"] + 5) % V)}
    np.testing.assert_allclose(np.asarray(_eval_fn(variant)(variables, junk)), logits,
                               rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Document padding in training mode
# ----------------------------------------------------------------------------------------------

GRADIENT_VARIANTS = ("bn_everywhere",)  # gradients compile ~3x slower than the forward pass:
# checked for the variant that exercises every masked statistic (BN-LSTM and the masked BN of
# ff_att_ctx), whose fully padded steps normalize with zero-count statistics


@functools.lru_cache(maxsize=None)
def _train_fn(variant):
    """(loss, logits, batch_stats after the update or None, grads or None) of one training-mode
    pass, the loss as train.train_step computes it; dropout 0, so deterministic."""
    model = _model(variant, 0.0)

    def fn(variables, batch):
        has_bs = "batch_stats" in variables

        def loss_fn(params):
            out = model.apply({**variables, "params": params}, batch, train=True,
                              rngs={"dropout": jax.random.key(3)},
                              mutable=["batch_stats"] if has_bs else False)
            logits, updates = out if has_bs else (out, {})
            return jnp.mean(train.cross_entropy(logits, batch["label"])), (logits, updates)

        if variant in GRADIENT_VARIANTS:
            (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                variables["params"])
        else:
            (loss, (logits, updates)), grads = loss_fn(variables["params"]), None
        return loss, logits, updates.get("batch_stats"), grads

    return jax.jit(fn)


def _assert_trees_close(a, b, **tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path),
                                   **tol)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_document_padding_changes_nothing_in_training(variant):
    """Training mode, dropout 0: a batch and the same batch with EXTRA more padded document
    steps (junk ids, mask 0) give the same logits and loss (and gradients, for
    GRADIENT_VARIANTS), and the same BN batch statistics (the population EMA starts from zero,
    so the update is (1 - momentum) x this batch's statistics): equal per-step statistics on the
    real steps, and no update at steps without a real token."""
    cell, bn_everywhere = VARIANTS[variant]
    variables = _variables(variant)
    has_bs = cell == "bnlstm" or bn_everywhere
    assert ("batch_stats" in variables) == has_bs
    # Learned initial state: (c0, h0), but c0 only for BN-LSTM.
    for runner in ("document_lstm", "query_lstm"):
        assert "initial_carry_0" in variables["params"][runner]
        assert ("initial_carry_1" in variables["params"][runner]) == (cell != "bnlstm")
    if has_bs:
        variables["batch_stats"] = jax.tree.map(jnp.zeros_like, variables["batch_stats"])

    batch = _batch(seed=2)
    padded = _pad_document(batch)
    fn = _train_fn(variant)
    loss, logits, stats, grads = fn(variables, batch)
    p_loss, p_logits, p_stats, p_grads = fn(variables, padded)

    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(logits)))
    np.testing.assert_allclose(np.asarray(p_logits), np.asarray(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(p_loss), float(loss), rtol=1e-6, atol=1e-6)
    if variant in GRADIENT_VARIANTS:
        assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(p_grads))
        _assert_trees_close(p_grads, grads, rtol=1e-4, atol=1e-6)

    if has_bs:
        to_batch_stats = lambda tree: jax.tree.map(lambda s: s / (1.0 - BN_MOMENTUM), tree)
        _assert_trees_close(to_batch_stats(p_stats), to_batch_stats(stats), rtol=1e-5, atol=1e-5)
        if cell == "bnlstm":
            for runner, steps in (("document_lstm", MAX_DOC_STEPS), ("query_lstm", Q + 2)):
                for name, value in _get(p_stats, _cell_scope(p_stats, runner, cell)).items():
                    assert value.shape[0] == steps, (runner, name)  # the right cell for each
            # Every real step is updated (a non-zero variance only where >= 2 examples are real,
            # and no hidden-term statistics at step 0, where h0 = 0); the steps with no real
            # token, and those past the batch, are not.
            for name, value in _get(p_stats, _cell_scope(p_stats, "document_lstm", cell)).items():
                value = np.asarray(value)
                steps = np.ones(T, bool) if name.endswith("_mean") else (
                    _mask(DOC_LENGTHS, T).sum(0) >= 2)
                if name.startswith("hidden"):
                    steps[0] = False
                assert np.all(np.abs(value[:T][steps]).max(1) > 0), name
                np.testing.assert_array_equal(value[T:], 0.0, err_msg=name)
        if bn_everywhere:
            assert {"ff_att_ctx_bn", "ff_att_q_bn", "ff_out_ctx_bn", "ff_out_q_bn",
                    "ff_out_mean_d_bn"} <= set(p_stats)

    # Not vacuous: the same junk steps unmasked change the logits.
    unmasked = {**padded, "document_mask": jnp.pad(batch["document_mask"], ((0, 0), (0, EXTRA)),
                                                   constant_values=1.0)}
    _, u_logits, _, _ = fn(variables, unmasked)
    assert np.abs(np.asarray(u_logits) - np.asarray(logits)).max() > 1e-3


def test_bn_everywhere_normalizes_every_tanh_term_and_keeps_the_biases_as_betas():
    params = _init("bn_everywhere")["params"]
    terms = ("ff_att_ctx", "ff_att_q", "ff_out_ctx", "ff_out_q", "ff_out_mean_d")
    for term in terms:
        assert set(params[term]) == {"kernel"}  # the dense layer's own bias goes to BN's beta
        expected = {"scale", "bias"} if term in ("ff_att_ctx", "ff_out_ctx") else {"scale"}
        assert set(params[f"{term}_bn"]) == expected, term
        np.testing.assert_array_equal(np.asarray(params[f"{term}_bn"]["scale"]), np.float32(0.1))
    # Not normalized: the bilinear similarity, the attention score and the logits.
    assert not any(f"{name}_bn" in params for name in ("bilinear", "attention_score", "logits"))
