"""Gradient clipping: pure maps from a gradient pytree to a gradient pytree.

Each function takes a pytree of gradients and returns a pytree of the same
structure, shapes and dtypes; apply it to `grads` before `opt.step`:

    >>> from purenet import clipping, optim
    >>> grads = clipping.clip_grads_by_global_norm(grads, 1.0)   # doctest: +SKIP
    >>> params, state = opt.step(params, grads, state)            # doctest: +SKIP

Names. The functions here act on a tree of gradients, so their names say
`grads`: [`clip_grads_by_global_norm`][purenet.clipping.clip_grads_by_global_norm]`(grads,
max_norm)` and [`clip_grads_by_value`][purenet.clipping.clip_grads_by_value]`(grads, limit)`.
The same operations as gradient transformations, for
[`optim.chain`][purenet.optim.chain], keep optax's names and take only the
threshold: [`optim.clip_by_global_norm`][purenet.optim.clip_by_global_norm]`(max_norm)`
and [`optim.clip`][purenet.optim.clip]`(limit)` (defined in
[`purenet.transforms`][purenet.transforms], built on these functions).
[`global_norm`][purenet.clipping.global_norm] is the norm they all measure.

Thresholds are values, not configuration. A Python number is checked at once
(`limit: expected a number in (0.0, inf), got -1.0`); a traced scalar (say,
the threshold of a `jax.vmap` sweep) passes through unchecked, because no
branch here depends on its value. So one compiled program can train with
several thresholds at once:

    >>> import jax, jax.numpy as jnp
    >>> g = jnp.array([3.0, 4.0])
    >>> clip = lambda c: clipping.clip_grads_by_global_norm(g, c)
    >>> clipped = jax.vmap(clip)(jnp.array([1.0, 10.0]))
    >>> [[round(v, 6) for v in row] for row in clipped.tolist()]
    [[0.6, 0.8], [3.0, 4.0]]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from purenet._checks import positive

Array = Any

__all__ = ["global_norm", "clip_grads_by_value", "clip_grads_by_global_norm"]


def global_norm(tree: Any) -> Array:
    """The Euclidean norm of all the entries of a pytree, as one vector.

    `||g|| = sqrt(sum over leaves of sum(leaf ** 2))`: the norm of the
    ravelled (flat) gradient, which is what
    [`clip_grads_by_global_norm`][purenet.clipping.clip_grads_by_global_norm] and
    `torch.nn.utils.clip_grad_norm_` measure.

    Args:
      tree: a pytree of arrays.

    Returns:
      A scalar (0 for an empty tree).

    Example:
      >>> float(global_norm({"W": jnp.array([3.0]), "b": jnp.array([0.0, 4.0])}))
      5.0
    """
    squares = [jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(squares, jnp.zeros(())))


def clip_grads_by_value(grads: Any, limit: float) -> Any:
    """Clip every gradient entry to `[-limit, limit]`.

    `g_i <- min(max(g_i, -limit), limit)`, as
    `torch.nn.utils.clip_grad_value_`. It changes the direction of the
    gradient; [`clip_grads_by_global_norm`][purenet.clipping.clip_grads_by_global_norm] does not.

    Args:
      grads: a pytree of arrays.
      limit: the largest magnitude allowed, `> 0`: a number (checked now)
        or a traced scalar (not checked).

    Returns:
      A pytree like `grads` (same structure, shapes and dtypes).

    Raises:
      TypeError: `limit` is not a number.
      ValueError: `limit` is a concrete number `<= 0`, NaN or infinite.

    Example:
      >>> clip_grads_by_value(jnp.array([-3.0, 0.5, 2.0]), 1.0).tolist()
      [-1.0, 0.5, 1.0]
    """
    limit = positive("limit", limit)
    return jax.tree.map(lambda g: jnp.clip(g, -limit, limit).astype(g.dtype), grads)


def clip_grads_by_global_norm(grads: Any, max_norm: float) -> Any:
    """Rescale the whole gradient so that its global norm is at most `max_norm`.

    `g <- g * max_norm / max(||g||, max_norm)` where `||g||` is
    [`global_norm`][purenet.clipping.global_norm]: the direction is kept, and a gradient already
    within the limit is returned unchanged (the factor is exactly 1, and a zero
    gradient gives no 0/0). The `max` replaces the branch `if ||g|| >
    max_norm` of Pascanu et al., so `max_norm` may be traced.

    Warning:
      `torch.nn.utils.clip_grad_norm_` computes `max_norm / (||g|| + 1e-6)`
      instead, so its clipped norm is a hair below `max_norm`.

    Args:
      grads: a pytree of arrays.
      max_norm: the largest global norm allowed, `> 0`: a number (checked
        now) or a traced scalar (not checked).

    Returns:
      A pytree like `grads` (same structure, shapes and dtypes).

    Raises:
      TypeError: `max_norm` is not a number.
      ValueError: `max_norm` is a concrete number `<= 0`, NaN or infinite.

    Example:
      >>> clipped = clip_grads_by_global_norm(jnp.array([3.0, 4.0]), 1.0)
      >>> [round(v, 6) for v in clipped.tolist()]
      [0.6, 0.8]

    References:
      Pascanu, Mikolov & Bengio (2013), "On the difficulty of training
      recurrent neural networks", ICML, Algorithm 1.
    """
    max_norm = positive("max_norm", max_norm)
    norm = global_norm(grads)
    scale = max_norm / jnp.maximum(norm, max_norm)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
