"""Specification of purenet.schedules: learning-rate schedules.

Schedules are pure functions of the step count; known values are worked out
by hand from each closed form.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import optim, schedules

# schedule, {count: value}
KNOWN_VALUES = {
    "constant": (lambda: schedules.constant(0.1), {0: 0.1, 1: 0.1, 10**6: 0.1}),
    "step_decay": (
        lambda: schedules.step_decay(1.0, every=10, factor=0.5),
        {0: 1.0, 9: 1.0, 10: 0.5, 19: 0.5, 20: 0.25, 35: 0.125},
    ),
    "step_decay default factor (torch StepLR gamma=0.1)": (
        lambda: schedules.step_decay(2.0, 5),
        {4: 2.0, 5: 0.2, 10: 0.02},
    ),
    "piecewise_constant": (
        lambda: schedules.piecewise_constant([100, 150], [0.1, 0.01, 0.001]),
        {0: 0.1, 99: 0.1, 100: 0.01, 149: 0.01, 150: 0.001, 10**6: 0.001},
    ),
    "exponential_decay": (
        lambda: schedules.exponential_decay(1.0, 0.5, decay_steps=10),
        {0: 1.0, 5: 2**-0.5, 10: 0.5, 30: 0.125},
    ),
    "exponential_decay per step (torch ExponentialLR)": (
        lambda: schedules.exponential_decay(0.1, 0.9),
        {0: 0.1, 1: 0.09, 2: 0.081},
    ),
    "inverse_time_decay": (
        lambda: schedules.inverse_time_decay(1.0, 1.0, decay_steps=10),
        {0: 1.0, 10: 0.5, 30: 0.25, 90: 0.1},
    ),
    "cosine_decay": (
        lambda: schedules.cosine_decay(1.0, 100),
        {0: 1.0, 25: (1 + math.cos(math.pi / 4)) / 2, 50: 0.5, 100: 0.0, 500: 0.0},
    ),
    "cosine_decay with final value": (
        lambda: schedules.cosine_decay(1.0, 100, final_value=0.1),
        {0: 1.0, 50: 0.55, 100: 0.1, 101: 0.1},
    ),
    "linear_warmup to a constant": (
        lambda: schedules.linear_warmup(4, 0.2),
        {0: 0.0, 1: 0.05, 2: 0.1, 3: 0.15, 4: 0.2, 1000: 0.2},
    ),
    "linear_warmup from init_value to a schedule": (
        lambda: schedules.linear_warmup(10, schedules.step_decay(1.0, 5), init_value=0.5),
        {0: 0.5, 5: 0.75, 10: 1.0, 14: 1.0, 15: 0.1},
    ),
}


@pytest.mark.parametrize("name", list(KNOWN_VALUES))
def test_known_values(name):
    make, expected = KNOWN_VALUES[name]
    schedule = make()
    for count, value in expected.items():
        assert float(schedule(count)) == pytest.approx(value, rel=1e-6, abs=1e-12), count


@pytest.mark.parametrize("name", list(KNOWN_VALUES))
def test_schedules_are_jittable_and_batch_under_vmap(name):
    make, expected = KNOWN_VALUES[name]
    schedule = make()
    counts = jnp.asarray(list(expected), jnp.int32)
    eager = np.array([float(schedule(int(c))) for c in counts])
    np.testing.assert_allclose(jax.jit(schedule)(counts[0]), eager[0], rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.jit(schedule))(counts), eager, rtol=1e-6)


def test_cosine_decay_decreases_monotonically_to_its_final_value():
    values = np.asarray(jax.vmap(schedules.cosine_decay(0.3, 50, 0.01))(jnp.arange(60)))
    assert np.all(np.diff(values[:51]) < 0)
    np.testing.assert_allclose(values[50:], 0.01, rtol=1e-6)


def test_linear_warmup_hands_over_continuously():
    after = schedules.cosine_decay(1.0, 100)
    warm = schedules.linear_warmup(20, after)
    values = np.asarray(jax.vmap(warm)(jnp.arange(40)))
    np.testing.assert_allclose(values[:21], np.linspace(0.0, 1.0, 21), atol=1e-6)
    np.testing.assert_allclose(values[20:], jax.vmap(after)(jnp.arange(20)), rtol=1e-6)


def test_schedules_have_one_home():
    # purenet.optim imports what it needs; it does not re-export this module.
    for name in schedules.__all__:
        assert name not in optim.__all__
    assert not hasattr(schedules, "clip_by_global_norm")


def test_real_valued_arguments_may_be_traced():
    # One vmap over the peak learning rate; concrete values would be checked.
    def values(peak):
        lr = schedules.linear_warmup(2, schedules.cosine_decay(peak, 4, final_value=peak / 10))
        return jax.vmap(lr)(jnp.arange(8))

    swept = jax.jit(jax.vmap(values))(jnp.array([0.1, 1.0]))
    for row, peak in zip(swept, (0.1, 1.0), strict=True):
        np.testing.assert_allclose(row, values(peak), rtol=1e-6)


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: schedules.constant(-1.0), "value"),
        (lambda: schedules.step_decay(1.0, 0), "every"),
        (lambda: schedules.step_decay(1.0, 2.5), "every"),
        (lambda: schedules.step_decay(1.0, 10, 0.0), "factor"),
        (lambda: schedules.step_decay(1.0, 10, 1.5), "factor"),
        (lambda: schedules.step_decay(-1.0, 10), "init_value"),
        (lambda: schedules.piecewise_constant([0, 10], [1.0, 0.1, 0.01]), "boundaries"),
        (lambda: schedules.piecewise_constant([10, 10], [1.0, 0.1, 0.01]), "boundaries"),
        (lambda: schedules.piecewise_constant([10], [1.0]), "values"),
        (lambda: schedules.piecewise_constant([10], [1.0, -0.1]), "values"),
        (lambda: schedules.exponential_decay(1.0, 0.0), "decay_rate"),
        (lambda: schedules.exponential_decay(1.0, 0.5, decay_steps=0), "decay_steps"),
        (lambda: schedules.inverse_time_decay(1.0, -1.0), "decay_rate"),
        (lambda: schedules.inverse_time_decay(1.0, 1.0, decay_steps=-5), "decay_steps"),
        (lambda: schedules.cosine_decay(1.0, 0), "decay_steps"),
        (lambda: schedules.cosine_decay(1.0, 10, final_value=-0.1), "final_value"),
        (lambda: schedules.linear_warmup(0, 1.0), "warmup_steps"),
        (lambda: schedules.linear_warmup(10, -1.0), "then"),
        (lambda: schedules.linear_warmup(10, 1.0, init_value=-1.0), "init_value"),
    ],
)
def test_nonsense_arguments_raise(make, argument):
    with pytest.raises(ValueError, match=f"^{argument}: expected"):
        make()
