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

from purenet._checks import fail, fail_type, nonnegative, number_in, positive, same_tree
from purenet.clipping import clip_grads_by_global_norm, clip_grads_by_value
from purenet.schedules import Schedule, constant

__all__ = [
    "GradientTransformation",
    "EmptyState",
    "ScaleByScheduleState",
    "TraceState",
    "ScaleByAdagradState",
    "ScaleByRmspropState",
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
    "trace",
    "scale_by_adagrad",
    "scale_by_rmsprop",
    "scale_by_adam",
    "scale_by_sign",
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


class TraceState(NamedTuple):
    """The state of [`trace`][purenet.transforms.trace].

    Attributes:
      trace: the running sum `v(t)`, shaped like params.
    """

    trace: Params


class ScaleByAdagradState(NamedTuple):
    """The state of [`scale_by_adagrad`][purenet.transforms.scale_by_adagrad].

    Attributes:
      sum_of_squares: `G(t) = G(0) + sum of g(s)^2 for s <= t`, shaped like params.
    """

    sum_of_squares: Params


class ScaleByRmspropState(NamedTuple):
    """The state of [`scale_by_rmsprop`][purenet.transforms.scale_by_rmsprop].

    Attributes:
      mean_square: the exponential moving average `s(t)` of `g^2`, shaped like params.
    """

    mean_square: Params


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
    same_tree("updates", updates, params)
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


def scale_by_sign() -> GradientTransformation:
    """Each update replaced by its sign: `u <- sign(u)` (0 stays 0).

    Chained before a learning rate this is the "Batch Manhattan" update of
    Liao, Leibo & Poggio 2016 ("How important is weight symmetry in
    backpropagation?", section 2): every weight moves by the same step,
    in the direction of the sign of its batch gradient, so the update's
    magnitude does not depend on how large the (feedback-driven) gradient
    is. optax calls it `scale_by_sign` too.
    """
    return _stateless(lambda updates, params: jax.tree.map(jnp.sign, updates))


# --- clipping and weight decay ---------------------------------------------------------


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale the updates so that their global norm is at most `max_norm`.

    `g <- g * max_norm / max(||g||, max_norm)`, the norm over every entry of
    the pytree (Pascanu, Mikolov & Bengio 2013, Algorithm 1); the same
    operation as a function of a gradient tree is
    [`purenet.clipping.clip_grads_by_global_norm`][purenet.clipping.clip_grads_by_global_norm].
    optax's `clip_by_global_norm` computes `g * max_norm / ||g||` when `||g|| > max_norm`:
    the same numbers up to rounding.

    Args:
      max_norm: `> 0`, a number (checked now) or a traced scalar.

    Returns:
      A stateless [`GradientTransformation`][purenet.transforms.GradientTransformation].
    """
    max_norm = positive("max_norm", max_norm)
    return _stateless(lambda updates, params: clip_grads_by_global_norm(updates, max_norm))


def clip(limit: float) -> GradientTransformation:
    """Clip every entry of the updates to `[-limit, limit]`.

    As `optax.clip` and `torch.nn.utils.clip_grad_value_`; the function of a
    gradient tree is [`purenet.clipping.clip_grads_by_value`][purenet.clipping.clip_grads_by_value].

    Args:
      limit: `> 0`, a number (checked now) or a traced scalar.

    Returns:
      A stateless [`GradientTransformation`][purenet.transforms.GradientTransformation].
    """
    limit = positive("limit", limit)
    return _stateless(lambda updates, params: clip_grads_by_value(updates, limit))


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
        same_tree("updates", updates, params)
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


def _as_schedule(learning_rate) -> Schedule:
    """A schedule as given, or a number (perhaps traced, checked `>= 0`) as a constant one."""
    if callable(learning_rate):
        return learning_rate
    return constant(nonnegative("learning_rate", learning_rate))


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


def scale_by_learning_rate(learning_rate: float | Schedule) -> GradientTransformation:
    """Multiply the updates by `-lr`: optax's sign convention, so that `apply_updates` descends.

    Update `k` (counting from 0) uses `learning_rate(k)` for a schedule. The
    rate is cast to each parameter's dtype (to each update's when `params`
    is not given), so a float64 schedule does not promote float32 updates.

    Args:
      learning_rate: a number `>= 0` (perhaps traced) or a schedule of the step count.

    Returns:
      A [`GradientTransformation`][purenet.transforms.GradientTransformation]
      with [`ScaleByScheduleState`][purenet.transforms.ScaleByScheduleState].
    """
    schedule = _as_schedule(learning_rate)

    def init(params):
        return ScaleByScheduleState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        rate = jnp.asarray(schedule(state.count))
        leaves, treedef = jax.tree.flatten(updates)
        reference = leaves if params is None else jax.tree.leaves(params)
        scaled = [
            -rate.astype(jnp.result_type(r)) * u for u, r in zip(leaves, reference, strict=True)
        ]
        return treedef.unflatten(scaled), ScaleByScheduleState(state.count + 1)

    return GradientTransformation(init, update)


def _per_leaf(name, updates, slots, rule):
    """Apply `rule(u, *slots) -> (update, new_slots)` leaf by leaf; returns `(updates, slots)`.

    The slots (the fields of `state`, each shaped like params) carry the
    parameters' dtypes: the hyperparameters are cast to them inside `rule`,
    and the new slots are cast back, so that a wider gradient cannot promote
    the state (a `lax.scan` carry must keep its type).
    """
    same_tree(name, updates, slots[0], "params")
    leaves, treedef = jax.tree.flatten(updates)
    per_slot = [treedef.flatten_up_to(tree) for tree in slots]  # [slot][leaf]
    out, new_slots = [], []
    for i, u in enumerate(leaves):
        old = tuple(slot_leaves[i] for slot_leaves in per_slot)
        new_u, new_s = rule(u, *old)
        out.append(new_u)
        new_slots.append(tuple(a.astype(b.dtype) for a, b in zip(new_s, old, strict=True)))
    trees = tuple(treedef.unflatten([s[k] for s in new_slots]) for k in range(len(slots)))
    return treedef.unflatten(out), trees


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    """A running sum of the updates: momentum, as `optax.trace`.

    `v(t) = u(t) + decay * v(t-1)`, `v(0) = 0`; the output is `v(t)`, or
    `u(t) + decay * v(t)` with `nesterov=True`.

    Placed *after* [`scale_by_learning_rate`][purenet.transforms.scale_by_learning_rate]
    (`u = -lr * g`) this is Rumelhart's momentum, `dw(t) = -lr(t) g(t) + decay dw(t-1)`
    ([`momentum`][purenet.optim.momentum]); placed before it, it is the form of
    `torch.optim.SGD` and `optax.sgd`, `b(t) = g(t) + decay b(t-1)`, `-lr(t) b(t)`.
    The two agree for a constant learning rate and differ under a schedule.

    Args:
      decay: the momentum coefficient, in `[0, 1)`, a number (checked now) or
        a traced scalar.
      nesterov: whether to output `u + decay * v(t)` (Nesterov's form with the
        gradient at the current iterate) instead of `v(t)`.

    Returns:
      A [`GradientTransformation`][purenet.transforms.GradientTransformation]
      with [`TraceState`][purenet.transforms.TraceState].

    Example:
      >>> tx = trace(0.5)
      >>> u = jnp.array([1.0])
      >>> _, state = tx.update(u, tx.init(u))
      >>> tx.update(u, state)[0].tolist()     # 1 + 0.5 * 1
      [1.5]
    """
    decay = number_in("decay", decay, 0.0, 1.0, high_open=True)

    def init(params):
        return TraceState(jax.tree.map(jnp.zeros_like, params))

    def rule(u, v):
        d = _like(decay, v)
        v = u + d * v
        return (u + d * v if nesterov else v), (v,)

    def update(updates, state, params=None):
        updates, slots = _per_leaf("updates", updates, state, rule)
        return updates, TraceState(*slots)

    return GradientTransformation(init, update)


def scale_by_adagrad(
    eps: float = 1e-10, *, initial_accumulator: float = 0.0
) -> GradientTransformation:
    """AdaGrad's direction `g / (sqrt(G) + eps)`, without the learning rate.

    `G(t) = G(t-1) + g(t)^2`, `G(0) = initial_accumulator`, as
    `torch.optim.Adagrad` computes it (see [`adagrad`][purenet.optim.adagrad]).

    Warning:
      `optax.scale_by_rss` is the same idea with another convention:
      `g / sqrt(G + eps)` (epsilon inside the root), `G(0) = 0.1` and
      `eps = 1e-7` by default. Its name is not reused here for that reason.

    Args:
      eps: added to `sqrt(G)`, `> 0` (at least the smallest normal number of
        the params' dtype, so it never rounds to 0).
      initial_accumulator: `G(0)`, `>= 0` (keyword only).

    Returns:
      A [`GradientTransformation`][purenet.transforms.GradientTransformation]
      with [`ScaleByAdagradState`][purenet.transforms.ScaleByAdagradState].
    """
    eps = positive("eps", eps)
    initial_accumulator = nonnegative("initial_accumulator", initial_accumulator)

    def init(params):
        return ScaleByAdagradState(
            jax.tree.map(lambda x: jnp.full_like(x, initial_accumulator), params)
        )

    def rule(g, sum_of_squares):
        e = _eps_like(eps, sum_of_squares)  # the slot has the parameter's dtype
        sum_of_squares = sum_of_squares + g * g
        return g / (jnp.sqrt(sum_of_squares) + e), (sum_of_squares,)

    def update(grads, state, params=None):
        directions, slots = _per_leaf("grads", grads, state, rule)
        return directions, ScaleByAdagradState(*slots)

    return GradientTransformation(init, update)


def scale_by_rmsprop(decay: float = 0.99, eps: float = 1e-8) -> GradientTransformation:
    """RMSprop's direction `g / (sqrt(s) + eps)`, without the learning rate.

    `s(t) = decay * s(t-1) + (1 - decay) * g(t)^2`, `s(0) = 0`, as
    `torch.optim.RMSprop` computes it (see [`rmsprop`][purenet.optim.rmsprop]).

    Warning:
      `optax.scale_by_rms` puts epsilon inside the root, `g / sqrt(s + eps)`,
      with `decay = 0.9` by default. Its name is not reused here for that reason.

    Args:
      decay: the forgetting factor of the mean square (torch's `alpha`), in `[0, 1)`.
      eps: added to `sqrt(s)`, `> 0` (at least the smallest normal number of
        the params' dtype, so it never rounds to 0).

    Returns:
      A [`GradientTransformation`][purenet.transforms.GradientTransformation]
      with [`ScaleByRmspropState`][purenet.transforms.ScaleByRmspropState].
    """
    decay = number_in("decay", decay, 0.0, 1.0, high_open=True)
    eps = positive("eps", eps)

    def init(params):
        return ScaleByRmspropState(jax.tree.map(jnp.zeros_like, params))

    def rule(g, mean_square):
        d, e = _like(decay, mean_square), _eps_like(eps, mean_square)  # the parameter's dtype
        mean_square = d * mean_square + (1.0 - d) * g * g
        return g / (jnp.sqrt(mean_square) + e), (mean_square,)

    def update(grads, state, params=None):
        directions, slots = _per_leaf("grads", grads, state, rule)
        return directions, ScaleByRmspropState(*slots)

    return GradientTransformation(init, update)


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
    b1 = number_in("b1", b1, 0.0, 1.0, high_open=True)
    b2 = number_in("b2", b2, 0.0, 1.0, high_open=True)
    eps = positive("eps", eps)

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        t = state.count + 1

        def rule(g, mu, nu):
            # The slots have params' dtype: t and the hyperparameters take it.
            tt, h1, h2, e = (t.astype(mu.dtype), _like(b1, mu), _like(b2, mu), _eps_like(eps, mu))
            new_mu = h1 * mu + (1.0 - h1) * g
            new_nu = h2 * nu + (1.0 - h2) * g * g
            mu_hat = new_mu / (1.0 - h1**tt)
            nu_hat = new_nu / (1.0 - h2**tt)
            return mu_hat / (jnp.sqrt(nu_hat) + e), (new_mu, new_nu)

        directions, (mu, nu) = _per_leaf("grads", grads, (state.mu, state.nu), rule)
        return directions, AdamState(t, mu, nu)

    return GradientTransformation(init, update)
