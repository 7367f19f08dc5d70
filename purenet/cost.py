"""The cost of a network and its gradient by hand-written backpropagation.

The core promise of purenet:

```python
J, grads = purenet.backprop(model, loss)(params, x, t)
jax.grad(purenet.objective(model, loss))(params, x, t)   # == grads
```

`backprop` runs the model's forward pass, the loss's fused
value-and-gradient, and the model's backward pass (Rumelhart, Hinton &
Williams 1986): no autodiff anywhere. `objective` builds the same scalar from
forward passes only, so `jax.grad` of it is an independent referee. Both
pass the forward context through: `state=` (non-gradient state such as
batch norm's running statistics), `train=` and `key=`.

**Weight penalties** are a value, like a loss: `penalty(l2=..., l1=...)`
gives a [`Penalty`][purenet.cost.Penalty] for `backprop(model, loss, penalty)`:

```text
J = loss + (l2 / 2) * sum(W**2) + l1 * sum(|W|)
```

summed over the leaves whose dict key is in `penalize` (default `("W",)`:
weights, not biases or batch-norm scales, as in the regularized cost of Ng's
course, which leaves the bias column Theta(:, 1) unpenalized). The gradient
adds `l2 * W + l1 * sign(W)` (`sign(0) = 0`, the subgradient jax.grad also
uses). `l2` and `l1` may be traced (a [`Penalty`][purenet.cost.Penalty] is a pytree whose
leaves are the two strengths), so `jax.vmap` sweeps them in one program.
Note the scale: the course writes `lambda / (2m) * sum(Theta**2)` next to a
batch-mean loss, so its `lambda` is `l2 * m` here; ours does not depend on
the batch size, which is what mini-batch training needs (with SGD, `l2` is
exactly torch's `weight_decay`).

**Flat theta.** [`flat_cost`][purenet.cost.flat_cost] turns a model into the course's
`[J, grad] = cost(theta, ...)` for vector optimizers such as L-BFGS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from purenet import _checks
from purenet.layers import Layer, call_forward, checked_call
from purenet.losses import Loss
from purenet.params import ravel


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A weight penalty `(l2 / 2) * sum W**2 + l1 * sum |W|` over the leaves
    whose dict key is in `penalize`. Make one with [`penalty`][purenet.cost.penalty].

    A pytree: `l2` and `l1` are its leaves (so they may be traced),
    `penalize` is static.
    """

    l2: float | jax.Array = 0.0
    l1: float | jax.Array = 0.0
    penalize: tuple[str, ...] = ("W",)

    def _is_penalized(self, path) -> bool:
        last = path[-1] if path else None
        return isinstance(last, jax.tree_util.DictKey) and last.key in self.penalize

    def value(self, params) -> jax.Array:
        """The penalty of `params`, a scalar in the params' dtype."""
        dtype = jnp.result_type(*jax.tree.leaves(params) or [jnp.float32])
        total = jnp.zeros((), dtype)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            if self._is_penalized(path):
                total = total + 0.5 * self.l2 * jnp.sum(leaf * leaf)
                total = total + self.l1 * jnp.sum(jnp.abs(leaf))
        return total.astype(dtype)

    def grad(self, params):
        """`l2 * W + l1 * sign(W)` on penalized leaves, zeros elsewhere."""

        def leaf_grad(path, leaf):
            if not self._is_penalized(path):
                return jnp.zeros_like(leaf)
            return (self.l2 * leaf + self.l1 * jnp.sign(leaf)).astype(leaf.dtype)

        return jax.tree_util.tree_map_with_path(leaf_grad, params)


jax.tree_util.register_dataclass(Penalty, data_fields=["l2", "l1"], meta_fields=["penalize"])


def penalty(l2: float = 0.0, l1: float = 0.0, penalize: Sequence[str] = ("W",)) -> Penalty:
    """A [`Penalty`][purenet.cost.Penalty] (module docstring). Concrete strengths must be
    non-negative; traced ones (inside `vmap`/`jit`) pass unchecked.

    Args:
      l2: the L2 strength (weight decay with SGD).
      l1: the L1 strength.
      penalize: dict keys of the penalized leaves (default `("W",)`).
    """
    l2 = _checks.nonnegative("l2", l2)
    l1 = _checks.nonnegative("l1", l1)
    if isinstance(penalize, str) or not all(isinstance(k, str) for k in penalize):
        _checks.fail("penalize", "a sequence of dict keys such as ('W',)", repr(penalize))
    return Penalty(l2, l1, tuple(penalize))


