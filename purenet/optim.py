"""Optimizers as pure functions, with optax's interface.

Every optimizer is made by a constructor that takes its hyperparameters and
returns an [`Optimizer`][purenet.optim.Optimizer], a named tuple of three pure
functions:

```python
state = opt.init(params)
params, state = opt.step(params, grads, state)            # the step function
updates, state = opt.update(grads, state, params)         # optax's interface
params = optim.apply_updates(params, updates)             # the same step
```

`step` is `update` followed by [`apply_updates`][purenet.optim.apply_updates]
(one implementation: `step` is derived from `update`). `init`/`update` are
optax's `GradientTransformation` interface, so a purenet optimizer drops into
`optax.chain(...)`, and the gradient transformations of
[`purenet.transforms`][purenet.transforms] (re-exported here:
[`chain`][purenet.optim.chain], [`clip_by_global_norm`][purenet.optim.clip_by_global_norm],
[`clip`][purenet.optim.clip], [`add_decayed_weights`][purenet.optim.add_decayed_weights],
[`decay_mask`][purenet.optim.decay_mask],
[`scale_by_learning_rate`][purenet.optim.scale_by_learning_rate],
[`trace`][purenet.optim.trace],
[`scale_by_adagrad`][purenet.optim.scale_by_adagrad],
[`scale_by_rmsprop`][purenet.optim.scale_by_rmsprop],
[`scale_by_adam`][purenet.optim.scale_by_adam]) compose with it:

```python
opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3))
```

A chain is a transformation, not an `Optimizer`; [`as_optimizer`][purenet.optim.as_optimizer]
gives any transformation (an optax one included) a `step`, and purenet's
training loops accept any of them.

`params` and `grads` are the same pytree of float arrays: nested dicts,
tuples and lists, or a single flat vector `theta` (the trajectory is the
same either way, entry by entry). `state` is a small named tuple whose first
field `count` (an int32 scalar) is the number of steps taken; the other
fields are pytrees shaped like `params`. Nothing is mutated, so every
function works under `jit`, `vmap` (say, many seeds at once) and inside
`lax.scan`.

Learning rates. `learning_rate` is a number or a schedule, a pure function
of the step count (see [`purenet.schedules`][purenet.schedules]). The step
that takes `state.count == k` uses `learning_rate(k)`: the first step uses
`schedule(0)`. Adam's bias corrections use `t = k + 1`, the 1-based step
number of the paper.

Hyperparameters as values. The learning rate and the real-valued
hyperparameters (`mass`, `decay`, `b1`, `b2`, `eps`, `weight_decay`,
`initial_accumulator`) may be traced scalars, so that one `jax.vmap` runs an
optimizer for several settings at once, as one program. A Python number is
checked when the optimizer is built (`ValueError` naming the argument for a
bad value, `TypeError` for a non-number); a traced value cannot be, so it is
taken as given.

Dtypes. Each parameter keeps its dtype: the learning rate, the step number
and any array-valued hyperparameter are cast to it; Python-float
hyperparameters stay Python floats (weakly typed in JAX, so they do not
promote float32 to float64); the new parameters and state are cast back to
the dtypes they came in with. float16 and bfloat16 are refused.

How it is built. Every optimizer is a chain of gradient transformations,
as optax's are, written in its docstring; for example
`adam = chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr))`
and `momentum = chain(scale_by_learning_rate(lr), trace(mass))`. The
members of the chain count the same steps, so their states are folded into
one named tuple (`AdamState(count, mu, nu)` rather than a chain's tuple of
states): one `count`, then each member's other fields in chain order.

Defaults follow `torch.optim` unless a docstring says otherwise; every
place where established libraries disagree (epsilon inside or outside the
square root, AdaGrad's initial accumulator, the two forms of Nesterov
momentum, Adam's bias correction, L2 versus decoupled weight decay) is marked
with a warning in the optimizer's docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp  # noqa: F401  (the docstring examples use jnp)

from purenet._checks import fail_type, float_array, nonnegative, number_in, same_tree
from purenet.schedules import Schedule
from purenet.transforms import (
    AdamState,
    EmptyState,
    GradientTransformation,
    ScaleByAdagradState,
    ScaleByRmspropState,
    ScaleByScheduleState,
    TraceState,
    add_decayed_weights,
    apply_updates,
    chain,
    clip,
    clip_by_global_norm,
    decay_mask,
    is_transform,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rmsprop,
    scale_by_sign,
    trace,
)

__all__ = [
    "Optimizer",
    "as_optimizer",
    "apply_updates",
    "GradientTransformation",
    "EmptyState",
    "ScaleByScheduleState",
    "TraceState",
    "ScaleByAdagradState",
    "ScaleByRmspropState",
    "SgdState",
    "MomentumState",
    "AdagradState",
    "RmspropState",
    "AdamState",
    "chain",
    "clip_by_global_norm",
    "scale_by_sign",
    "clip",
    "add_decayed_weights",
    "decay_mask",
    "scale_by_learning_rate",
    "trace",
    "scale_by_adagrad",
    "scale_by_rmsprop",
    "scale_by_adam",
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
]

Array = Any
Params = Any  # a pytree of float arrays
State = Any  # one of the *State named tuples below


class Optimizer(NamedTuple):
    """Three pure functions: `init`, `update` (optax's interface) and `step`.

    Attributes:
      init: `init(params) -> state`.
      update: `update(grads, state, params=None) -> (updates, state)`; the
        updates are added to the parameters by
        [`apply_updates`][purenet.optim.apply_updates].
      step: `step(params, grads, state) -> (params, state)`, which is
        `update` then `apply_updates`.

    The first two fields are optax's `GradientTransformation`, so an
    `Optimizer` works wherever optax expects one (`optax.chain` reads the
    attributes `init` and `update`).
    """

    init: Callable[[Params], State]
    update: Callable[..., tuple[Params, State]]
    step: Callable[[Params, Params, State], tuple[Params, State]]


def _from_update(init, update) -> Optimizer:
    """An [`Optimizer`][purenet.optim.Optimizer] whose `step` is `update` + `apply_updates`."""

    def step(params, grads, state):
        updates, state = update(grads, state, params)
        return apply_updates(params, updates), state

    return Optimizer(init, update, step)


def as_optimizer(transform) -> Optimizer:
    """Any gradient transformation as an [`Optimizer`][purenet.optim.Optimizer] (with a `step`).

    An `Optimizer` is returned as it is; anything else with callable `init`
    and `update` (a [`chain`][purenet.optim.chain], an optax
    `GradientTransformation`) gets `step(params, grads, state) =
    (apply_updates(params, updates), state)`.

    Raises:
      TypeError: `transform` has no `init` and `update` (`optimizer: expected ...`).
    """
    if isinstance(transform, Optimizer):
        return transform
    if not is_transform(transform):
        fail_type(
            "optimizer",
            "a purenet.optim optimizer or a gradient transformation (init and update)",
            type(transform).__name__,
        )
    return _from_update(transform.init, transform.update)


class SgdState(NamedTuple):
    """The state of [`sgd`][purenet.optim.sgd].

    Attributes:
      count: int32 scalar, the number of steps taken.
    """

    count: Array


class MomentumState(NamedTuple):
    """The state of [`momentum`][purenet.optim.momentum] and [`nesterov`][purenet.optim.nesterov].

    Attributes:
      count: int32 scalar, the number of steps taken.
      velocity: shaped like params; the last update `dw(t-1)` for momentum,
        `v(t-1)` for Nesterov.
    """

    count: Array
    velocity: Params


class AdagradState(NamedTuple):
    """The state of [`adagrad`][purenet.optim.adagrad].

    Attributes:
      count: int32 scalar, the number of steps taken.
      sum_of_squares: `G(t) = G(0) + sum of g(s)^2 for s <= t`, shaped like params.
    """

    count: Array
    sum_of_squares: Params


class RmspropState(NamedTuple):
    """The state of [`rmsprop`][purenet.optim.rmsprop].

    Attributes:
      count: int32 scalar, the number of steps taken.
      mean_square: the exponential moving average `s(t)` of `g^2`, shaped like params.
    """

    count: Array
    mean_square: Params


# --- the one way an optimizer is made -------------------------------------------------


def _check_float_params(params) -> None:
    for leaf in jax.tree.leaves(params):
        float_array("params", leaf)


def _optimizer(state_type, *transforms) -> Optimizer:
    """`chain(*transforms)` as an [`Optimizer`][purenet.optim.Optimizer] with one named state.

    A chain's state is the tuple of its members' states (named tuples). The
    members here count the same steps (each starts at 0 and adds 1 per
    update), so the tuple folds into `state_type(count, *fields)`: one
    `count`, then the fields of every member's state other than `count`, in
    chain order. `update` unfolds it, runs the chain, and folds the result:
    the numbers are exactly those of the chain.

    Args:
      state_type: the optimizer's state, a named tuple whose first field is `count`.
      *transforms: purenet gradient transformations; at least one state has a `count`.

    Returns:
      An [`Optimizer`][purenet.optim.Optimizer]: `init` also checks that the
      params are float arrays, `update` that the grads match the params.
    """
    tx = chain(*transforms)

    def fold(states):
        counts = [s.count for s in states if "count" in s._fields]
        rest = [v for s in states for f, v in zip(s._fields, s, strict=True) if f != "count"]
        return state_type(counts[0], *rest)

    def unfold(state, like):
        rest = iter(state[1:])
        return tuple(
            type(s)(*(state.count if f == "count" else next(rest) for f in s._fields)) for s in like
        )

    def init(params):
        _check_float_params(params)
        return fold(tx.init(params))

    def update(grads, state, params=None):
        if params is not None:
            same_tree("grads", grads, params)
        if not isinstance(state, state_type):
            expected = f"the {state_type.__name__} that this optimizer's init gives"
            fail_type("state", expected, type(state).__name__)
        # The members' state types, which do not depend on values: traced once, never run.
        like = jax.eval_shape(tx.init, grads if params is None else params)
        updates, states = tx.update(grads, unfold(state, like), params)
        return updates, fold(states)

    return _from_update(init, update)


# --- the optimizers -------------------------------------------------------------


def sgd(learning_rate: float | Schedule) -> Optimizer:
    """Plain (stochastic) gradient descent.

    `w(t) = w(t-1) - lr(t) * g(t)`, the delta rule of the notes, as
    `torch.optim.SGD` with its defaults. As a chain:
    `chain(scale_by_learning_rate(learning_rate))`, as `optax.sgd`.

    Args:
      learning_rate: the step size `lr`, a number `>= 0` (perhaps traced) or a schedule.
        There is no default: the largest stable step is `2 / L` for a loss
        of curvature `L`, so no value suits every loss.

    Returns:
      An [`Optimizer`][purenet.optim.Optimizer] with [`SgdState`][purenet.optim.SgdState].

    Example:
      >>> opt = sgd(0.1)
      >>> w, state = opt.step(jnp.array([1.0]), jnp.array([2.0]), opt.init(jnp.array([1.0])))
      >>> [round(v, 6) for v in w.tolist()], int(state.count)
      ([0.8], 1)

    References:
      Robbins & Monro (1951), "A stochastic approximation method".
    """
    return _optimizer(SgdState, scale_by_learning_rate(learning_rate))


def momentum(learning_rate: float | Schedule, mass: float = 0.9) -> Optimizer:
    """Gradient descent with (heavy-ball) momentum, in Rumelhart's form.

    `dw(t) = -lr(t) * g(t) + mass * dw(t-1)`, `w(t) = w(t-1) + dw(t)`,
    `dw(0) = 0`: each update is the new gradient step plus a fraction
    `mass` of the previous update (Rumelhart, Hinton & Williams 1986,
    eq. 9, with `eps = lr` and `alpha = mass`). As a chain:
    `chain(scale_by_learning_rate(learning_rate), trace(mass))`: the
    learning rate comes first, so that each gradient keeps the rate of its
    own step (`optax.sgd(lr, momentum)` is `chain(trace(mass),
    scale_by_learning_rate(lr))`, torch's form below).

    Warning:
      `torch.optim.SGD(momentum=mass)` accumulates gradients and multiplies
      by the learning rate afterwards: `b(t) = mass * b(t-1) + g(t)`,
      `w(t) = w(t-1) - lr(t) * b(t)`. With a constant learning rate the two
      are the same algorithm (`dw = -lr * b`, identical iterates). With a
      schedule they differ: here each gradient keeps the learning rate of the
      step at which it was seen, while torch rescales the whole accumulated
      velocity by the current `lr(t)`, so a drop of the learning rate takes
      effect at once in torch and fades in over `~1 / (1 - mass)` steps here.

    The default `mass = 0.9` is a choice, not torch's (torch's SGD has
    `momentum=0`, which is [`sgd`][purenet.optim.sgd]): 0.9 is the value of Sutskever et
    al. (2013) and the usual starting point.

    Args:
      learning_rate: `lr`, a number `>= 0` (perhaps traced) or a schedule (no default, as
        for [`sgd`][purenet.optim.sgd]).
      mass: the momentum coefficient, in `[0, 1)`.

    Returns:
      An [`Optimizer`][purenet.optim.Optimizer] with [`MomentumState`][purenet.optim.MomentumState]
      (`velocity = dw`).

    Example:
      >>> opt = momentum(0.1, mass=0.5)
      >>> w, g = jnp.array([1.0]), jnp.array([1.0])
      >>> w, state = opt.step(w, g, opt.init(w))      # dw = -0.1
      >>> w, state = opt.step(w, g, state)            # dw = -0.1 + 0.5 * -0.1
      >>> [round(v, 6) for v in w.tolist()]
      [0.75]

    References:
      Rumelhart, Hinton & Williams (1986), "Learning representations by
      back-propagating errors", Nature 323, eq. (9).
      Polyak (1964), "Some methods of speeding up the convergence of
      iteration methods".
    """
    mass = number_in("mass", mass, 0.0, 1.0, high_open=True)
    return _optimizer(MomentumState, scale_by_learning_rate(learning_rate), trace(mass))


def nesterov(learning_rate: float | Schedule, mass: float = 0.9) -> Optimizer:
    """Nesterov's accelerated gradient, reformulated to use the gradient at the iterate.

    Sutskever et al. (2013) write Nesterov momentum with a look-ahead
    gradient: `v(t) = mass * v(t-1) - lr * grad E(theta(t-1) + mass * v(t-1))`,
    `theta(t) = theta(t-1) + v(t)`. Changing variables to the look-ahead
    point `w = theta + mass * v` (Bengio, Boulanger-Lewandowski & Pascanu
    2013) gives a rule that needs the gradient at the current iterate only,
    which is what `step(params, grads, state)` receives:

    ```text
    v(t) = mass * v(t-1) - lr(t) * g(t)          g(t) = grad E(w(t-1))
    w(t) = w(t-1) + mass * v(t) - lr(t) * g(t)
    ```

    with `v(0) = 0`. Both forms start at the same point (`v = 0`) and
    `w(t) = theta(t) + mass * v(t)` at every step after; the parameters
    returned here are `w`, the points where gradients are evaluated. As a
    chain: `chain(scale_by_learning_rate(learning_rate), trace(mass, nesterov=True))`.

    Warning:
      `torch.optim.SGD(momentum=mass, nesterov=True)` computes
      `b(t) = mass * b(t-1) + g(t)`, `w(t) = w(t-1) - lr(t) * (g(t) + mass * b(t))`:
      the same iterates for a constant learning rate (`v = -lr * b`); with a
      schedule torch rescales the accumulated `b` by the current rate (see
      [`momentum`][purenet.optim.momentum]). Some texts call the look-ahead form itself "Nesterov";
      its `theta` iterates lag ours by `mass * v`.

    The default `mass = 0.9` is a choice (torch's default momentum is 0, and
    torch refuses `nesterov=True` without momentum).

    Args:
      learning_rate: `lr`, a number `>= 0` (perhaps traced) or a schedule (no default, as
        for [`sgd`][purenet.optim.sgd]).
      mass: the momentum coefficient, in `[0, 1)`.

    Returns:
      An [`Optimizer`][purenet.optim.Optimizer] with [`MomentumState`][purenet.optim.MomentumState]
      (`velocity = v`).

    Example:
      >>> opt = nesterov(0.1, mass=0.5)
      >>> w = jnp.array([1.0])
      >>> w, state = opt.step(w, jnp.array([1.0]), opt.init(w))  # v = -0.1
      >>> [round(v, 6) for v in w.tolist()]                       # 1 - 0.05 - 0.1
      [0.85]

    References:
      Nesterov (1983), "A method for solving the convex programming problem
      with convergence rate O(1/k^2)".
      Sutskever, Martens, Dahl & Hinton (2013), "On the importance of
      initialization and momentum in deep learning", ICML, eqs. (3)-(4).
      Bengio, Boulanger-Lewandowski & Pascanu (2013), "Advances in optimizing
      recurrent networks", ICASSP.
    """
    mass = number_in("mass", mass, 0.0, 1.0, high_open=True)
    return _optimizer(
        MomentumState, scale_by_learning_rate(learning_rate), trace(mass, nesterov=True)
    )


def adagrad(
    learning_rate: float | Schedule = 1e-2,
    eps: float = 1e-10,
    *,
    initial_accumulator: float = 0.0,
) -> Optimizer:
    """AdaGrad: per-entry step sizes shrinking with the accumulated squared gradient.

    `G(t) = G(t-1) + g(t)^2`, `w(t) = w(t-1) - lr(t) * g(t) / (sqrt(G(t)) + eps)`,
    `G(0) = initial_accumulator`; defaults as `torch.optim.Adagrad`
    (`lr=1e-2`, `eps=1e-10`, accumulator 0, no `lr_decay`). Under a
    constant gradient the step is `lr / sqrt(t)`: AdaGrad anneals by itself,
    which suits convex problems and sparse features and can stall deep nets.
    As a chain: `chain(scale_by_adagrad(eps, initial_accumulator=...),
    scale_by_learning_rate(learning_rate))`.

    Warning:
      Epsilon sits outside the square root here, as in torch; the course
      notes and some texts write `sqrt(G + eps)`. Inside, `eps` acts like
      `sqrt(eps)` outside: with the same `eps = 1e-10` the denominator
      never falls below `1e-5`, which damps entries whose accumulated
      gradient is that small, where outside the floor is `1e-10`.
      The accumulator starts at 0 as in torch (and Duchi et al.);
      TensorFlow's `Adagrad` starts it at 0.1, which caps the first steps at
      `lr * g / sqrt(0.1 + g^2)`: pass `initial_accumulator=0.1` to match.

    Args:
      learning_rate: `lr`, a number `>= 0` (perhaps traced) or a schedule.
      eps: added to `sqrt(G)` so that an entry whose gradients have all been
        zero divides 0 by `eps`, not by 0; `> 0` (at least the smallest normal
        number of the params' dtype, so it never rounds to 0).
      initial_accumulator: `G(0)`, `>= 0` (keyword only).

    Returns:
      An [`Optimizer`][purenet.optim.Optimizer] with [`AdagradState`][purenet.optim.AdagradState]
      (`sum_of_squares = G`).

    Example:
      >>> opt = adagrad(0.1)
      >>> w, state = opt.step(jnp.zeros(1), jnp.array([5.0]), opt.init(jnp.zeros(1)))
      >>> [round(v, 6) for v in w.tolist()]    # -0.1 * 5 / sqrt(25)
      [-0.1]

    References:
      Duchi, Hazan & Singer (2011), "Adaptive subgradient methods for online
      learning and stochastic optimization", JMLR 12 (the diagonal version).
    """
    return _optimizer(
        AdagradState,
        scale_by_adagrad(eps, initial_accumulator=initial_accumulator),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: float | Schedule = 1e-2, decay: float = 0.99, eps: float = 1e-8
) -> Optimizer:
    """RMSprop: divide the gradient by a running root-mean-square of recent gradients.

    `s(t) = decay * s(t-1) + (1 - decay) * g(t)^2`,
    `w(t) = w(t-1) - lr(t) * g(t) / (sqrt(s(t)) + eps)`, `s(0) = 0`;
    defaults as `torch.optim.RMSprop` (`lr=1e-2`, `alpha=0.99`,
    `eps=1e-8`, no momentum, not centred). Unlike AdaGrad the denominator
    forgets, so the step does not decay to zero. As a chain:
    `chain(scale_by_rmsprop(decay, eps), scale_by_learning_rate(learning_rate))`.

    Warning:
      Epsilon sits outside the square root, as in torch. TensorFlow 1's
      `tf.train.RMSPropOptimizer` (and ports such as timm's `RMSpropTF`)
      put it inside, `sqrt(s + eps)`, with `eps=1e-10`; Tieleman & Hinton's
      lecture has no epsilon and `decay = 0.9`. Because `s(0) = 0` and there
      is no bias correction, the first step is `lr * g / (sqrt(1 - decay) * |g|)`,
      10 times `lr` for `decay = 0.99`; TensorFlow 1 initialises `s` to 1
      instead.

    Args:
      learning_rate: `lr`, a number `>= 0` (perhaps traced) or a schedule.
      decay: the forgetting factor of the mean square (torch's `alpha`), in `[0, 1)`.
      eps: added to the root mean square to keep the division finite, `> 0` (at least the
        smallest normal number of the params' dtype, so it never rounds to 0).

    Returns:
      An [`Optimizer`][purenet.optim.Optimizer] with [`RmspropState`][purenet.optim.RmspropState]
      (`mean_square = s`).

    Example:
      >>> opt = rmsprop(0.01, decay=0.99)
      >>> w, state = opt.step(jnp.zeros(1), jnp.array([3.0]), opt.init(jnp.zeros(1)))
      >>> [round(v, 5) for v in w.tolist()]    # -0.01 * 3 / sqrt(0.01 * 9)
      [-0.1]

    References:
      Tieleman & Hinton (2012), "Lecture 6.5 - rmsprop: divide the gradient by
      a running average of its recent magnitude", COURSERA: Neural Networks
      for Machine Learning.
    """
    return _optimizer(
        RmspropState, scale_by_rmsprop(decay, eps), scale_by_learning_rate(learning_rate)
    )


def adam(
    learning_rate: float | Schedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> Optimizer:
    """Adam: steps from bias-corrected moving averages of the gradient and its square.

    Algorithm 1 of Kingma & Ba (2015), with `t` the 1-based step number:

    ```text
    m(t) = b1 * m(t-1) + (1 - b1) * g(t)         m(0) = 0
    v(t) = b2 * v(t-1) + (1 - b2) * g(t)^2       v(0) = 0
    m_hat = m(t) / (1 - b1^t)        v_hat = v(t) / (1 - b2^t)
    w(t) = w(t-1) - lr(t) * m_hat / (sqrt(v_hat) + eps)
    ```

    Defaults as `torch.optim.Adam` and the paper (`lr=1e-3`,
    `betas=(0.9, 0.999)`, `eps=1e-8`). The first step is
    `lr * g / (|g| + eps)`, of size `lr` whatever the scale of `g`. As a
    chain: `chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))`,
    as `optax.adam`.

    Warning:
      This is Algorithm 1, as torch computes it. Section 2 of the paper (and
      TensorFlow 1's `tf.train.AdamOptimizer`) folds the corrections into the
      step size, `lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`,
      `w -= lr_t * m / (sqrt(v) + eps_hat)`: the same rule only if
      `eps_hat = eps * sqrt(1 - b2^t)`, so with the same `eps` the two differ
      early in training and for tiny gradients.
      `torch.optim.Adam(weight_decay=...)` adds `weight_decay * w` to the
      gradient (coupled L2); that is not offered here, since Loshchilov &
      Hutter show it is not weight decay under Adam: use [`adamw`][purenet.optim.adamw], or add
      the L2 term to the loss if coupled L2 is what you want.

    Args:
      learning_rate: `lr`, a number `>= 0` (perhaps traced) or a schedule.
      b1: decay of the first-moment average, in `[0, 1)`.
      b2: decay of the second-moment average, in `[0, 1)`.
      eps: added to `sqrt(v_hat)` to keep the division finite, `> 0` (at least the
        smallest normal number of the params' dtype, so it never rounds to 0).

    Returns:
      An [`Optimizer`][purenet.optim.Optimizer] with [`AdamState`][purenet.optim.AdamState]
      (`mu = m`, `nu = v`).

    Example:
      >>> opt = adam(0.1)
      >>> w, state = opt.step(jnp.zeros(1), jnp.array([1e4]), opt.init(jnp.zeros(1)))
      >>> [round(v, 4) for v in w.tolist()]    # -lr * g / (|g| + eps)
      [-0.1]

    References:
      Kingma & Ba (2015), "Adam: a method for stochastic optimization", ICLR,
      Algorithm 1 and section 2.
    """
    return _optimizer(AdamState, scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))


def adamw(
    learning_rate: float | Schedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    *,
    mask=None,
) -> Optimizer:
    """AdamW: Adam with decoupled weight decay.

    The moments and `m_hat`, `v_hat` are those of [`adam`][purenet.optim.adam]
    (the decay never enters the gradient averages); the weights then shrink
    separately:

    ```text
    w(t) = w(t-1) - lr(t) * (m_hat / (sqrt(v_hat) + eps) + weight_decay * w(t-1))
    ```

    As a chain of gradient transformations this is exactly
    `chain(scale_by_adam(b1, b2, eps), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))`, which is also how `optax.adamw`
    is built; the three states are folded into one
    [`AdamState`][purenet.optim.AdamState] (the learning rate's step count is
    Adam's). The same iterates as `optax.adamw(learning_rate, b1, b2, eps,
    weight_decay=weight_decay, mask=mask)`.

    Defaults as `torch.optim.AdamW` (`lr=1e-3`, `betas=(0.9, 0.999)`,
    `eps=1e-8`, `weight_decay=1e-2`). PyTorch first multiplies the weights by
    `1 - lr * weight_decay`, then takes the Adam step; optax (and this
    function) adds `weight_decay * w` to Adam's direction and then scales
    the sum by `-lr`. Both give `w - lr * weight_decay * w - lr * direction`:
    the same update (up to rounding).

    Warning:
      Coupled L2 regularisation (adding `weight_decay * w` to `g`, as
      `torch.optim.Adam(weight_decay=...)` does) is divided by
      `sqrt(v_hat)` like the rest of the gradient, so weights with large
      gradients are barely regularised; decoupling restores a uniform decay
      (Loshchilov & Hutter 2019). The paper's Algorithm 2 scales the decay by
      the schedule multiplier `eta_t` only, `w -= eta_t * lambda * w`;
      torch, optax and this function scale it by the learning rate, so the
      paper's `lambda` is `lr * weight_decay` here. By default every leaf is
      decayed, as `torch.optim.AdamW(model.parameters())`; pass
      `mask=decay_mask` to spare biases and norm parameters.

    Args:
      learning_rate: `lr`, a number `>= 0` (perhaps traced) or a schedule.
      b1: decay of the first-moment average, in `[0, 1)`.
      b2: decay of the second-moment average, in `[0, 1)`.
      eps: added to `sqrt(v_hat)` to keep the division finite, `> 0` (at least the
        smallest normal number of the params' dtype, so it never rounds to 0).
      weight_decay: the decoupled decay rate, `>= 0` (0 gives [`adam`][purenet.optim.adam]).
      mask: which leaves are decayed (keyword only): `None` (all), a pytree of
        bools with the structure of params, or a function of params giving
        one, such as [`decay_mask`][purenet.optim.decay_mask].

    Returns:
      An [`Optimizer`][purenet.optim.Optimizer] with [`AdamState`][purenet.optim.AdamState].

    Example:
      >>> opt = adamw(0.1, weight_decay=0.5)
      >>> w = jnp.array([2.0])
      >>> w, state = opt.step(w, jnp.zeros(1), opt.init(w))   # zero gradient: decay only
      >>> [round(v, 6) for v in w.tolist()]                   # 2 - 0.1 * 0.5 * 2
      [1.9]

    References:
      Loshchilov & Hutter (2019), "Decoupled weight decay regularization",
      ICLR, Algorithm 2. PyTorch, `torch.optim.AdamW` documentation.
    """
    scale = scale_by_adam(b1, b2, eps)
    weight_decay = nonnegative("weight_decay", weight_decay)
    return _optimizer(
        AdamState,
        scale,
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
