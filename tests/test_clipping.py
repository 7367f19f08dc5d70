"""Specification of purenet.clipping: gradient clipping by value and by global norm.

Known values are worked out by hand; thresholds may be traced, so one
``jax.vmap`` sweeps them and each row equals the run with that threshold.
"""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from purenet import clipping

GRADS = {"W": jnp.array([[3.0, 0.0]]), "b": jnp.array([0.0, 4.0])}  # global norm 5


def test_global_norm_is_the_norm_of_all_entries_together():
    tree = {"W": jnp.array([[3.0, 0.0]]), "b": (jnp.array([0.0, 4.0]), [jnp.array(12.0)])}
    assert float(clipping.global_norm(tree)) == pytest.approx(13.0)
    assert float(clipping.global_norm({})) == 0.0


def test_clip_grads_by_value_known_values():
    grads = {"a": jnp.array([-3.0, -0.5, 0.0, 0.5, 3.0], jnp.float32)}
    clipped = clipping.clip_grads_by_value(grads, 1.0)
    np.testing.assert_array_equal(clipped["a"], [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert clipped["a"].dtype == jnp.float32


def test_clip_grads_by_global_norm_known_values():
    grads = {"W": jnp.array([3.0, 0.0], jnp.float32), "b": jnp.array([4.0], jnp.float32)}
    clipped = clipping.clip_grads_by_global_norm(grads, 1.0)
    np.testing.assert_allclose(clipped["W"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [0.8], rtol=1e-6)
    assert clipped["W"].dtype == jnp.float32
    # within the limit: returned unchanged, bit for bit
    same = clipping.clip_grads_by_global_norm(grads, 5.0)
    np.testing.assert_array_equal(same["W"], grads["W"])
    np.testing.assert_array_equal(same["b"], grads["b"])


def test_clipping_zero_gradients_gives_zeros_not_nan():
    zeros = {"W": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    for leaf in jax.tree.leaves(clipping.clip_grads_by_global_norm(zeros, 1.0)):
        np.testing.assert_array_equal(leaf, 0.0)


def test_clipping_preserves_float64():
    with jax.enable_x64(True):
        grads = jnp.array([30.0, 40.0], jnp.float64)
        clipped = clipping.clip_grads_by_global_norm(grads, 5.0)
        assert clipped.dtype == jnp.float64
        np.testing.assert_allclose(clipped, [3.0, 4.0], rtol=1e-15)
        assert clipping.clip_grads_by_value(grads, 1.0).dtype == jnp.float64


def test_a_float64_threshold_does_not_promote_float32_gradients():
    with jax.enable_x64(True):
        grads = jnp.array([3.0, 4.0], jnp.float32)
        for clip in (clipping.clip_grads_by_global_norm, clipping.clip_grads_by_value):
            out = jax.vmap(lambda c, clip=clip: clip(grads, c))(jnp.array([1.0, 2.0]))
            assert out.dtype == jnp.float32


def test_clipping_works_under_jit_and_vmap_over_gradients():
    stack = jnp.array([[3.0, 4.0], [0.3, 0.4]], jnp.float32)
    clipped = jax.jit(jax.vmap(lambda g: clipping.clip_grads_by_global_norm(g, 1.0)))(stack)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)


@pytest.mark.parametrize("clip", [clipping.clip_grads_by_global_norm, clipping.clip_grads_by_value])
def test_vmap_over_the_threshold_equals_one_call_per_threshold(clip):
    thresholds = jnp.array([0.5, 2.0, 4.5, 10.0])
    swept = jax.jit(jax.vmap(lambda c: clip(GRADS, c)))(thresholds)
    for i, c in enumerate(thresholds.tolist()):
        one = clip(GRADS, c)
        for name in GRADS:
            np.testing.assert_allclose(swept[name][i], one[name], rtol=1e-6)


@pytest.mark.parametrize("clip", [clipping.clip_grads_by_global_norm, clipping.clip_grads_by_value])
def test_a_traced_threshold_under_jit_is_taken_as_given(clip):
    # Traced values cannot be checked; the same value given concretely can.
    once = jax.jit(clip)(GRADS, jnp.asarray(2.0))
    for name in GRADS:
        np.testing.assert_allclose(once[name], clip(GRADS, 2.0)[name], rtol=1e-6)


def test_the_global_norm_threshold_can_be_differentiated():
    # d/dc of the clipped gradient's norm is 1 while clipping is active.
    clip = clipping.clip_grads_by_global_norm
    norm_after = jax.grad(lambda c: clipping.global_norm(clip(GRADS, c)))
    assert float(norm_after(2.0)) == pytest.approx(1.0, rel=1e-6)
    assert float(norm_after(10.0)) == 0.0


@pytest.mark.parametrize(
    "make, exception, argument",
    [
        (lambda: clipping.clip_grads_by_value(jnp.ones(2), 0.0), ValueError, "limit"),
        (lambda: clipping.clip_grads_by_value(jnp.ones(2), jnp.array(-1.0)), ValueError, "limit"),
        (lambda: clipping.clip_grads_by_value(jnp.ones(2), float("nan")), ValueError, "limit"),
        (lambda: clipping.clip_grads_by_global_norm(jnp.ones(2), -1.0), ValueError, "max_norm"),
        (
            lambda: clipping.clip_grads_by_global_norm(jnp.ones(2), jnp.ones(2)),
            ValueError,
            "max_norm",
        ),
        (lambda: clipping.clip_grads_by_global_norm(jnp.ones(2), "big"), TypeError, "max_norm"),
        (lambda: clipping.clip_grads_by_global_norm(jnp.ones(2), None), TypeError, "max_norm"),
    ],
)
def test_nonsense_thresholds_raise(make, exception, argument):
    with pytest.raises(exception, match=f"^{argument}: expected"):
        make()


@settings(max_examples=25, deadline=None)
@given(
    grads=hnp.arrays(
        np.float64, st.integers(1, 6), elements=st.floats(-1e3, 1e3, allow_subnormal=False)
    ),
    max_norm=st.floats(1e-3, 1e3),
)
def test_clip_grads_by_global_norm_caps_the_norm_and_keeps_the_direction(grads, max_norm):
    norm = np.linalg.norm(grads)
    g32 = jnp.asarray(grads, jnp.float32)
    clipped = np.asarray(clipping.clip_grads_by_global_norm(g32, max_norm))
    assert np.linalg.norm(clipped) <= max_norm * (1 + 1e-5)
    expected = grads * min(1.0, max_norm / norm) if norm > 0 else grads
    np.testing.assert_allclose(clipped, expected, rtol=1e-5, atol=1e-6 * max_norm)


def test_docstring_examples_run():
    failures, _ = doctest.testmod(clipping, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_the_transforms_of_optim_are_these_functions_in_a_chain():
    # One name, one meaning: the function of a gradient tree lives here under a
    # `grads` name; optim's transformation of the same operation takes only the threshold.
    from purenet import optim

    assert not hasattr(clipping, "clip_by_global_norm") and not hasattr(clipping, "clip_by_value")
    for transform, function, threshold in (
        (optim.clip_by_global_norm, clipping.clip_grads_by_global_norm, 1.0),
        (optim.clip, clipping.clip_grads_by_value, 2.5),
    ):
        tx = transform(threshold)
        updates, _ = tx.update(GRADS, tx.init(GRADS))
        for a, b in zip(
            jax.tree.leaves(updates), jax.tree.leaves(function(GRADS, threshold)), strict=True
        ):
            np.testing.assert_array_equal(a, b)