def check_model_loss(model, loss, penalty=None):
    """Refuse a `model` that is not a [`Layer`][purenet.layers.core.Layer], a
    `loss` that is not a [`Loss`][purenet.losses.Loss] and a `penalty` that is
    neither `None` nor a [`Penalty`][purenet.cost.Penalty], with the library's
    `TypeError`: the check of every entry point that takes a model and a loss
    ([`backprop`][purenet.cost.backprop], `purenet.per_example`, `purenet.privacy`)."""
    if not isinstance(model, Layer):
        _checks.fail_type(
            "model", "a purenet Layer (e.g. purenet.layers.serial(...))", type(model).__name__
        )
    if not isinstance(loss, Loss):
        _checks.fail_type("loss", "a purenet Loss (e.g. purenet.losses.mse)", type(loss).__name__)
    if penalty is not None and not isinstance(penalty, Penalty):
        _checks.fail_type(
            "penalty", "None or a purenet Penalty (purenet.penalty(l2=...))", type(penalty).__name__
        )


def objective(model: Layer, loss: Loss, penalty: Penalty | None = None) -> Callable:
    """The cost `J(params, x, t, **ctx)` from forward passes only.

    Args:
      model: a [`purenet.layers.Layer`][purenet.layers.core.Layer].
      loss: a [`purenet.losses.Loss`][purenet.losses.Loss].
      penalty: an optional [`Penalty`][purenet.cost.Penalty].

    Returns:
      `J(params, x, t, *, state=(), train=False, key=None, mask=None) -> scalar`.
      Differentiate it with `jax.grad` to referee [`backprop`][purenet.cost.backprop].
      `params` are checked against `model` first (at trace time under
      `jit`): a mismatch raises a `ValueError` naming the path and the layer.
    """
    check_model_loss(model, loss, penalty)

    def cost(params, x, t, ctx):
        y, _ = call_forward(model, params, x, **ctx)
        value = loss.value(y, t)
        if penalty is not None:
            value = value + penalty.value(params)
        return value

    def J(params, x, t, **ctx):
        return checked_call(model, params, x, lambda: cost(params, x, t, ctx))

    return J


def backprop(
    model: Layer, loss: Loss, penalty: Penalty | None = None, *, return_cache: bool = False
) -> Callable:
    """Cost and gradient by the hand-written backward pass.

    Args:
      model, loss, penalty: as in [`objective`][purenet.cost.objective].
      return_cache: also return the forward cache (for
        `model.update_state`, which turns a training forward's cache into
        the new non-gradient state).

    Returns:
      `f(params, x, t, *, state=(), train=False, key=None, mask=None) -> (J, grads)`
      (or `(J, grads, cache)`), where `grads` has the structure of
      `params` and equals `jax.grad(objective(model, loss, penalty))`.
      `params` are checked against `model` first, as in [`objective`][purenet.cost.objective].
    """
    check_model_loss(model, loss, penalty)

    def passes(params, x, t, ctx):
        y, cache = call_forward(model, params, x, **ctx)
        J, dy = loss.value_and_grad(y, t)
        grads, _ = model.backward(params, cache, dy)
        if penalty is not None:
            J = J + penalty.value(params)
            grads = jax.tree.map(jnp.add, grads, penalty.grad(params))
        return (J, grads, cache) if return_cache else (J, grads)

    def value_and_grads(params, x, t, **ctx):
        return checked_call(model, params, x, lambda: passes(params, x, t, ctx))

    return value_and_grads


def flat_cost(
    model: Layer, loss: Loss, unravel: Callable, penalty: Penalty | None = None
) -> Callable:
    """The course's `[J, grad] = nnCostFunction(theta, ...)`: cost and
    gradient as functions of one flat parameter vector.

    Args:
      model, loss, penalty: as in [`backprop`][purenet.cost.backprop].
      unravel: from `theta, unravel = purenet.ravel(params)`.

    Returns:
      `cost(theta, x, t, **ctx) -> (J, grad_theta)`, both flat, ready for
      `scipy.optimize.minimize(..., jac=True)` (after `jax.jit` and a cast
      to float64 NumPy) or any other vector optimizer. `state` (never part
      of theta) goes in `**ctx`.
    """
    grad_fn = backprop(model, loss, penalty)

    def cost(theta, x, t, **ctx):
        J, grads = grad_fn(unravel(theta), x, t, **ctx)
        return J, ravel(grads)[0]

    return cost
