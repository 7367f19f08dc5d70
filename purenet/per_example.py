"""Per-example gradients, their norms, and the gradient noise scale, from the
hand-written backward.

The backward of every layer holds its input and the gradient at its output,
and each example's own gradient is made of exactly those (Goodfellow 2015,
"Efficient per-example gradient computations"): for a dense layer on rows,
example `i`'s `dW` is `x_i^T dy_i`, whose squared norm is `|x_i|^2 |dy_i|^2`.

```python
losses, grads = per_example.grads(model, loss)(params, x, t)
# losses: (m,), each example's own loss (the loss of a batch of one)
# grads[leaf]: (m, *leaf.shape), grads[i] == jax.grad(objective(model, loss))(
#     params, x[i:i+1], t[i:i+1])
losses, sq_norms = per_example.norms(model, loss)(params, x, t)
# sq_norms[leaf]: (m,), |grads[leaf][i]|^2, without forming grads where cheaper
```

**How.** One forward pass on the batch; the gradient of each example's own
loss at the output, `dy_i`
([`example_losses_and_grads`][purenet.per_example.example_losses_and_grads]: the
loss's hand-written gradient on a batch of one, so a sequence loss averages
over the example's own valid tokens); then the model's per-example rules in
the order of its backward ([`layer_grads`][purenet.per_example.layer_grads],
[`layer_sq_norms`][purenet.per_example.layer_sq_norms], and
[`purenet.layers.per_example_rules`][purenet.layers.per_example_rules] for the
rules themselves). Dense layers use Goodfellow's identity on rows and, on
sequences, the cheaper of forming `dW_i` and the Gram ("ghost") form of Li,
Tramer, Liang & Hashimoto 2022, chosen per layer at trace time (Bu et al.
2023).

**The context.** `state`, `mask`, `train` and `key` go to the forward as in
[`backprop`][purenet.cost.backprop]. Each example's gradient is taken through
the batch's forward, so with dropout (`train=True, key=...`) example `i`'s
gradient uses the dropout mask that the batch drew for its row, the mask its
contribution to the batch gradient used (a batch of one with the same key
would draw another).

**Where examples interact** there is no per-example gradient: batch norm in
training mode raises a `ValueError` that says so. A layer with params and no
per-example rule is refused by name.

**Gradient noise scale.** [`gradient_noise`][purenet.per_example.gradient_noise]
and [`noise_scale`][purenet.per_example.noise_scale] estimate, from one batch,
`|G|^2` and `tr(Sigma)` without bias, and `B_simple = tr(Sigma) / |G|^2`
(McCandlish, Kaplan, Amodei et al. 2018, "An empirical model of large-batch
training", appendix A).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from purenet import _checks
from purenet.cost import check_model_loss
from purenet.layers import Layer, call_forward, checked_call
from purenet.layers.per_example_rules import (
    layer_grads,
    layer_sq_norms,
    per_example_from_backward,
    sq_norms_of,
)
from purenet.losses import Loss

__all__ = [
    "GradientNoise",
    "checked_passes",
    "example_losses_and_grads",
    "gradient_noise",
    "grads",
    "layer_grads",
    "layer_sq_norms",
    "noise_scale",
    "norms",
    "per_example_from_backward",
    "sq_norms_of",
]


def example_losses_and_grads(loss: Loss, y, t):
    """Each example's own loss and its gradient at the output.

    `jax.vmap` over examples of `loss.value_and_grad` on a batch of one
    (`y[i:i+1]`, `t[i:i+1]`; a tuple target such as `(labels, mask)` is
    sliced leaf by leaf), so every loss works, with its own normalisation per
    example (a sequence loss averages over the example's own valid steps).

    Args:
      loss: a [`Loss`][purenet.losses.Loss].
      y: the model's output for the batch, leading axis `m`.
      t: the targets, leading axis `m` on every leaf.

    Returns:
      `(losses, dy)`: `losses` of shape `(m,)`; `dy` shaped as `y`, row `i`
      the gradient of example `i`'s loss with respect to its output row.
    """

    def one(yi, ti):
        y1 = jax.tree.map(lambda a: a[None], yi)
        t1 = jax.tree.map(lambda a: a[None], ti)
        value, dy = loss.value_and_grad(y1, t1)
        return value, jax.tree.map(lambda a: a[0], dy)

    return jax.vmap(one)(y, t)


def _concrete(*trees) -> bool:
    return all(_checks.is_concrete(a) for a in jax.tree.leaves(trees))


def checked_passes(model: Layer, passes: Callable) -> Callable:
    """`f(params, x, t, **ctx)` running `passes(params, x, t, ctx)` with the
    params checked against `model` (as [`backprop`][purenet.cost.backprop]
    does) and, on concrete inputs, every refusal raised before any work: a
    layer without a per-example rule, or batch norm in training mode, is
    refused while tracing, so `jax.eval_shape` finds it without computing."""

    def f(params, x, t, **ctx):
        def run():
            if _concrete(params, x, t):
                jax.eval_shape(lambda: passes(params, x, t, ctx))
            return passes(params, x, t, ctx)

        return checked_call(model, params, x, run)

    return f


def _per_example(model: Layer, loss: Loss, rule: Callable) -> Callable:
    check_model_loss(model, loss, None)

    def passes(params, x, t, ctx):
        y, cache = call_forward(model, params, x, **ctx)
        losses, dy = example_losses_and_grads(loss, y, t)
        out, _ = rule(model, params, cache, dy)
        return losses, out

    return checked_passes(model, passes)


def grads(model: Layer, loss: Loss) -> Callable:
    """Each example's own gradient.

    Args:
      model: a [`Layer`][purenet.layers.core.Layer] whose layers with params
        all have a per-example rule.
      loss: a [`Loss`][purenet.losses.Loss].

    Returns:
      `f(params, x, t, *, state=(), train=False, key=None, mask=None) -> (losses, grads)`:
      `losses` of shape `(m,)`, example `i`'s own loss (`loss` on a batch of
      one); `grads` with params' structure, each leaf `(m, *leaf.shape)`, row
      `i` equal to `jax.grad(objective(model, loss))(params, x[i:i+1], t[i:i+1])`
      (with dropout: through the mask the batch drew for row `i`).
      `params` are checked against `model` first, as in
      [`backprop`][purenet.cost.backprop].

    Raises:
      TypeError: `model` is not a Layer or `loss` not a Loss.
      ValueError: a layer with params has no per-example rule (named), or
        examples interact (batch norm in training mode); eagerly, before any work.
    """
    return _per_example(model, loss, layer_grads)


def norms(model: Layer, loss: Loss) -> Callable:
    """Each example's squared gradient norm, leaf by leaf.

    As [`grads`][purenet.per_example.grads], but returns
    `f(...) -> (losses, sq_norms)`, `sq_norms` with params' structure, each
    leaf of shape `(m,)`: `|grads[leaf][i]|^2`. Layers with a `sq_norms` rule
    (dense, convolutions by im2col, embedding) compute it without forming
    the per-example gradients; an example's global squared norm is the sum
    over leaves, `sum(jax.tree.leaves(sq_norms))`.
    """
    return _per_example(model, loss, layer_sq_norms)


# ------------------------------------------------------------ gradient noise


class GradientNoise(NamedTuple):
    """One batch's estimates of the gradient's statistics (McCandlish et al. 2018).

    Attributes:
      grad_sq: an unbiased estimate of `|G|^2`, the squared norm of the true
        (population) gradient.
      trace_sigma: an unbiased estimate of `tr(Sigma)`, the trace of the
        covariance of one example's gradient.
      b_simple: `trace_sigma / grad_sq`, the simple noise scale. A ratio of
        two unbiased estimates is not unbiased (and is noisy for one batch):
        as McCandlish et al. do, average `trace_sigma` and `grad_sq` over
        many batches (or an exponential moving average) and divide the averages.
    """

    grad_sq: jax.Array
    trace_sigma: jax.Array
    b_simple: jax.Array


def gradient_noise(sq_norms, batch_grads) -> GradientNoise:
    """`|G|^2` and `tr(Sigma)` without bias from one batch of `B` examples.

    With `G_i` example `i`'s gradient (drawn independently, mean `G`,
    covariance `Sigma`) and `G_B = (1/B) sum_i G_i`:
    `E |G_B|^2 = |G|^2 + tr(Sigma) / B` and
    `E [(1/B) sum_i |G_i|^2] = |G|^2 + tr(Sigma)` (McCandlish et al. 2018,
    eqs. A.2-A.3 with `B_small = 1`, `B_big = B`). Solving the two:

    ```text
    |G|^2     ~ (B |G_B|^2 - mean_i |G_i|^2) / (B - 1)
    tr(Sigma) ~ B (mean_i |G_i|^2 - |G_B|^2) / (B - 1)
    ```

    Args:
      sq_norms: per-example squared norms, a pytree of `(B,)` leaves (as
        [`norms`][purenet.per_example.norms] gives) or one `(B,)` array;
        summed over leaves.
      batch_grads: the mean of the `B` per-example gradients (a pytree): for
        a loss that is a mean over examples it is
        [`backprop`][purenet.cost.backprop]'s gradient of the batch (not for
        a sequence loss averaged over the batch's tokens: use
        [`noise_scale`][purenet.per_example.noise_scale], which forms the mean).

    Returns:
      A [`GradientNoise`][purenet.per_example.GradientNoise].

    Raises:
      ValueError: fewer than 2 examples, or leaves of different lengths.
    """
    leaves = jax.tree.leaves(sq_norms)
    if not leaves or any(jnp.ndim(a) != 1 for a in leaves):
        _checks.fail("sq_norms", "a pytree of (B,) arrays (per-example squared norms)", leaves)
    sizes = {a.shape[0] for a in leaves}
    if len(sizes) != 1 or min(sizes) < 2:
        _checks.fail("sq_norms", "leaves of one length B >= 2 (examples)", sorted(sizes))
    (B,) = sizes
    mean_sq = jnp.mean(sum(leaves[1:], start=leaves[0]))
    batch_sq = sum(jnp.sum(g * g) for g in jax.tree.leaves(batch_grads))
    grad_sq = (B * batch_sq - mean_sq) / (B - 1)
    trace_sigma = B * (mean_sq - batch_sq) / (B - 1)
    return GradientNoise(grad_sq, trace_sigma, trace_sigma / grad_sq)


def noise_scale(model: Layer, loss: Loss) -> Callable:
    """The gradient noise of one batch, from one forward and two backward passes.

    Returns:
      `f(params, x, t, **ctx) -> (losses, noise)`: `losses` as in
      [`grads`][purenet.per_example.grads], `noise` a
      [`GradientNoise`][purenet.per_example.GradientNoise] from the per-example
      squared norms ([`norms`][purenet.per_example.norms]' rules) and the mean
      of the per-example gradients (the model's `backward` with `dy_i / m`,
      linear in `dy`). See [`gradient_noise`][purenet.per_example.gradient_noise].
    """
    check_model_loss(model, loss, None)

    def passes(params, x, t, ctx):
        y, cache = call_forward(model, params, x, **ctx)
        losses, dy = example_losses_and_grads(loss, y, t)
        sq, _ = layer_sq_norms(model, params, cache, dy)
        m = losses.shape[0]
        mean_grads, _ = model.backward(params, cache, jax.tree.map(lambda d: d / m, dy))
        return losses, gradient_noise(sq, mean_grads)

    return checked_passes(model, passes)
