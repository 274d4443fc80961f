"""The permutation-invariant MNIST network: 784-1000-1000-10 (Ba et al. 2016, sec. 6.6, Fig. 6)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from lnrepro import layers

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh}
BN_EVAL_STATISTICS = ("population", "batch")


class MLP(nn.Module):
    """Dense layers with a normalization of each layer's summed inputs.

    Attributes:
      norm: none | batch | layer | weight.
      normalize_logits: also normalize the logit layer. The paper applies BN "to all layers" but
        LN to the hidden layers only (the logits' scale carries the confidence), so the default
        is True for batch and weight norm and False for layer norm (see `default_normalize_logits`).
      unbiased_batch_variance: BN with the n - 1 variance (the paper at batch size 4).
      bn_eval_statistics: at evaluation, BN uses its population statistics or the statistics of
        the evaluation batch.
    """
    hidden_sizes: Sequence[int] = (1000, 1000)
    num_classes: int = 10
    norm: str = "layer"
    normalize_logits: bool = False
    unbiased_batch_variance: bool = False
    bn_eval_statistics: str = "population"
    activation: str = "relu"

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
        """batch['image'] [B, 784] -> logits [B, num_classes]."""
        if self.bn_eval_statistics not in BN_EVAL_STATISTICS:
            raise ValueError(f"bn_eval_statistics must be one of {BN_EVAL_STATISTICS}, "
                             f"got {self.bn_eval_statistics!r}.")
        use_running_average = not train and self.bn_eval_statistics == "population"
        act = ACTIVATIONS[self.activation]
        x = batch["image"]
        # Evaluation batches pad their last batch and mark it with weight 0: with
        # bn_eval_statistics="batch" that padding must not enter BN's statistics.
        mask = batch.get("weight")
        # He initialization for the ReLU layers (our choice; the paper does not say).
        hidden_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
        for width in self.hidden_sizes:
            x = layers.NormedDense(width, self.norm, self.unbiased_batch_variance,
                                   kernel_init=hidden_init)(
                x, use_running_average=use_running_average, mask=mask)
            x = act(x)
        logit_norm = self.norm if self.normalize_logits else "none"
        return layers.NormedDense(self.num_classes, logit_norm, self.unbiased_batch_variance)(
            x, use_running_average=use_running_average, mask=mask)


def default_normalize_logits(norm: str) -> bool:
    """The paper's placement: BN (and WN, a reparameterization) on every layer, LN hidden only."""
    return norm in ("batch", "weight")
