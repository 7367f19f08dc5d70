"""Learning-rate schedules and gradient clipping, as pure functions.

A schedule is a pure function of the step count, ``schedule(count) -> learning
rate``. ``count`` is the number of steps already taken (an int32 array, or a
Python int when called by hand), so the first step of an optimizer uses
``schedule(0)``, the second ``schedule(1)``, and so on. Schedules are written
with ``jax.numpy`` only, so they work under ``jit``, ``vmap`` and ``scan``; they
return a scalar of the default float type, which the optimizer casts to each
parameter's dtype. Any callable with that signature is a schedule: these are
only the common ones.

    >>> from purenet import optim
    >>> lr = optim.linear_warmup(100, optim.cosine_decay(1e-3, 10_000))
    >>> opt = optim.adam(lr)                          # doctest: +SKIP

Gradient transforms map a gradient pytree to a gradient pytree of the same
structure and dtypes; apply them to ``grads`` before ``opt.step``:

    >>> grads = optim.clip_by_global_norm(grads, 1.0)  # doctest: +SKIP
    >>> params, state = opt.step(params, grads, state)  # doctest: +SKIP

Hyperparameters are checked when a schedule is built, so a nonsense value
fails at once with a ``ValueError`` that names the argument.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from purenet._checks import fail, nonnegative, number_in, positive, positive_int

Array = Any
Schedule = Callable[[Array], Array]

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "piecewise_constant",
    "exponential_decay",
    "inverse_time_decay",
    "cosine_decay",
    "linear_warmup",
    "global_norm",
    "clip_by_value",
    "clip_by_global_norm",
]


def _float_count(count) -> Array:
    # The default float type (float64 under x64): the schedule's arithmetic is
    # then as precise as the run allows, and the optimizer casts it per leaf.
    return jnp.asarray(count).astype(jnp.result_type(float))


def constant(value: float) -> Schedule:
    """The same learning rate at every step: ``lr(t) = value``.

    Args:
      value: the learning rate, ``>= 0``.

    Returns:
      A schedule.

    Example:
      >>> round(float(constant(0.1)(7)), 6)
      0.1
    """
    value = nonnegative("value", value)

    def schedule(count):
        return jnp.full(jnp.shape(count), value, jnp.result_type(float))

    return schedule


def step_decay(init_value: float, every: int, factor: float = 0.1) -> Schedule:
    """Multiply the learning rate by ``factor`` every ``every`` steps.

    ``lr(t) = init_value * factor ** floor(t / every)``; the defaults follow
    ``torch.optim.lr_scheduler.StepLR`` (``gamma=0.1``), counted in steps
    rather than epochs. For boundaries that are not evenly spaced, use
    :func:`piecewise_constant`.

    Args:
      init_value: the learning rate for steps ``0 .. every - 1``, ``>= 0``.
      every: the number of steps between two decays, a positive integer.
      factor: the multiplier applied at each decay, in ``(0, 1]``.

    Returns:
      A schedule.

    Example:
      >>> lr = step_decay(1.0, every=10, factor=0.5)
      >>> [float(lr(t)) for t in (0, 9, 10, 25)]
      [1.0, 1.0, 0.5, 0.25]
    """
    init_value = nonnegative("init_value", init_value)
    every = positive_int("every", every)
    factor = number_in("factor", factor, 0.0, 1.0, low_open=True)

    def schedule(count):
        # Integer floor division: the boundary steps are exact at any count.
        decays = jnp.asarray(count) // every
        return init_value * factor ** _float_count(decays)

    return schedule


def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """A learning rate that is constant between given step boundaries.

    ``lr(t) = values[i]`` where ``i`` is the number of boundaries ``<= t``; so
    ``values[0]`` is used before ``boundaries[0]`` and ``values[-1]`` from
    ``boundaries[-1]`` on. ``torch.optim.lr_scheduler.MultiStepLR`` is the case
    ``values[i] = lr * gamma ** i``.

    Args:
      boundaries: strictly increasing positive step counts.
      values: ``len(boundaries) + 1`` learning rates, each ``>= 0``.

    Returns:
      A schedule.

    Example:
      >>> lr = piecewise_constant([100, 150], [0.1, 0.01, 0.001])
      >>> [round(float(lr(t)), 6) for t in (0, 99, 100, 149, 150, 10_000)]
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    """
    boundaries = [positive_int("boundaries", b) for b in boundaries]
    if any(b >= c for b, c in zip(boundaries, boundaries[1:], strict=False)):
        fail("boundaries", "strictly increasing step counts", repr(boundaries))
    values = [nonnegative("values", v) for v in values]
    if len(values) != len(boundaries) + 1:
        fail("values", f"{len(boundaries) + 1} values (one more than boundaries)", len(values))
    boundaries_array = jnp.asarray(boundaries, jnp.int32)
    values_array = jnp.asarray(values, jnp.result_type(float))

    def schedule(count):
        # Counting the boundaries passed is a jittable searchsorted for a
        # scalar count, and it batches under vmap.
        index = jnp.sum(jnp.asarray(count)[..., None] >= boundaries_array, axis=-1)
        return values_array[index]

    return schedule


def exponential_decay(init_value: float, decay_rate: float, decay_steps: int = 1) -> Schedule:
    """Decay the learning rate by ``decay_rate`` every ``decay_steps`` steps, smoothly.

    ``lr(t) = init_value * decay_rate ** (t / decay_steps)``. With
    ``decay_steps=1`` this is ``torch.optim.lr_scheduler.ExponentialLR``
    (``gamma = decay_rate``) counted in steps; it is TensorFlow's
    ``ExponentialDecay`` with ``staircase=False`` (for the staircase, use
    :func:`step_decay`).

    Args:
      init_value: the learning rate at step 0, ``>= 0``.
      decay_rate: the factor per ``decay_steps`` steps, in ``(0, 1]``.
      decay_steps: the period of one factor of ``decay_rate``, a positive integer.

    Returns:
      A schedule.

    Example:
      >>> lr = exponential_decay(1.0, decay_rate=0.5, decay_steps=10)
      >>> [round(float(lr(t)), 6) for t in (0, 5, 10, 20)]
      [1.0, 0.707107, 0.5, 0.25]
    """
    init_value = nonnegative("init_value", init_value)
    decay_rate = number_in("decay_rate", decay_rate, 0.0, 1.0, low_open=True)
    decay_steps = positive_int("decay_steps", decay_steps)

    def schedule(count):
        return init_value * decay_rate ** (_float_count(count) / decay_steps)

    return schedule


def inverse_time_decay(init_value: float, decay_rate: float, decay_steps: int = 1) -> Schedule:
    """Decay the learning rate as ``1 / t``.

    ``lr(t) = init_value / (1 + decay_rate * t / decay_steps)``, TensorFlow's
    ``InverseTimeDecay`` (``staircase=False``). A ``1/t`` step size satisfies
    the Robbins-Monro conditions (``sum lr = inf``, ``sum lr^2 < inf``) under
    which stochastic gradient descent converges.

    Args:
      init_value: the learning rate at step 0, ``>= 0``.
      decay_rate: how fast it decays, ``>= 0``.
      decay_steps: the step count over which ``decay_rate`` applies once, a
        positive integer.

    Returns:
      A schedule.

    Example:
      >>> lr = inverse_time_decay(1.0, decay_rate=1.0, decay_steps=10)
      >>> [float(lr(t)) for t in (0, 10, 30)]
      [1.0, 0.5, 0.25]

    References:
      Robbins & Monro (1951), "A stochastic approximation method".
    """
    init_value = nonnegative("init_value", init_value)
    decay_rate = nonnegative("decay_rate", decay_rate)
    decay_steps = positive_int("decay_steps", decay_steps)

    def schedule(count):
        return init_value / (1.0 + decay_rate * _float_count(count) / decay_steps)

    return schedule


def cosine_decay(init_value: float, decay_steps: int, final_value: float = 0.0) -> Schedule:
    """Half a cosine from ``init_value`` down to ``final_value``, then flat.

    ``lr(t) = final + (init - final) * (1 + cos(pi * min(t, T) / T)) / 2`` with
    ``T = decay_steps``: the annealing of SGDR without the restarts, as in
    ``torch.optim.lr_scheduler.CosineAnnealingLR`` (``T_max = T``,
    ``eta_min = final_value``), except that it stays at ``final_value`` after
    ``T`` where torch's closed form would rise again.

    Args:
      init_value: the learning rate at step 0, ``>= 0``.
      decay_steps: the step count ``T`` at which ``final_value`` is reached, a
        positive integer.
      final_value: the learning rate from step ``T`` on, ``>= 0``.

    Returns:
      A schedule.

    Example:
      >>> lr = cosine_decay(1.0, decay_steps=100, final_value=0.1)
      >>> [round(float(lr(t)), 6) for t in (0, 50, 100, 1_000)]
      [1.0, 0.55, 0.1, 0.1]

    References:
      Loshchilov & Hutter (2017), "SGDR: Stochastic gradient descent with warm
      restarts", ICLR, eq. (5).
    """
    init_value = nonnegative("init_value", init_value)
    decay_steps = positive_int("decay_steps", decay_steps)
    final_value = nonnegative("final_value", final_value)

    def schedule(count):
        progress = jnp.minimum(_float_count(count), decay_steps) / decay_steps
        return final_value + (init_value - final_value) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

    return schedule


def linear_warmup(warmup_steps: int, then: float | Schedule, init_value: float = 0.0) -> Schedule:
    """Ramp linearly from ``init_value`` for ``warmup_steps`` steps, then hand over.

    With ``W = warmup_steps`` and ``peak = then(0)`` (or ``then`` itself when it
    is a number)::

        lr(t) = init_value + (peak - init_value) * t / W    for t < W
        lr(t) = then(t - W)                                 for t >= W

    so the hand-over is continuous and ``then`` starts from its own step 0.
    With the default ``init_value=0`` the very first step has learning rate 0
    (it only fills the optimizer's moment estimates); pass a small
    ``init_value`` to avoid it.

    Args:
      warmup_steps: the length ``W`` of the ramp, a positive integer.
      then: the learning rate after the warm-up: a number (``>= 0``) or a
        schedule, which is called with the count since the end of the warm-up.
      init_value: the learning rate at step 0, ``>= 0``.

    Returns:
      A schedule.

    Example:
      >>> lr = linear_warmup(10, exponential_decay(1.0, 0.5, decay_steps=10))
      >>> [round(float(lr(t)), 6) for t in (0, 5, 10, 20)]
      [0.0, 0.5, 1.0, 0.5]

    References:
      Goyal et al. (2017), "Accurate, large minibatch SGD: training ImageNet in
      1 hour", section 2.2 (gradual warm-up).
    """
    warmup_steps = positive_int("warmup_steps", warmup_steps)
    init_value = nonnegative("init_value", init_value)
    after = then if callable(then) else constant(nonnegative("then", then))

    def schedule(count):
        count = jnp.asarray(count)
        peak = after(jnp.zeros_like(count))
        ramp = init_value + (peak - init_value) * (_float_count(count) / warmup_steps)
        # Clamped so that `after` is never asked about negative counts (both
        # branches of `where` are evaluated).
        handed_over = after(jnp.maximum(count - warmup_steps, 0))
        return jnp.where(count < warmup_steps, ramp, handed_over)

    return schedule


# --- gradient transforms ------------------------------------------------------


def _check_limit(name: str, value) -> None:
    # A Python number is a hyperparameter and is checked; an array (perhaps a
    # tracer, when the limit itself is vmapped over) is taken as given.
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        positive(name, value)
    elif not hasattr(value, "dtype"):
        fail(name, "a positive number", repr(value))


def global_norm(tree) -> Array:
    """The Euclidean norm of all the entries of a pytree, as one vector.

    ``||g|| = sqrt(sum over leaves of sum(leaf ** 2))``: the norm of the
    ravelled (flat) gradient, which is what :func:`clip_by_global_norm` and
    ``torch.nn.utils.clip_grad_norm_`` measure.

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


def clip_by_value(grads, limit: float):
    """Clip every gradient entry to ``[-limit, limit]``.

    ``g_i <- min(max(g_i, -limit), limit)``, as
    ``torch.nn.utils.clip_grad_value_``. It changes the direction of the
    gradient; :func:`clip_by_global_norm` does not.

    Args:
      grads: a pytree of arrays.
      limit: the largest magnitude allowed, ``> 0``.

    Returns:
      A pytree like ``grads`` (same structure, shapes and dtypes).

    Example:
      >>> clip_by_value(jnp.array([-3.0, 0.5, 2.0]), 1.0).tolist()
      [-1.0, 0.5, 1.0]
    """
    _check_limit("limit", limit)
    return jax.tree.map(lambda g: jnp.clip(g, -limit, limit).astype(g.dtype), grads)


def clip_by_global_norm(grads, max_norm: float):
    """Rescale the whole gradient so that its global norm is at most ``max_norm``.

    ``g <- g * max_norm / max(||g||, max_norm)`` where ``||g||`` is
    :func:`global_norm`: the direction is kept, and a gradient already within
    the limit is returned unchanged (the factor is exactly 1, and a zero
    gradient gives no 0/0). ``torch.nn.utils.clip_grad_norm_`` computes
    ``max_norm / (||g|| + 1e-6)`` instead, so its clipped norm is a hair below
    ``max_norm``.

    Args:
      grads: a pytree of arrays.
      max_norm: the largest global norm allowed, ``> 0``.

    Returns:
      A pytree like ``grads`` (same structure, shapes and dtypes).

    Example:
      >>> [round(v, 6) for v in clip_by_global_norm(jnp.array([3.0, 4.0]), 1.0).tolist()]
      [0.6, 0.8]

    References:
      Pascanu, Mikolov & Bengio (2013), "On the difficulty of training
      recurrent neural networks", ICML, Algorithm 1.
    """
    _check_limit("max_norm", max_norm)
    norm = global_norm(grads)
    scale = max_norm / jnp.maximum(norm, max_norm)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
