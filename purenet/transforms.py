"""Gradient transformations: optax's interface, written without optax.

A gradient transformation is a pair of pure functions, as in optax:

```python
state = transform.init(params)
updates, state = transform.update(grads, state, params)   # params may be None
params = apply_updates(params, updates)                   # params + updates
```

`update` maps a pytree of gradients (or of updates from an earlier
transformation) to a pytree of updates of the same structure; the sign
convention is optax's: the *updates are added* to the parameters, so a
descent step ends with [`scale_by_learning_rate`][purenet.transforms.scale_by_learning_rate],
which multiplies by `-lr`. Transformations compose with
[`chain`][purenet.transforms.chain], whose state is the tuple of its members'
states. Everything here is pure and works on any pytree (a flat `theta`
included), under `jit`, `vmap` and `lax.scan`.

Any object with callable `init` and `update` of these signatures (an optax
`GradientTransformation` for one) is accepted wherever a transformation is
expected, and every transformation here drops into `optax.chain`. purenet
never imports optax.

The optimizers of [`purenet.optim`][purenet.optim] are built from these pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import fail, fail_type, nonnegative, number_in, positive
from purenet.clipping import clip_by_global_norm as _clip_tree_by_global_norm
from purenet.clipping import clip_by_value as _clip_tree_by_value
from purenet.schedules import Schedule, constant

__all__ = [
    "GradientTransformation",
    "EmptyState",
    "ScaleByScheduleState",
    "AdamState",
    "is_transform",
    "check_transform",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "clip",
    "add_decayed_weights",
    "decay_mask",
    "scale_by_learning_rate",
    "scale_by_adam",
]

Array = Any
Params = Any  # a pytree of float arrays


class GradientTransformation(NamedTuple):
    """Two pure functions, `init(params) -> state` and `update(grads, state, params=None)`.

    `update` returns `(updates, new_state)`. The field names and order are
    optax's, so an instance works wherever optax expects one.
    """

    init: Callable[[Params], Any]
    update: Callable[..., tuple[Params, Any]]


class EmptyState(NamedTuple):
    """The state of a stateless transformation (clipping, weight decay)."""


class ScaleByScheduleState(NamedTuple):
    """The state of [`scale_by_learning_rate`][purenet.transforms.scale_by_learning_rate].

    Attributes:
      count: int32 scalar, the number of updates taken; update `k` (from 0)
        uses `schedule(k)`.
    """

    count: Array


class AdamState(NamedTuple):
    """The state of Adam: of [`scale_by_adam`][purenet.transforms.scale_by_adam].

    Also the state of [`adam`][purenet.optim.adam] and [`adamw`][purenet.optim.adamw].

    Attributes:
      count: int32 scalar, the number of steps taken.
      mu: the first-moment estimate `m(t)` (biased towards 0), shaped like params.
      nu: the second raw-moment estimate `v(t)` (biased towards 0), shaped like params.
    """

    count: Array
    mu: Params
    nu: Params


def is_transform(obj) -> bool:
    """True when `obj` has callable `init` and `update` (duck typing, as optax's own)."""
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "update", None))


def check_transform(name: str, obj):
    """`obj` if it has `init` and `update`, else a `TypeError` naming `name`."""
    if not is_transform(obj):
        fail_type(
            name, "a gradient transformation (an object with init and update)", type(obj).__name__
        )
    return obj


def _check_like(name: str, tree, reference, reference_name: str = "params") -> None:
    """A `ValueError` unless `tree` has the structure and shapes of `reference`."""
    treedef = jax.tree.structure(reference)
    if jax.tree.structure(tree) != treedef:
        fail(
            name,
            f"a pytree with the structure of {reference_name}, {treedef}",
            jax.tree.structure(tree),
        )
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference), strict=True):
        if jnp.shape(a) != jnp.shape(b):
            fail(name, f"an array of shape {jnp.shape(b)} like {reference_name}", jnp.shape(a))


