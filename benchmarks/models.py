"""The networks and data the benchmarks run on.

Every benchmark network is a multilayer perceptron: `dense` layers with
`relu` between them and no activation after the last one (the loss takes
logits). Inputs are standard normal, targets are uniform random integer labels
(softmax cross-entropy) or random 0/1 targets (sigmoid binary cross-entropy):
the values do not change the work done, only the shapes do.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from purenet import layers as L
from purenet import losses


class Problem(NamedTuple):
    """A network, its loss, initial params and one batch."""

    name: str
    sizes: tuple[int, ...]
    model: L.Layer
    loss: losses.Loss
    params: tuple
    x: jax.Array
    t: jax.Array


def mlp(sizes, hidden=L.relu) -> L.Layer:
    """`dense(sizes[1]), hidden(), ..., dense(sizes[-1])` for inputs of `sizes[0]`."""
    layers = []
    for n in sizes[1:-1]:
        layers += [L.dense(n), hidden()]
    return L.serial(*layers, L.dense(sizes[-1]))


def shape_name(sizes, batch: int) -> str:
    """`"784-256-10 @ 128"`."""
    return "-".join(str(s) for s in sizes) + f" @ {batch}"


def problem(sizes, batch: int, *, loss: str = "softmax", dtype=jnp.float32, seed: int = 0):
    """An MLP of layer `sizes` with a batch of `batch` examples.

    Args:
      sizes: `(n_in, hidden..., n_out)`.
      batch: rows of `x`.
      loss: `"softmax"` (softmax cross-entropy, integer labels) or `"bce"`
        (sigmoid binary cross-entropy, 0/1 targets of shape `(batch, 1)`).
      dtype: params and inputs dtype.
      seed: for params and data.
    """
    sizes = tuple(int(s) for s in sizes)
    model = mlp(sizes)
    k_init, k_x, k_t = jax.random.split(jax.random.key(seed), 3)
    _, params, _ = model.init(k_init, (sizes[0],), dtype)  # an MLP has no state
    x = jax.random.normal(k_x, (batch, sizes[0]), dtype)
    if loss == "softmax":
        t = jax.random.randint(k_t, (batch,), 0, sizes[-1])
        loss_fn = losses.softmax_cross_entropy
    elif loss == "bce":
        if sizes[-1] != 1:
            raise ValueError(f"sizes: bce needs one output unit, got {sizes[-1]}")
        t = jax.random.bernoulli(k_t, 0.5, (batch, 1)).astype(dtype)
        loss_fn = losses.sigmoid_binary_cross_entropy
    else:
        raise ValueError(f"loss: expected 'softmax' or 'bce', got {loss!r}")
    return Problem(shape_name(sizes, batch), sizes, model, loss_fn, params, x, t)


def matmul_flops(sizes, batch: int) -> int:
    """FLOPs of one forward + backward through the dense layers of an MLP,
    counted as `6 * m * sum(n_in * n_out)` (forward `x W`, backward
    `x^T dy` and `dy W^T`, two FLOPs per multiply-add each)."""
    return 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
