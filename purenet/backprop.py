"""The cost of a network and its gradient by hand-written backpropagation.

The core promise of purenet::

    J, grads = purenet.backprop(model, loss)(params, x, t)
    jax.grad(purenet.objective(model, loss))(params, x, t)   # == grads

``backprop`` runs the model's forward pass, the loss's fused
value-and-gradient, and the model's backward pass (Rumelhart, Hinton &
Williams 1986): no autodiff anywhere. ``objective`` builds the same scalar from
forward passes only, so ``jax.grad`` of it is an independent referee.

**Weight penalties** (both optional, both with hand-written gradients)::

    J = loss + (l2 / 2) * sum(W**2) + l1 * sum(|W|)

summed over the leaves whose dict key is in ``penalize`` (default ``("W",)``:
weights, not biases, batch-norm scales or running statistics, as in the
regularized cost of Ng's course, which leaves the bias column Theta(:, 1)
unpenalized). The gradient adds ``l2 * W + l1 * sign(W)`` (``sign(0) = 0``, the
subgradient jax.grad also uses). Note the scale: the course writes
``lambda / (2m) * sum(Theta**2)`` next to a batch-mean loss, so its ``lambda``
is ``l2 * m`` here; ours does not depend on the batch size, which is what
mini-batch training needs (with SGD, ``l2`` is exactly torch's
``weight_decay``).

**Flat theta.** :func:`flat_cost` turns a model into the course's
``[J, grad] = cost(theta, ...)`` for vector optimizers such as L-BFGS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from purenet import _checks
from purenet.layers import Layer
from purenet.losses import Loss
from purenet.params import ravel


def _check_model_loss(model, loss):
    if not isinstance(model, Layer):
        _checks.fail(
            "model", "a purenet Layer (e.g. purenet.layers.serial(...))", type(model).__name__
        )
    if not isinstance(loss, Loss):
        _checks.fail("loss", "a purenet Loss (e.g. purenet.losses.mse)", type(loss).__name__)


def _check_penalty(l2, l1, penalize):
    l2 = _checks.nonnegative("l2", l2)
    l1 = _checks.nonnegative("l1", l1)
    if isinstance(penalize, str) or not all(isinstance(k, str) for k in penalize):
        _checks.fail("penalize", "a sequence of dict keys such as ('W',)", repr(penalize))
    return l2, l1, tuple(penalize)


def _is_penalized(path, penalize) -> bool:
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and last.key in penalize


def penalty(params, l2: float = 0.0, l1: float = 0.0, penalize: Sequence[str] = ("W",)):
    """``(l2 / 2) * sum W**2 + l1 * sum |W|`` over the penalized leaves."""
    total = jnp.zeros((), jnp.result_type(*jax.tree.leaves(params) or [jnp.float32]))
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if _is_penalized(path, penalize):
            if l2:
                total = total + 0.5 * l2 * jnp.sum(leaf * leaf)
            if l1:
                total = total + l1 * jnp.sum(jnp.abs(leaf))
    return total


def penalty_grad(params, l2: float = 0.0, l1: float = 0.0, penalize: Sequence[str] = ("W",)):
    """The gradient of :func:`penalty`: ``l2 * W + l1 * sign(W)`` on penalized
    leaves, zeros elsewhere (same structure as ``params``)."""

    def leaf_grad(path, leaf):
        if not _is_penalized(path, penalize):
            return jnp.zeros_like(leaf)
        return l2 * leaf + l1 * jnp.sign(leaf)

    return jax.tree_util.tree_map_with_path(leaf_grad, params)


def objective(
    model: Layer,
    loss: Loss,
    *,
    l2: float = 0.0,
    l1: float = 0.0,
    penalize: Sequence[str] = ("W",),
) -> Callable:
    """The cost ``J(params, x, t, **ctx)`` from forward passes only.

    Args:
      model: a :class:`purenet.layers.Layer`.
      loss: a :class:`purenet.losses.Loss`.
      l2, l1: weight-penalty strengths (module docstring).
      penalize: dict keys of the penalized leaves.

    Returns:
      ``J(params, x, t, *, train=False, key=None) -> scalar``. Differentiate it
      with ``jax.grad`` to referee :func:`backprop`.
    """
    _check_model_loss(model, loss)
    l2, l1, penalize = _check_penalty(l2, l1, penalize)

    def J(params, x, t, **ctx):
        y, _ = model.forward(params, x, **ctx)
        value = loss.value(y, t)
        if l2 or l1:
            value = value + penalty(params, l2, l1, penalize)
        return value

    return J


def backprop(
    model: Layer,
    loss: Loss,
    *,
    l2: float = 0.0,
    l1: float = 0.0,
    penalize: Sequence[str] = ("W",),
    return_cache: bool = False,
) -> Callable:
    """Cost and gradient by the hand-written backward pass.

    Args:
      model, loss, l2, l1, penalize: as in :func:`objective`.
      return_cache: also return the forward cache (for
        ``model.update_state``, needed by batch norm's running statistics).

    Returns:
      ``f(params, x, t, *, train=False, key=None) -> (J, grads)`` (or
      ``(J, grads, cache)``), where ``grads`` has the structure of ``params``
      and equals ``jax.grad(objective(model, loss, ...))``.
    """
    _check_model_loss(model, loss)
    l2, l1, penalize = _check_penalty(l2, l1, penalize)

    def value_and_grads(params, x, t, **ctx):
        y, cache = model.forward(params, x, **ctx)
        J, dy = loss.value_and_grad(y, t)
        grads, _ = model.backward(params, cache, dy)
        if l2 or l1:
            J = J + penalty(params, l2, l1, penalize)
            grads = jax.tree.map(jnp.add, grads, penalty_grad(params, l2, l1, penalize))
        return (J, grads, cache) if return_cache else (J, grads)

    return value_and_grads


def flat_cost(model: Layer, loss: Loss, unravel: Callable, **penalties) -> Callable:
    """The course's ``[J, grad] = nnCostFunction(theta, ...)``: cost and
    gradient as functions of one flat parameter vector.

    Args:
      model, loss: as in :func:`backprop`.
      unravel: from ``theta, unravel = purenet.ravel(params)``.
      **penalties: ``l2``, ``l1``, ``penalize`` as in :func:`backprop`.

    Returns:
      ``cost(theta, x, t, **ctx) -> (J, grad_theta)``, both flat, ready for
      ``scipy.optimize.minimize(..., jac=True)`` (after ``jax.jit`` and a cast
      to float64 NumPy) or any other vector optimizer.
    """
    grad_fn = backprop(model, loss, **penalties)

    def cost(theta, x, t, **ctx):
        J, grads = grad_fn(unravel(theta), x, t, **ctx)
        return J, ravel(grads)[0]

    return cost
