"""Per-example gradient rules: what a layer adds to the contract for
[`purenet.per_example`][purenet.per_example].

A [`Layer`][purenet.layers.core.Layer] may carry two optional rules beside its
`backward`, both taking the batch's cache and the gradient `dy` at its output
(row `i` of `dy` is the gradient of example `i`'s own loss):

```text
per_example(params, cache, dy) -> (per_example_dparams, dx)   # each leaf (m, *leaf.shape)
sq_norms(params, cache, dy)    -> (sq_norms, dx)              # each leaf (m,)
```

`per_example_dparams[i]` is example `i`'s own gradient of each leaf (what
`backward` would give for a batch of that example alone), `sq_norms[i]` its
squared Frobenius norm, and `dx` what `backward` gives. A layer's backward
already holds everything these are made of: for a dense layer on rows,
example `i`'s `dW` is the outer product `x_i^T dy_i` (Goodfellow 2015,
"Efficient per-example gradient computations"), whose squared norm is
`|x_i|^2 |dy_i|^2`, computed without forming it.

[`layer_grads`][purenet.layers.per_example_rules.layer_grads] and
[`layer_sq_norms`][purenet.layers.per_example_rules.layer_sq_norms] dispatch:
the layer's rule if it has one; for a parameter-free layer none is needed
(no leaves to differentiate: the grads are `params` itself, `dx` is
`backward`'s); a layer with params and no rule is refused by name, as
BackPACK refuses modules it does not know. A layer with `per_example` and no
`sq_norms` gets its norms from the per-example gradients.

[`per_example_from_backward`][purenet.layers.per_example_rules.per_example_from_backward]
makes a rule out of any backward whose cache leaves all have a leading batch
axis: `jax.vmap` over examples of the backward on a batch of one. It is the
rule of layers where nothing cheaper exists (convolutions by `lax`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _has_params(params) -> bool:
    return bool(jax.tree.leaves(params))


def _no_rule(layer) -> ValueError:
    return ValueError(
        f"per-example gradients: {layer.name} has params but no per-example rule "
        "(Layer.per_example is None), so its per-example gradients and their norms cannot "
        "be computed; give it one, "
        "e.g. make_layer(..., per_example=per_example_from_backward(backward)) when every "
        "leaf of its cache has a leading batch axis"
    )


def sq_norms_of(per_example_grads):
    """Each leaf `(m, *shape)` to its per-example squared norms `(m,)`."""
    return jax.tree.map(
        lambda g: jnp.sum(jnp.reshape(g * g, (g.shape[0], -1)), axis=1), per_example_grads
    )


def layer_grads(layer, params, cache, dy):
    """Per-example gradients through one layer: `(per_example_dparams, dx)`.

    Args:
      layer: a [`Layer`][purenet.layers.core.Layer].
      params, cache, dy: as its `backward` takes them (the batch's cache).

    Returns:
      `per_example_dparams` with params' structure, each leaf
      `(m, *leaf.shape)`; `dx` as `backward` gives it.

    Raises:
      ValueError: the layer has params and no `per_example` rule (naming it),
        or its rule refuses (batch norm in training mode).
    """
    rule = getattr(layer, "per_example", None)
    if rule is not None:
        return rule(params, cache, dy)
    if not _has_params(params):
        return params, layer.backward(params, cache, dy)[1]
    raise _no_rule(layer)


def layer_sq_norms(layer, params, cache, dy):
    """Per-example squared gradient norms through one layer: `(sq_norms, dx)`,
    each leaf of `sq_norms` of shape `(m,)`. The layer's `sq_norms` rule when
    it has one, else the squares of its per-example gradients (see
    [`layer_grads`][purenet.layers.per_example_rules.layer_grads], which also
    says what is raised)."""
    rule = getattr(layer, "sq_norms", None)
    if rule is not None:
        return rule(params, cache, dy)
    if not _has_params(params):
        return params, layer.backward(params, cache, dy)[1]
    if getattr(layer, "per_example", None) is None:
        raise _no_rule(layer)
    grads, dx = layer.per_example(params, cache, dy)
    return sq_norms_of(grads), dx


def per_example_from_backward(backward: Callable, batch_axes: Callable | None = None) -> Callable:
    """A `per_example` rule from a layer's own `backward`.

    `jax.vmap` over examples of `backward` on a batch of one: example `i`
    sees its slice of every cache leaf (`c[i:i+1]`, or along the leaf's batch
    axis) and of `dy`, and its gradient is exactly the batch-of-one
    backward's. Valid when every leaf of the cache has a batch axis and
    examples do not interact (what they share, like batch norm's statistics,
    would be the batch's, not the example's own).

    Args:
      backward: `backward(params, cache, dy) -> (dparams, dx)`.
      batch_axes: `None` when every cache leaf has its batch axis first; else
        a function of the cache giving a tree of the same structure with each
        leaf's batch axis (e.g. 1 for the recurrent layers' time-major states).

    Returns:
      `per_example(params, cache, dy) -> (per_example_dparams, dx)`.
    """

    def per_example(params, cache, dy):
        axes = jax.tree.map(lambda _: 0, cache) if batch_axes is None else batch_axes(cache)

        def one(c, d):
            c = jax.tree.map(jnp.expand_dims, c, axes)
            d = jax.tree.map(lambda a: a[None], d)
            grads, dx = backward(params, c, d)
            return grads, jax.tree.map(lambda a: a[0], dx)

        return jax.vmap(one, in_axes=(axes, 0))(cache, dy)

    return per_example


# ------------------------------------------------------------------------ dense


def _as_sequences(x, dy):
    """`x (m, ..., d)`, `dy (m, ..., n)` as `(m, T, d)`, `(m, T, n)`."""
    m = x.shape[0]
    return x.reshape(m, -1, x.shape[-1]), dy.reshape(m, -1, dy.shape[-1])


def dense_per_example(x, dy):
    """Each example's `(dW_i, db_i)` of `y = x @ W + b`.

    Rows `x (m, d)`: `dW_i = x_i^T dy_i` (an outer product), `db_i = dy_i`.
    Any higher rank (a sequence `(m, T, d)`): `dW_i = sum_t x_it^T dy_it`,
    `db_i = sum_t dy_it`."""
    if x.ndim == 2:
        return x[:, :, None] * dy[:, None, :], dy
    xs, dys = _as_sequences(x, dy)
    return jnp.einsum("mti,mtj->mij", xs, dys), jnp.sum(dys, axis=1)


def ghost_is_cheaper(T: int, d: int, n: int) -> bool:
    """Whether the Gram ("ghost") form beats forming `dW_i` for the norms of
    a dense layer on sequences of `T` steps, `d` inputs, `n` outputs: its
    cost `T^2 (d + n)` per example against `T d n` (Bu et al. 2023, "Differentially
    private optimization on large model at small cost", who pick per layer the same way)."""
    return T * (d + n) < d * n


def dense_sq_norms(x, dy, method: str = "auto"):
    """Each example's `(|dW_i|^2, |db_i|^2)` of `y = x @ W + b`, shapes `(m,)`.

    Rows: `|x_i^T dy_i|^2 = |x_i|^2 |dy_i|^2` (Goodfellow 2015). Sequences
    `(m, T, d)`: either `dW_i` formed (cost `m T d n`) or the Gram form of
    Li, Tramer, Liang & Hashimoto 2022 ("Large language models can be strong
    differentially private learners", ghost clipping),
    `|sum_t x_t dy_t^T|^2 = sum_{t,s} (x_t . x_s)(dy_t . dy_s)` (cost
    `m T^2 (d + n)`).

    Args:
      x: the layer's input `(m, ..., d)`.
      dy: the gradient at its output `(m, ..., n)`.
      method: `"auto"` (the cheaper, by
        [`ghost_is_cheaper`][purenet.layers.per_example_rules.ghost_is_cheaper],
        at trace time), `"ghost"` or `"form"`; rows always use Goodfellow's identity.
    """
    if method not in ("auto", "ghost", "form"):
        raise ValueError(f"method: expected 'auto', 'ghost' or 'form', got {method!r}")
    if x.ndim == 2:
        dy2 = jnp.sum(dy * dy, axis=1)
        return jnp.sum(x * x, axis=1) * dy2, dy2
    xs, dys = _as_sequences(x, dy)
    _, T, d = xs.shape
    n = dys.shape[-1]
    if method == "ghost" or (method == "auto" and ghost_is_cheaper(T, d, n)):
        gram_x = jnp.einsum("mti,msi->mts", xs, xs)
        gram_dy = jnp.einsum("mti,msi->mts", dys, dys)
        sq_W = jnp.sum(gram_x * gram_dy, axis=(1, 2))
    else:
        dW = jnp.einsum("mti,mtj->mij", xs, dys)
        sq_W = jnp.sum(dW * dW, axis=(1, 2))
    db = jnp.sum(dys, axis=1)
    return sq_W, jnp.sum(db * db, axis=1)


# -------------------------------------------------------------------- embedding


def embedding_per_example(params, cache, dy):
    """`per_example` rule of [`embedding`][purenet.layers.recurrent.embedding]
    (cache: the clipped ids `(m, ...)`): a scatter-add per example,
    `dW_i[v] = sum of dy_i over example i's positions whose id is v`."""
    ids, W = cache, params["W"]
    m, dim = ids.shape[0], W.shape[1]
    rows = ids.reshape(m, -1)
    dys = dy.reshape(m, -1, dim)
    dW = jax.vmap(lambda r, d: jnp.zeros_like(W).at[r].add(d))(rows, dys)
    return {"W": dW}, jnp.zeros(ids.shape, W.dtype)


def embedding_sq_norms(params, cache, dy):
    """`sq_norms` rule of [`embedding`][purenet.layers.recurrent.embedding]:
    `|dW_i|^2 = sum_{t,s} [id_t = id_s] (dy_t . dy_s)` (the Gram form with
    one-hot inputs) when `T^2 < vocab_size + T`, else from `dW_i` formed."""
    ids, W = cache, params["W"]
    m, (vocab, dim) = ids.shape[0], W.shape
    T = math.prod(ids.shape[1:])
    if T * T < vocab + T:
        rows = ids.reshape(m, T)
        dys = dy.reshape(m, T, dim)
        same = (rows[:, :, None] == rows[:, None, :]).astype(dy.dtype)
        sq = jnp.sum(same * jnp.einsum("mti,msi->mts", dys, dys), axis=(1, 2))
        return {"W": sq}, jnp.zeros(ids.shape, W.dtype)
    grads, dx = embedding_per_example(params, cache, dy)
    return sq_norms_of(grads), dx
