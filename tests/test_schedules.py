"""Specification of purenet.schedules: learning-rate schedules and gradient clipping.

Schedules are pure functions of the step count; known values are worked out
by hand from each closed form. They are also re-exported by purenet.optim.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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


def test_schedules_are_re_exported_by_optim():
    for name in schedules.__all__:
        assert getattr(optim, name) is getattr(schedules, name)


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
        (lambda: schedules.clip_by_value(jnp.ones(2), 0.0), "limit"),
        (lambda: schedules.clip_by_global_norm(jnp.ones(2), -1.0), "max_norm"),
        (lambda: schedules.clip_by_global_norm(jnp.ones(2), "big"), "max_norm"),
    ],
)
def test_nonsense_arguments_raise(make, argument):
    with pytest.raises(ValueError, match=f"^{argument}: expected"):
        make()


# --- gradient clipping -----------------------------------------------------------------


def test_global_norm_is_the_norm_of_all_entries_together():
    tree = {"W": jnp.array([[3.0, 0.0]]), "b": (jnp.array([0.0, 4.0]), [jnp.array(12.0)])}
    assert float(schedules.global_norm(tree)) == pytest.approx(13.0)
    assert float(schedules.global_norm({})) == 0.0


def test_clip_by_value_known_values():
    grads = {"a": jnp.array([-3.0, -0.5, 0.0, 0.5, 3.0], jnp.float32)}
    clipped = schedules.clip_by_value(grads, 1.0)
    np.testing.assert_array_equal(clipped["a"], [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert clipped["a"].dtype == jnp.float32


def test_clip_by_global_norm_known_values():
    grads = {"W": jnp.array([3.0, 0.0], jnp.float32), "b": jnp.array([4.0], jnp.float32)}
    clipped = schedules.clip_by_global_norm(grads, 1.0)
    np.testing.assert_allclose(clipped["W"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [0.8], rtol=1e-6)
    assert clipped["W"].dtype == jnp.float32
    # within the limit: returned unchanged, bit for bit
    same = schedules.clip_by_global_norm(grads, 5.0)
    np.testing.assert_array_equal(same["W"], grads["W"])
    np.testing.assert_array_equal(same["b"], grads["b"])


def test_clipping_zero_gradients_gives_zeros_not_nan():
    zeros = {"W": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    for leaf in jax.tree.leaves(schedules.clip_by_global_norm(zeros, 1.0)):
        np.testing.assert_array_equal(leaf, 0.0)


def test_clipping_preserves_float64():
    with jax.enable_x64(True):
        grads = jnp.array([30.0, 40.0], jnp.float64)
        clipped = schedules.clip_by_global_norm(grads, 5.0)
        assert clipped.dtype == jnp.float64
        np.testing.assert_allclose(clipped, [3.0, 4.0], rtol=1e-15)
        assert schedules.clip_by_value(grads, 1.0).dtype == jnp.float64


def test_clipping_works_under_jit_and_vmap():
    stack = jnp.array([[3.0, 4.0], [0.3, 0.4]], jnp.float32)
    clipped = jax.jit(jax.vmap(lambda g: schedules.clip_by_global_norm(g, 1.0)))(stack)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    grads=hnp.arrays(
        np.float64, st.integers(1, 6), elements=st.floats(-1e3, 1e3, allow_subnormal=False)
    ),
    max_norm=st.floats(1e-3, 1e3),
)
def test_clip_by_global_norm_caps_the_norm_and_keeps_the_direction(grads, max_norm):
    norm = np.linalg.norm(grads)
    clipped = np.asarray(schedules.clip_by_global_norm(jnp.asarray(grads, jnp.float32), max_norm))
    assert np.linalg.norm(clipped) <= max_norm * (1 + 1e-5)
    expected = grads * min(1.0, max_norm / norm) if norm > 0 else grads
    np.testing.assert_allclose(clipped, expected, rtol=1e-5, atol=1e-6 * max_norm)