def apply_updates(params: Params, updates: Params) -> Params:
    """`params + updates`, leaf by leaf, each result cast back to its parameter's dtype.

    As `optax.apply_updates`: the cast keeps float32 parameters float32 when
    the updates are wider (a float64 gradient), so a `lax.scan` carry keeps
    its type.

    Args:
      params: a pytree of arrays.
      updates: a pytree of the same structure and shapes.

    Returns:
      The new parameters, same structure, shapes and dtypes as `params`.
    """
    _check_like("updates", updates, params)
    return jax.tree.map(lambda p, u: (p + u).astype(jnp.result_type(p)), params, updates)


# --- composition -------------------------------------------------------------------


def chain(*transforms) -> GradientTransformation:
    """Apply transformations one after the other; the state is the tuple of their states.

    `chain(a, b).update(g, (sa, sb), params)` is `b.update(*a.update(g, sa, params)[0], ...)`:
    the updates of each member are the input of the next, as `optax.chain`.

    Args:
      *transforms: gradient transformations (anything with `init` and
        `update`: purenet's, optax's).

    Returns:
      A [`GradientTransformation`][purenet.transforms.GradientTransformation].

    Raises:
      TypeError: a member is not a transformation (`transforms[i]: expected ...`).

    Example:
      >>> tx = chain(clip_by_global_norm(1.0), scale_by_learning_rate(0.1))
      >>> g = jnp.array([3.0, 4.0])
      >>> updates, _ = tx.update(g, tx.init(g))
      >>> [round(v, 6) for v in updates.tolist()]
      [-0.06, -0.08]
    """
    for i, transform in enumerate(transforms):
        check_transform(f"transforms[{i}]", transform)

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            fail(
                "state",
                f"a tuple of {len(transforms)} states (from chain's init)",
                type(state).__name__,
            )
        new_state = []
        for t, s in zip(transforms, state, strict=True):
            updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def _stateless(fn: Callable[[Params, Params | None], Params]) -> GradientTransformation:
    """A transformation without state from `fn(updates, params) -> updates`."""

    def init(params):
        return EmptyState()

    def update(updates, state, params=None):
        return fn(updates, params), state

    return GradientTransformation(init, update)


