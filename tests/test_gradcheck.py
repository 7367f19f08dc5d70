"""purenet.gradcheck: the referee itself must catch wrong gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import gradcheck as G
from purenet import layers as L
from purenet import losses
from purenet.layers import Layer


def test_rel_error_and_norm_ratio_known_values():
    assert G.rel_error(jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0])) == 0.0
    assert G.rel_error(jnp.array([1.0]), jnp.array([3.0])) == pytest.approx(0.5)
    assert G.rel_error(jnp.zeros(3), jnp.zeros(3)) == 0.0
    assert G.norm_ratio(jnp.array([3.0, 0.0]), jnp.array([1.0, 0.0])) == pytest.approx(0.5)
    assert G.norm_ratio({"a": jnp.zeros(2)}, {"a": jnp.zeros(2)}) == 0.0


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf], ids=["nan", "inf"])
def test_a_non_finite_entry_is_never_compared_away(bad):
    """Python's max drops a NaN (max(0.0, nan) is 0.0) and a NaN norm is not
    > 0: every measure must say nan instead of 0 or inf."""
    a, b = jnp.array([1.0, bad]), jnp.array([1.0, 2.0])
    assert np.isnan(G.rel_error(a, b)) and np.isnan(G.rel_error(b, a))
    assert np.isnan(G.norm_ratio(a, b))
    errors = G.leaf_errors((a, b), (b, b))
    assert np.isnan(errors[0]) and errors[1] == 0.0


def test_leaf_errors_are_relative_to_the_whole_leaf_with_a_floor():
    g = {"W": jnp.array([3.0, 4.0]), "b": jnp.array([0.0])}
    wrong = {"W": jnp.array([3.0, 4.5]), "b": jnp.array([1e-9])}
    error_W, error_b = G.leaf_errors((wrong["W"], wrong["b"]), (g["W"], g["b"]))
    assert error_W == pytest.approx(0.5 / 5.0)
    # b's exact gradient is zero: its 1e-9 of noise is measured against the
    # floor, 1e-3 of the whole gradient's norm (5), not against zero.
    assert error_b == pytest.approx(1e-9 / (1e-3 * 5.0))
    assert G.leaf_errors(g, g) == (0.0, 0.0)
    assert G.leaf_errors({"b": jnp.ones(1)}, {"b": jnp.zeros(1)}) == (float("inf"),)


def test_numerical_gradient_of_a_known_function():
    def f(p, c):
        return jnp.sum(c * p["x"] ** 3) + jnp.sin(p["y"])

    p = {"x": jnp.array([1.0, -2.0, 0.5]), "y": jnp.array(0.3)}
    g = G.numerical_gradient(f, p, 2.0, chunk_size=2)
    np.testing.assert_allclose(g["x"], 6.0 * p["x"] ** 2, rtol=1e-9)
    np.testing.assert_allclose(g["y"], np.cos(0.3), rtol=1e-9)


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunk_size_does_not_change_the_result(chunk_size):
    def f(p):
        return jnp.sum(jnp.tanh(p) ** 2)

    p = jnp.linspace(-1, 1, 10)
    np.testing.assert_allclose(
        G.numerical_gradient(f, p, chunk_size=chunk_size),
        G.numerical_gradient(f, p, chunk_size=1),
        rtol=1e-12,
    )


def test_a_wrong_backward_is_caught():
    good = L.sigmoid()
    wrong = L.Layer(
        good.init, good.forward, lambda p, cache, dy: ((), dy * cache[1])
    )  # forgot (1 - y)
    model_wrong = L.serial(L.dense(3), wrong, L.dense(2))
    model_good = L.serial(L.dense(3), good, L.dense(2))
    _, params, _ = model_good.init(jax.random.key(0), (2,), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (4, 2), jnp.float64)
    t = jnp.array([0, 1, 1, 0])
    assert G.check_gradients(model_good, losses.softmax_cross_entropy, params, x, t).passed
    report = G.check_gradients(model_wrong, losses.softmax_cross_entropy, params, x, t)
    assert not report.passed
    assert "FAILED" in str(report)
    worst = max(report.leaves, key=lambda leaf: leaf.vs_autodiff)
    assert worst.path.startswith("[0]")  # the error shows in the layer below the bug


def test_report_is_readable():
    model = L.serial(L.dense(2), L.tanh(), L.dense(1))
    _, params, _ = model.init(jax.random.key(0), (2,), jnp.float64)
    x, t = jnp.ones((3, 2)), jnp.ones((3, 1))
    text = str(G.check_gradients(model, losses.mse, params, x, t))
    assert "PASSED" in text and "[0]['W']" in text and "vs jax.grad" in text


def test_directional_check_large_network():
    model = L.serial(L.dense(64), L.relu(), L.dense(10))
    _, params, _ = model.init(jax.random.key(0), (100,), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (16, 100), jnp.float64)
    t = jax.random.randint(jax.random.key(2), (16,), 0, 10)
    import purenet

    J = purenet.objective(model, losses.softmax_cross_entropy)
    _, grads = purenet.backprop(model, losses.softmax_cross_entropy)(params, x, t)
    analytic, numeric = G.directional_check(
        J, grads, params, x, t, key=jax.random.key(3), num_directions=6
    )
    assert analytic.shape == (6,)
    assert G.rel_error(analytic, numeric) < 1e-7
    # a scaled gradient is caught
    analytic_bad, numeric_bad = G.directional_check(
        J, jax.tree.map(lambda g: 1.01 * g, grads), params, x, t, key=jax.random.key(3)
    )
    assert G.rel_error(analytic_bad, numeric_bad) > 1e-3


def scaled_dense(n, scale) -> Layer:
    """dense whose dW and db are off by a factor: a bug in the last digits."""
    good = L.dense(n)

    def backward(params, cache, dy):
        grads, dx = good.backward(params, cache, dy)
        return jax.tree.map(lambda g: scale * g, grads), dx

    return Layer(good.init, good.forward, backward)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_gradient_off_by_a_tenth_of_a_percent_fails_and_a_correct_one_passes(dtype):
    """Entrywise rel_error of a 1.001x gradient is 5e-4, which the old float32
    tolerance (1e-3) let through; per whole leaf it reads 1e-3, ten times the
    float32 tolerance, while a correct float32 gradient reads ~1e-7."""
    dtype = jnp.dtype(dtype)
    x = jax.random.normal(jax.random.key(1), (6, 5), dtype)
    h = jax.random.normal(jax.random.key(2), (6, 4), dtype)
    t = jnp.array([0, 1, 2, 1, 0, 2])
    for scale, passes in ((1.0, True), (1.001, False)):
        model = L.serial(L.dense(4), L.tanh(), scaled_dense(3, scale))
        _, params, _ = model.init(jax.random.key(0), (5,), dtype)
        report = G.check_gradients(model, losses.softmax_cross_entropy, params, x, t)
        assert report.dtype == str(dtype)
        assert report.passed is passes, report
        layer_report = G.check_layer(scaled_dense(3, scale), params[2], h)
        assert layer_report.passed is passes, layer_report
    assert [leaf.path for leaf in report.failing_leaves()] == ["[2]['W']", "[2]['b']"]
    assert report.autodiff_error == pytest.approx(1e-3, rel=1e-2)


def test_float32_check_uses_float32_tolerances():
    model = L.serial(L.dense(4), L.sigmoid(), L.dense(3))
    _, params, _ = model.init(jax.random.key(0), (3,), jnp.float32)
    x = jax.random.normal(jax.random.key(1), (5, 3), jnp.float32)
    report = G.check_gradients(
        model, losses.softmax_cross_entropy, params, x, jnp.array([0, 1, 2, 0, 1])
    )
    assert report.dtype == "float32"
    assert report.tolerance == G.TOLERANCES[jnp.dtype("float32")]
    assert report.passed, report
    # A float32 check says so, and points to float64 and the x64 fixture.
    assert "checked in float32" in str(report) and "x64 fixture" in str(report)
    assert "x64 fixture" in report.summary


def test_a_float64_check_has_no_float32_note():
    model = L.serial(L.dense(4), L.sigmoid(), L.dense(3))
    _, params, _ = model.init(jax.random.key(0), (3,), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (5, 3), jnp.float64)
    report = G.check_gradients(model, losses.softmax_cross_entropy, params, x, jnp.ones(5, int))
    assert report.passed and report.float32_note == "" and "float32" not in str(report)


def test_default_eps():
    assert 5e-6 < G.default_eps(jnp.float64) < 7e-6
    assert 4e-3 < G.default_eps(jnp.float32) < 6e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="chunk_size: expected a positive integer"):
        G.numerical_gradient(lambda p: jnp.sum(p), jnp.ones(3), chunk_size=0)
    with pytest.raises(ValueError, match="eps"):
        G.numerical_gradient(lambda p: jnp.sum(p), jnp.ones(3), eps=-1.0)


# ------------------------------------------------------------------ check_vjp


def f_tanh(w, x):
    return jnp.tanh(x @ w)


def f_tanh_vjp(w, x, ct):
    delta = ct * (1 - jnp.tanh(x @ w) ** 2)
    return x.T @ delta, delta @ w.T


W = jnp.array([[0.5, -1.0], [2.0, 0.1]], jnp.float32)
XS = jnp.array([[1.0, 2.0], [0.3, -0.4], [0.0, 1.0]], jnp.float32)


def test_check_vjp_report_names_leaves_after_the_parameters_and_shows_worst_entries():
    report = G.check_vjp(f_tanh, f_tanh_vjp, W, XS)
    assert report.passed and report.referee == "jax.vjp" and report.name == "f_tanh"
    assert [leaf.path for leaf in report.leaves] == ["['w']", "['x']"]

    def wrong(w, x, ct):
        dw, dx = f_tanh_vjp(w, x, ct)
        return dw, dx.at[2, 1].multiply(3.0)

    report = G.check_vjp(f_tanh, wrong, W, XS)
    assert not report.passed and report.dtype == "float32"
    assert report.summary == f"f_tanh: hand-written gradient is wrong ({report.float32_note})"
    (leaf,) = report.failing_leaves()
    assert leaf.path == "['x']" and leaf.worst.index == (2, 1)
    assert leaf.worst.manual == pytest.approx(3 * leaf.worst.autodiff, rel=1e-5)
    assert "worst entries:\n  ['x'][2, 1]: hand-written" in str(report)


def test_check_layer_is_check_vjp_of_forward_and_backward():
    layer = L.serial(L.dense(3), L.tanh())
    _, params, _ = layer.init(jax.random.key(0), (2,))
    x = jax.random.normal(jax.random.key(1), (4, 2))
    by_layer = G.check_layer(layer, params, x, dy_key=jax.random.key(5))
    by_vjp = G.check_vjp(
        lambda params, x: layer.forward(params, x)[0],
        lambda params, x, dy: layer.backward(params, layer.forward(params, x)[1], dy),
        params,
        x,
        key=jax.random.key(5),
    )
    assert [leaf.path for leaf in by_layer.leaves] == [leaf.path for leaf in by_vjp.leaves]
    assert by_layer.autodiff_error == by_vjp.autodiff_error
    assert by_layer.numerical_error == by_vjp.numerical_error


def masked_scale() -> Layer:
    """y = x * mask; the backward is right only if the check passes the mask on."""

    def init(key, in_shape, dtype=jnp.float32):
        return in_shape, (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        keep = jnp.ones(x.shape[:2], x.dtype) if mask is None else mask.astype(x.dtype)
        return x * keep[..., None], keep

    def backward(params, keep, dy):
        return (), dy * keep[..., None]

    return Layer(init, forward, backward)


def test_gradient_checks_take_mask_like_key():
    x = jax.random.normal(jax.random.key(1), (2, 4, 3))
    mask = jnp.array([[True, True, False, False], [True, True, True, False]])
    layer = masked_scale()
    assert G.check_layer(layer, (), x, mask=mask).passed
    ignores_mask = Layer(layer.init, layer.forward, lambda p, keep, dy: ((), dy))
    assert G.check_layer(ignores_mask, (), x).passed
    assert not G.check_layer(ignores_mask, (), x, mask=mask).passed
    model = L.serial(L.dense(3), masked_scale())
    _, params, _ = model.init(jax.random.key(0), (4, 3))
    t = jnp.zeros((2, 4, 3))
    assert G.check_gradients(model, losses.mse, params, x, t, mask=mask).passed


def nan_at(a, index=(0, 0)):
    return a.at[index].set(jnp.nan)


@pytest.mark.parametrize(
    "case, where",
    [
        ("input", "the input x (1 of 8 entries)"),
        ("params", "the params (1 of 9 entries)"),
        ("forward", "the forward output"),
        ("hand-written", "the hand-written gradient from layer.backward"),
        ("referee", "the referee jax.vjp"),
    ],
)
def test_non_finite_values_fail_and_name_where_they_entered(case, where):
    x = jax.random.normal(jax.random.key(1), (4, 2))
    layer = L.dense(3)
    _, params, _ = layer.init(jax.random.key(0), (2,))
    if case == "input":
        x = nan_at(x)
    if case == "params":
        params = {**params, "W": nan_at(params["W"])}
    if case == "forward":  # finite point, NaN out: log of a negative number
        good = L.dense(3)
        layer = Layer(
            good.init, lambda p, x, **ctx: (jnp.log(-jnp.abs(x)), x), lambda p, x, dy: ((), dy / x)
        )
        params = ()
    if case == "hand-written":
        good = L.dense(3)
        layer = Layer(
            good.init,
            good.forward,
            lambda p, c, dy: (good.backward(p, c, dy)[0], jnp.full(x.shape, jnp.nan)),
        )
    if case == "referee":  # sqrt at 0: finite value, infinite derivative for jax.vjp
        sqrt = L.Layer(
            L.dense(3).init,
            lambda p, x, **ctx: (jnp.sqrt(x * x), x),
            lambda p, x, dy: ((), dy * jnp.sign(x)),
        )
        layer, params, x = sqrt, (), x.at[0, 0].set(0.0)
    report = G.check_layer(layer, params, x)
    assert not report.passed
    assert report.non_finite[0].startswith(where), report.non_finite
    assert report.summary.startswith(f"layer: non-finite values (NaN or inf) entered at {where}")
    assert "non-finite values in " + where in str(report)
    assert np.isnan(report.autodiff_error) or np.isnan(report.numerical_error)
    assert "inf" not in f"{report.autodiff_error} {report.numerical_error}"


def test_a_nan_in_the_data_of_check_gradients_is_named():
    model = L.serial(L.dense(3), L.tanh(), L.dense(1))
    _, params, _ = model.init(jax.random.key(0), (2,))
    x = nan_at(jnp.ones((4, 2)))
    report = G.check_gradients(model, losses.mse, params, x, jnp.ones((4, 1)))
    assert not report.passed and np.isnan(report.autodiff_error)
    assert report.summary.startswith("model: non-finite values (NaN or inf) entered at the input x")
    assert "nan" in str(report) and "0.00e+00" not in str(report).split("\n")[3]


def test_check_vjp_bad_arguments():
    with pytest.raises(TypeError, match=r"^f: expected a function, got str"):
        G.check_vjp("sin", f_tanh_vjp, W, XS)
    with pytest.raises(TypeError, match=r"^vjp: expected a function, got int"):
        G.check_vjp(f_tanh, 3, W, XS)
    with pytest.raises(ValueError, match=r"^primals: expected at least one primal"):
        G.check_vjp(f_tanh, f_tanh_vjp)
    with pytest.raises(TypeError, match=r"^key: expected a jax.random key"):
        G.check_vjp(f_tanh, f_tanh_vjp, W, XS, key=0)
    with pytest.raises(ValueError, match=r"^primals: expected at least one floating-point"):
        G.check_vjp(lambda i: jnp.ones(2) * i, lambda i, ct: (None,), jnp.arange(2))
    with pytest.raises(ValueError, match=r"^f: expected a function with floating-point outputs"):
        G.check_vjp(lambda w: jnp.argmax(w), lambda w, ct: (w,), W)
    with pytest.raises(ValueError, match=r"^tolerance\['autodiff'\]: expected a number"):
        G.check_vjp(f_tanh, f_tanh_vjp, W, XS, tolerance={"autodiff": -1, "numerical": 1})
    with pytest.raises(TypeError, match=r"^dy_key: expected a jax.random key"):
        G.check_layer(L.tanh(), (), XS, dy_key="k")
    with pytest.raises(TypeError, match=r"^layer: expected a purenet Layer"):
        G.check_layer(jnp.tanh, (), XS)
