"""purenet.params: ravel/unravel and the initialisers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import purenet
from purenet import params as P


def assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_ravel_concatenates_leaves_in_tree_order_row_major():
    tree = {"b": jnp.array([5.0, 6.0]), "W": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
    theta, unravel = purenet.ravel(tree)
    # jax.tree.leaves sorts dict keys: "W" before "b".
    np.testing.assert_array_equal(theta, [1, 2, 3, 4, 5, 6])
    assert_same_tree(unravel(theta), tree)


def test_ravel_round_trip_nested_mixed_dtypes():
    tree = {
        "layers": [
            {"W": jnp.ones((3, 2), jnp.float32), "b": jnp.zeros(2, jnp.float32)},
            ({"W": jnp.full((2, 1), 0.1, jnp.float64)}, ()),
        ],
        "step": jnp.array(7, jnp.int32),
        "scalar": jnp.array(2.5, jnp.float32),
    }
    theta, unravel = purenet.ravel(tree)
    assert theta.ndim == 1 and theta.size == 6 + 2 + 2 + 1 + 1
    assert theta.dtype == jnp.float64  # promoted
    assert_same_tree(unravel(theta), tree)


def test_ravel_float32_tree_stays_float32():
    theta, unravel = purenet.ravel((jnp.ones(3, jnp.float32), jnp.ones((1, 2), jnp.float32)))
    assert theta.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(unravel(theta)))


def test_ravel_empty_tree():
    theta, unravel = purenet.ravel(((), {}))
    assert theta.shape == (0,)
    assert unravel(theta) == ((), {})


def test_unravel_under_jit_and_vmap():
    tree = {"W": jnp.arange(6.0).reshape(2, 3), "b": jnp.arange(3.0)}
    theta, unravel = purenet.ravel(tree)
    assert_same_tree(jax.jit(unravel)(theta), tree)
    stacked = jnp.stack([theta, 2 * theta])
    out = jax.vmap(unravel)(stacked)
    np.testing.assert_array_equal(out["W"][1], 2 * tree["W"])


def test_ravel_under_jit():
    tree = {"W": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    theta = jax.jit(lambda t: purenet.ravel(t)[0])(tree)
    np.testing.assert_array_equal(theta, purenet.ravel(tree)[0])


def test_unravel_rejects_wrong_length():
    _, unravel = purenet.ravel({"W": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match="theta: expected a 1-D array of length 4"):
        unravel(jnp.ones(5))


shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([jnp.float32, jnp.float64, jnp.int32])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(shapes, dtypes), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_round_trip_property(specs, seed):
    rng = np.random.default_rng(seed)
    leaves = [jnp.asarray(rng.integers(-1000, 1000, size=s), dtype=d) for s, d in specs]
    tree = {"a": leaves[0], "rest": [tuple(leaves[1:])]}
    theta, unravel = purenet.ravel(tree)
    assert theta.ndim == 1
    assert_same_tree(unravel(theta), tree)


# ------------------------------------------------------------------- initialisers


def test_course_epsilon_init_default_is_sqrt6_over_sqrt_fans(key):
    W = P.uniform()(key, (400, 25))
    eps = math.sqrt(6) / math.sqrt(400 + 25)  # ex4: epsilon_init = 0.12 for 400-25
    assert abs(eps - 0.1188) < 1e-3
    assert float(jnp.max(jnp.abs(W))) <= eps
    assert float(jnp.max(jnp.abs(W))) > 0.95 * eps


@pytest.mark.parametrize(
    "name, expected_std",
    [
        ("xavier_normal", math.sqrt(2 / (300 + 200))),
        ("he_normal", math.sqrt(2 / 300)),
        ("lecun_normal", math.sqrt(1 / 300)),
        ("xavier_uniform", math.sqrt(6 / 500) / math.sqrt(3)),
        ("he_uniform", math.sqrt(6 / 300) / math.sqrt(3)),
    ],
)
def test_initialiser_standard_deviations(key, name, expected_std):
    W = P.get_initializer(name)(key, (300, 200), jnp.float64)
    assert abs(float(jnp.std(W)) / expected_std - 1) < 0.02
    assert abs(float(jnp.mean(W))) < 0.05 * expected_std + 1e-3


@pytest.mark.parametrize(
    "name, expected_std",
    [
        # a (5, 5, 6, 16) kernel: fan_in = 25 * 6 = 150, fan_out = 25 * 16 = 400
        # (Glorot's fans with the receptive field, as Keras and PyTorch count them)
        ("xavier_normal", math.sqrt(2 / (150 + 400))),
        ("xavier_uniform", math.sqrt(6 / (150 + 400)) / math.sqrt(3)),
        ("he_normal", math.sqrt(2 / 150)),
        ("lecun_normal", math.sqrt(1 / 150)),
    ],
)
def test_convolution_kernels_count_the_receptive_field_in_both_fans(key, name, expected_std):
    W = P.get_initializer(name)(key, (5, 5, 6, 16), jnp.float64)
    assert abs(float(jnp.std(W)) / expected_std - 1) < 0.03


def test_zeros_and_constant(key):
    assert not jnp.any(P.zeros()(key, (3, 2)))
    np.testing.assert_array_equal(P.constant(0.5)(key, (2,)), [0.5, 0.5])


def test_initialisers_keep_dtype_and_are_deterministic(key):
    for name in P.INITIALIZERS:
        init = P.get_initializer(name)
        a, b = init(key, (5, 4), jnp.float32), init(key, (5, 4), jnp.float32)
        assert a.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)


def test_bad_initialiser_arguments():
    with pytest.raises(ValueError, match="init: expected a callable or one of"):
        P.get_initializer("glorot")
    with pytest.raises(ValueError, match="std: expected a number in"):
        P.normal(-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        P.uniform(0.0)