# --- clipping and weight decay ---------------------------------------------------------


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale the updates so that their global norm is at most `max_norm`.

    `g <- g * max_norm / max(||g||, max_norm)`, the norm over every entry of
    the pytree ([`purenet.clipping.clip_by_global_norm`][purenet.clipping.clip_by_global_norm],
    Pascanu, Mikolov & Bengio 2013, Algorithm 1). optax's
    `clip_by_global_norm` computes `g * max_norm / ||g||` when `||g|| > max_norm`:
    the same numbers up to rounding.

    Args:
      max_norm: `> 0`, a number (checked now) or a traced scalar.

    Returns:
      A stateless [`GradientTransformation`][purenet.transforms.GradientTransformation].
    """
    max_norm = positive("max_norm", max_norm)
    return _stateless(lambda updates, params: _clip_tree_by_global_norm(updates, max_norm))


def clip(limit: float) -> GradientTransformation:
    """Clip every entry of the updates to `[-limit, limit]`.

    As `optax.clip` and `torch.nn.utils.clip_grad_value_`.

    Args:
      limit: `> 0`, a number (checked now) or a traced scalar.

    Returns:
      A stateless [`GradientTransformation`][purenet.transforms.GradientTransformation].
    """
    limit = positive("limit", limit)
    return _stateless(lambda updates, params: _clip_tree_by_value(updates, limit))


def decay_mask(params: Params, *, exclude: tuple[str, ...] = ()) -> Params:
    """The usual weight-decay mask: `True` on leaves with `ndim >= 2`, `False` elsewhere.

    This is nanoGPT's rule (`configure_optimizers` decays every parameter
    with `p.dim() >= 2`): weight matrices and convolution kernels are
    decayed; biases, layer-norm and batch-norm gains and offsets (`ndim` 1)
    and scalars are not. Under that rule embedding tables (2-D) *are*
    decayed, as in nanoGPT, whose LM head is tied to the token embedding.
    minGPT (and many BERT recipes) exclude embeddings instead; purenet's
    params do not record which layer a leaf belongs to, so pass the key
    names to leave out: a leaf whose key path (as text, e.g. `[0]['W']`)
    contains one of `exclude` is not decayed.

    Args:
      params: a pytree of arrays (only shapes are read).
      exclude: substrings of key paths never decayed (keyword only).

    Returns:
      A pytree of Python bools with the structure of `params`, for
      [`add_decayed_weights`][purenet.transforms.add_decayed_weights]`(rate, mask=...)`
      or `optax.adamw(..., mask=...)`.

    Example:
      >>> decay_mask({"W": jnp.ones((3, 2)), "b": jnp.zeros(2)})
      {'W': True, 'b': False}
    """
    exclude = tuple(exclude)

    def leaf(path, x):
        text = jax.tree_util.keystr(path)
        return jnp.ndim(x) >= 2 and not any(name in text for name in exclude)

    return jax.tree_util.tree_map_with_path(leaf, params)


def _resolve_mask(mask, params):
    """A mask tree of Python bools for `params`, checked: `mask` or `mask(params)`."""
    tree = mask(params) if callable(mask) else mask
    treedef = jax.tree.structure(params)
    if jax.tree.structure(tree) != treedef:
        fail(
            "mask",
            f"a pytree of bools with the structure of params, {treedef}",
            jax.tree.structure(tree),
        )
    for m in jax.tree.leaves(tree):
        if not isinstance(m, bool | np.bool_):  # static: a traced mask cannot pick leaves
            fail_type("mask", "a pytree of Python bools", type(m).__name__)
    return tree


def add_decayed_weights(rate: float, mask=None) -> GradientTransformation:
    """Add `rate * params` to the updates: decoupled weight decay, before the learning rate.

    `u <- u + rate * w` on the leaves where `mask` is `True` (all leaves when
    `mask` is `None`), as `optax.add_decayed_weights`. Followed by
    [`scale_by_learning_rate`][purenet.transforms.scale_by_learning_rate]`(lr)`
    this gives `w <- w - lr * (u + rate * w)`, which is PyTorch's AdamW
    order (`w *= 1 - lr * rate`, then the step): the same update.

    Args:
      rate: the decay rate, `>= 0`, a number (checked now) or a traced scalar.
      mask: `None`, a pytree of bools with the structure of params, or a
        function `params -> such a pytree` (e.g. [`decay_mask`][purenet.transforms.decay_mask]).

    Returns:
      A stateless [`GradientTransformation`][purenet.transforms.GradientTransformation];
      its `update` needs `params`.

    Raises:
      ValueError: `rate` is negative; at `init`/`update`, a mask tree whose
        structure differs from params.
      TypeError: `mask` is neither `None`, a pytree nor a function; a mask
        leaf is not a bool.
    """
    rate = nonnegative("rate", rate)
    if mask is not None and not callable(mask):
        for m in jax.tree.leaves(mask):
            if not isinstance(m, bool | np.bool_):
                fail_type("mask", "a pytree of bools or a function of params", type(m).__name__)

    def decayed(updates, params):
        if params is None:
            fail("params", "the parameters (add_decayed_weights needs them)", None)
        _check_like("updates", updates, params)
        if mask is None:
            return jax.tree.map(lambda u, w: u + _like(rate, w) * w, updates, params)
        keep = _resolve_mask(mask, params)
        return jax.tree.map(
            lambda u, w, m: u + _like(rate, w) * w if m else u, updates, params, keep
        )

    def init(params):
        if mask is not None:
            _resolve_mask(mask, params)  # a wrong mask fails here, before any step
        return EmptyState()

    return GradientTransformation(init, _stateless(decayed).update)


# --- scaling -----------------------------------------------------------------------------


def as_schedule(learning_rate) -> Schedule:
    """A schedule as given, or a number (perhaps traced, checked `>= 0`) as a constant one."""
    if callable(learning_rate):
        return learning_rate
    return constant(nonnegative("learning_rate", learning_rate))


def _reference(params, updates):
    """The leaves whose dtype sets the learning rate's: params' when given, else the updates'."""
    return jax.tree.leaves(params) if params is not None else jax.tree.leaves(updates)


