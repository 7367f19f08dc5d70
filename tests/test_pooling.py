"""purenet.layers.pooling: max, average and global average pooling.

Backward passes against ``jax.vjp`` and central differences (float64), ties
of max pooling against ``jax.grad`` exactly, known answers by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purenet import layers as L
from purenet.gradcheck import check_layer
from tests.test_conv import jitted


@st.composite
def pool_configs(draw):
    n = draw(st.sampled_from([1, 2]))
    kind = draw(st.sampled_from(["max", "avg", "avg_exclude_pad"]))
    window = tuple(draw(st.integers(1, 3)) for _ in range(n))
    stride = draw(st.sampled_from([None, tuple(draw(st.integers(1, 3)) for _ in range(n))]))
    padding_kind = draw(st.sampled_from(["VALID", "SAME", "pairs"]))
    if padding_kind == "pairs":
        # A window must hold at least one real input: padding < window.
        pads = tuple((draw(st.integers(0, w - 1)), draw(st.integers(0, w - 1))) for w in window)
        padding = pads
    else:
        padding, pads = padding_kind, ((0, 0),) * n
    spatial = tuple(
        draw(st.integers(max(1, w - lo - hi), 6))
        if padding_kind != "SAME"
        else draw(st.integers(1, 6))
        for w, (lo, hi) in zip(window, pads, strict=True)
    )
    factory = {
        ("max", 1): L.max_pool1d,
        ("max", 2): L.max_pool2d,
        ("avg", 1): L.avg_pool1d,
        ("avg", 2): L.avg_pool2d,
    }[(kind[:3], n)]
    extra = {"count_include_pad": False} if kind == "avg_exclude_pad" else {}
    return factory(window, stride, padding, **extra), (*spatial, draw(st.integers(1, 2)))


@settings(max_examples=15, deadline=None)
@given(pool_configs(), st.integers(0, 2**16))
def test_pooling_backward_matches_vjp_and_finite_differences(config, seed):
    layer, in_shape = config
    out_shape = layer.init(jax.random.key(0), in_shape)[0]
    # Distinct random inputs: no ties, so max pooling is differentiable here.
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, *in_shape)))
    # The forward's shape by tracing alone (eagerly it compiles per drawn shape).
    y, _ = jax.eval_shape(layer.forward, (), x)
    assert y.shape == (2, *out_shape)
    report = check_layer(jitted(layer), (), x, dy_key=jax.random.key(seed))
    assert report.passed, report


def _max_pool_grad_by_jax(layer, x, dy):
    _, vjp = jax.vjp(lambda x: layer.forward((), x)[0], x)
    return vjp(dy)[0]


@pytest.mark.parametrize(
    "layer, shape",
    [
        (L.max_pool2d(2), (2, 4, 4, 3)),
        (L.max_pool2d(3, 1, "SAME"), (1, 5, 5, 2)),
        (L.max_pool2d((2, 3), (1, 2), ((1, 0), (0, 2))), (2, 5, 6, 1)),
        (L.max_pool1d(3, 2, "SAME"), (2, 9, 2)),
    ],
    ids=["2x2", "3x3-overlap-same", "asymmetric", "1d"],
)
def test_ties_go_where_jax_grad_sends_them(layer, shape):
    rng = np.random.default_rng(0)
    for x in (np.ones(shape), rng.integers(0, 2, size=shape), rng.integers(-2, 3, size=shape)):
        x = jnp.asarray(x, jnp.float64)
        y, cache = jax.jit(layer.forward)((), x)
        dy = jnp.asarray(rng.normal(size=y.shape))
        _, dx = jax.jit(layer.backward)((), cache, dy)
        # Overlapping windows add their shares in another order than XLA: equal
        # to rounding; a gradient sent to the wrong tie would be off by O(1).
        np.testing.assert_allclose(dx, _max_pool_grad_by_jax(layer, x, dy), rtol=0, atol=1e-14)


def test_max_pool_tie_goes_to_the_first_maximum_in_row_major_order():
    x = jnp.array([[0.0, 1.0], [1.0, 1.0]])[None, :, :, None]
    y, cache = L.max_pool2d(2).forward((), x)
    _, dx = L.max_pool2d(2).backward((), cache, jnp.full_like(y, 5.0))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0.0, 5.0], [0.0, 0.0]])


def test_max_pool_known_answer():
    # Saito, Deep Learning from Scratch, fig. 7-14: 2x2 max pooling, stride 2.
    x = jnp.array([[1, 2, 1, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 4, 0, 1]], jnp.float64)[
        None, :, :, None
    ]
    y, cache = L.max_pool2d(2).forward((), x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[2, 3], [4, 2]])
    dy = jnp.array([[1.0, 2.0], [3.0, 4.0]])[None, ..., None]
    _, dx = L.max_pool2d(2).backward((), cache, dy)
    np.testing.assert_array_equal(
        dx[0, :, :, 0], [[0, 1, 0, 0], [0, 0, 0, 2], [0, 0, 0, 4], [0, 3, 0, 0]]
    )


@pytest.mark.parametrize(
    "count_include_pad, expected",
    [
        (True, [2 / 4, 4 / 4, 2 / 4]),  # borders divided by the full window of 4
        (False, [2 / 2, 4 / 4, 2 / 2]),  # borders divided by their 2 real inputs
    ],
)
def test_average_pooling_padding_convention(count_include_pad, expected):
    # Ones of length 4, window 4, stride 2, padding 2: windows hold 2, 4, 2 real inputs.
    layer = L.avg_pool1d(4, 2, 2, count_include_pad=count_include_pad)
    x = jnp.ones((1, 4, 1))
    y, cache = layer.forward((), x)
    np.testing.assert_allclose(y[0, :, 0], expected)
    _, dx = layer.backward((), cache, jnp.ones_like(y))
    shares = [1 / 4, 1 / 4, 1 / 4] if count_include_pad else [1 / 2, 1 / 4, 1 / 2]
    # Inputs 0, 1 are in windows 0 and 1; inputs 2, 3 in windows 1 and 2.
    first, last = shares[0] + shares[1], shares[1] + shares[2]
    np.testing.assert_allclose(dx[0, :, 0], [first, first, last, last])


def test_average_pooling_spreads_the_gradient_evenly():
    layer = L.avg_pool2d((2, 3))
    x = jnp.arange(24.0).reshape(1, 4, 6, 1)
    y, cache = layer.forward((), x)
    np.testing.assert_allclose(y[0, :, :, 0], [[4.0, 7.0], [16.0, 19.0]])
    _, dx = layer.backward((), cache, jnp.full_like(y, 6.0))
    np.testing.assert_array_equal(dx, 1.0)


def test_global_avg_pool():
    layer = L.global_avg_pool()
    assert layer.init(jax.random.key(0), (5, 6, 3))[0] == (3,)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 6, 3)))
    y, cache = layer.forward((), x)
    np.testing.assert_allclose(y, x.mean(axis=(1, 2)))
    report = check_layer(layer, (), x, dy_key=jax.random.key(1))
    assert report.passed, report
    x1 = x[:, :, 0, :]  # signals (m, L, C) too
    assert check_layer(layer, (), x1, dy_key=jax.random.key(1)).passed


def test_pooling_under_vmap_and_float32():
    layer = L.max_pool2d(2, padding="SAME")
    xs = jax.random.normal(jax.random.key(0), (3, 2, 5, 5, 2), jnp.float32)

    def step(x):
        y, cache = layer.forward((), x)
        return layer.backward((), cache, y)[1]

    batched = jax.jit(jax.vmap(step))(xs)
    assert batched.dtype == jnp.float32
    for i in range(3):
        np.testing.assert_array_equal(batched[i], jax.jit(step)(xs[i]))


def test_bad_pooling_arguments_are_named():
    with pytest.raises(ValueError, match=r"window: expected a positive integer, got 0"):
        L.max_pool2d(0)
    with pytest.raises(ValueError, match=r"stride: expected a positive integer, got 0"):
        L.avg_pool1d(2, 0)
    with pytest.raises(ValueError, match=r"padding: expected a non-negative integer, got -1"):
        L.max_pool1d(2, padding=-1)
    with pytest.raises(ValueError, match=r"padding: expected less than the window \(2\)"):
        L.avg_pool2d(2, padding=((0, 0), (2, 0)))
    with pytest.raises(ValueError, match=r"window: expected a window no larger than the padded"):
        L.max_pool2d(5).init(jax.random.key(0), (4, 4, 1))
    with pytest.raises(ValueError, match=r"x: expected a batch of shape \(m, H, W, C\)"):
        L.max_pool2d(2).forward((), jnp.ones((4, 4)))
    with pytest.raises(ValueError, match=r"x: expected a batch \(m, \*spatial, C\)"):
        L.global_avg_pool().forward((), jnp.ones((4, 4)))
