"""Learning-rate schedules, as pure functions of the step count.

A schedule is a pure function of the step count, `schedule(count) -> learning
rate`. `count` is the number of steps already taken (an int32 array, or a
Python int when called by hand), so the first step of an optimizer uses
`schedule(0)`, the second `schedule(1)`, and so on. Schedules are written
with `jax.numpy` only, so they work under `jit`, `vmap` and `scan`; they
return a scalar of the default float type, which the optimizer casts to each
parameter's dtype. Any callable with that signature is a schedule: these are
only the common ones.

    >>> from purenet import optim, schedules
    >>> lr = schedules.linear_warmup(100, schedules.cosine_decay(1e-3, 10_000))
    >>> opt = optim.adam(lr)

Gradient clipping lives in [`purenet.clipping`][purenet.clipping].

Hyperparameters are checked when a schedule is built, so a nonsense value
fails at once with a `ValueError` (a `TypeError` for a non-number) that
names the argument. Real-valued ones (`init_value`, `factor`,
`decay_rate`, `final_value`, ...) may also be traced scalars, say under a
`jax.vmap` over peak learning rates: those are not checked, since their
values are not known yet. Step counts (`every`, `decay_steps`,
`boundaries`, `warmup_steps`) fix the shape of the schedule and must be
Python integers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp

from purenet._checks import fail, nonnegative, number_in, positive_int

Array = Any
Schedule = Callable[[Array], Array]
"""The type of a schedule: `schedule(count) -> value`, `count` the number of steps already
taken (module docstring), as optax's `Schedule`."""

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "piecewise_constant",
    "exponential_decay",
    "inverse_time_decay",
    "cosine_decay",
    "linear_warmup",
]


def _float_count(count) -> Array:
    # The default float type (float64 under x64): the schedule's arithmetic is
    # then as precise as the run allows, and the optimizer casts it per leaf.
    return jnp.asarray(count).astype(jnp.result_type(float))


def constant(value: float) -> Schedule:
    """The same learning rate at every step: `lr(t) = value`.

    Args:
      value: the learning rate, `>= 0`.

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
    """Multiply the learning rate by `factor` every `every` steps.

    `lr(t) = init_value * factor ** floor(t / every)`; the defaults follow
    `torch.optim.lr_scheduler.StepLR` (`gamma=0.1`), counted in steps
    rather than epochs. For boundaries that are not evenly spaced, use
    [`piecewise_constant`][purenet.schedules.piecewise_constant].

    Args:
      init_value: the learning rate for steps `0 .. every - 1`, `>= 0`.
      every: the number of steps between two decays, a positive integer.
      factor: the multiplier applied at each decay, in `(0, 1]`.

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

    `lr(t) = values[i]` where `i` is the number of boundaries `<= t`; so
    `values[0]` is used before `boundaries[0]` and `values[-1]` from
    `boundaries[-1]` on. `torch.optim.lr_scheduler.MultiStepLR` is the case
    `values[i] = lr * gamma ** i`.

    Args:
      boundaries: strictly increasing positive step counts.
      values: `len(boundaries) + 1` learning rates, each `>= 0`.

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
    """Decay the learning rate by `decay_rate` every `decay_steps` steps, smoothly.

    `lr(t) = init_value * decay_rate ** (t / decay_steps)`. With
    `decay_steps=1` this is `torch.optim.lr_scheduler.ExponentialLR`
    (`gamma = decay_rate`) counted in steps; it is TensorFlow's
    `ExponentialDecay` with `staircase=False` (for the staircase, use
    [`step_decay`][purenet.schedules.step_decay]).

    Args:
      init_value: the learning rate at step 0, `>= 0`.
      decay_rate: the factor per `decay_steps` steps, in `(0, 1]`.
      decay_steps: the period of one factor of `decay_rate`, a positive integer.

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
    """Decay the learning rate as `1 / t`.

    `lr(t) = init_value / (1 + decay_rate * t / decay_steps)`, TensorFlow's
    `InverseTimeDecay` (`staircase=False`). A `1/t` step size satisfies
    the Robbins-Monro conditions (`sum lr = inf`, `sum lr^2 < inf`) under
    which stochastic gradient descent converges.

    Args:
      init_value: the learning rate at step 0, `>= 0`.
      decay_rate: how fast it decays, `>= 0`.
      decay_steps: the step count over which `decay_rate` applies once, a
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
    """Half a cosine from `init_value` down to `final_value`, then flat.

    `lr(t) = final + (init - final) * (1 + cos(pi * min(t, T) / T)) / 2` with
    `T = decay_steps`: the annealing of SGDR without the restarts, as in
    `torch.optim.lr_scheduler.CosineAnnealingLR` (`T_max = T`,
    `eta_min = final_value`), except that it stays at `final_value` after
    `T` where torch's closed form would rise again.

    Args:
      init_value: the learning rate at step 0, `>= 0`.
      decay_steps: the step count `T` at which `final_value` is reached, a
        positive integer.
      final_value: the learning rate from step `T` on, `>= 0`.

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
    """Ramp linearly from `init_value` for `warmup_steps` steps, then hand over.

    With `W = warmup_steps` and `peak = then(0)` (or `then` itself when it
    is a number):

    ```text
    lr(t) = init_value + (peak - init_value) * t / W    for t < W
    lr(t) = then(t - W)                                 for t >= W
    ```

    so the hand-over is continuous and `then` starts from its own step 0.
    With the default `init_value=0` the very first step has learning rate 0
    (it only fills the optimizer's moment estimates); pass a small
    `init_value` to avoid it.

    Args:
      warmup_steps: the length `W` of the ramp, a positive integer.
      then: the learning rate after the warm-up: a number (`>= 0`) or a
        schedule, which is called with the count since the end of the warm-up.
      init_value: the learning rate at step 0, `>= 0`.

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