def scale_by_rate(updates, rate, params=None):
    """`-rate * u` leaf by leaf, the rate cast to each parameter's dtype."""
    rate = jnp.asarray(rate)
    leaves, treedef = jax.tree.flatten(updates)
    scaled = [
        -rate.astype(jnp.result_type(r)) * u
        for u, r in zip(leaves, _reference(params, updates), strict=True)
    ]
    return treedef.unflatten(scaled)


def scale_by_learning_rate(learning_rate: float | Schedule) -> GradientTransformation:
    """Multiply the updates by `-lr`: optax's sign convention, so that `apply_updates` descends.

    Update `k` (counting from 0) uses `learning_rate(k)` for a schedule.

    Args:
      learning_rate: a number `>= 0` (perhaps traced) or a schedule of the step count.

    Returns:
      A [`GradientTransformation`][purenet.transforms.GradientTransformation]
      with [`ScaleByScheduleState`][purenet.transforms.ScaleByScheduleState].
    """
    schedule = as_schedule(learning_rate)

    def init(params):
        return ScaleByScheduleState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        scaled = scale_by_rate(updates, schedule(state.count), params)
        return scaled, ScaleByScheduleState(state.count + 1)

    return GradientTransformation(init, update)


def _like(value, x):
    """A hyperparameter ready for arithmetic with `x`: Python floats as they are
    (weakly typed), arrays (traced ones under `vmap`) cast to `x`'s dtype."""
    return value if isinstance(value, float) else jnp.asarray(value).astype(x.dtype)


def _eps_like(eps, x):
    """`eps` in `x`'s dtype, never below that dtype's smallest normal number:
    an `eps` that rounds to 0 there (1e-49 in float32) would make an entry
    with no gradient yet divide 0 by 0."""
    e = jnp.asarray(eps, x.dtype) if isinstance(eps, float) else jnp.asarray(eps).astype(x.dtype)
    return jnp.maximum(e, jnp.finfo(x.dtype).tiny)


def check_adam(b1, b2, eps):
    """Adam's hyperparameters, checked: `b1`, `b2` in `[0, 1)`, `eps > 0`."""
    return (
        number_in("b1", b1, 0.0, 1.0, high_open=True),
        number_in("b2", b2, 0.0, 1.0, high_open=True),
        positive("eps", eps),
    )


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam's direction `m_hat / (sqrt(v_hat) + eps)`, without the learning rate.

    Algorithm 1 of Kingma & Ba (2015), with `t` the 1-based step number:
    `m(t) = b1 m(t-1) + (1 - b1) g`, `v(t) = b2 v(t-1) + (1 - b2) g^2`,
    `m_hat = m(t) / (1 - b1^t)`, `v_hat = v(t) / (1 - b2^t)`. As `optax.scale_by_adam`.

    Args:
      b1: decay of the first-moment average, in `[0, 1)`.
      b2: decay of the second-moment average, in `[0, 1)`.
      eps: added to `sqrt(v_hat)`, `> 0` (at least the
        smallest normal number of the params' dtype, so it never rounds to 0).

    Returns:
      A [`GradientTransformation`][purenet.transforms.GradientTransformation]
      with [`AdamState`][purenet.transforms.AdamState].
    """
    b1, b2, eps = check_adam(b1, b2, eps)

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        _check_like("grads", grads, state.mu, "params")
        t = state.count + 1
        leaves, treedef = jax.tree.flatten(grads)
        directions, mus, nus = [], [], []
        for g, mu, nu in zip(
            leaves, treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu), strict=True
        ):
            # The slots have params' dtype: t and the hyperparameters take it.
            tt, h1, h2, e = (t.astype(mu.dtype), _like(b1, mu), _like(b2, mu), _eps_like(eps, mu))
            new_mu = h1 * mu + (1.0 - h1) * g
            new_nu = h2 * nu + (1.0 - h2) * g * g
            mu_hat = new_mu / (1.0 - h1**tt)
            nu_hat = new_nu / (1.0 - h2**tt)
            directions.append(mu_hat / (jnp.sqrt(nu_hat) + e))
            mus.append(new_mu.astype(mu.dtype))
            nus.append(new_nu.astype(nu.dtype))
        new_state = AdamState(t, treedef.unflatten(mus), treedef.unflatten(nus))
        return treedef.unflatten(directions), new_state

    return GradientTransformation(init, update)
