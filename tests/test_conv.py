"""purenet.layers.conv: conv1d / conv2d, both hand-written backward passes.

Every check runs in float64 (tests/conftest.py enables x64). The referees are
``jax.vjp`` of the forward, central differences (``check_layer``), XLA's own
``lax.conv_general_dilated``, NumPy/SciPy correlations and answers worked by
hand in Saito's *Deep Learning from Scratch* (figs. 7-6 to 7-8).
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import purenet
from purenet import layers as L
from purenet import losses
from purenet.gradcheck import check_gradients, check_layer
from purenet.layers import conv as C

FACTORIES = {1: L.conv1d, 2: L.conv2d}


# ------------------------------------------------------------------ strategies


@st.composite
def conv_configs(draw):
    """A random geometry that fits: spatial rank, kernel, stride, dilation,
    padding in each of its four spellings, sizes."""
    n = draw(st.sampled_from([1, 2]))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(n))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    kind = draw(st.sampled_from(["VALID", "SAME", "int", "pairs"]))
    if kind == "int":
        p = draw(st.integers(0, 2))
        padding, pads = p, [(p, p)] * n
    elif kind == "pairs":
        pads = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(n)]
        padding = pads[0] if n == 1 and draw(st.booleans()) else tuple(pads)
    else:
        padding, pads = kind, [(0, 0)] * n
    spatial = []
    for k, d, (lo, hi) in zip(kernel, dilation, pads, strict=True):
        smallest = 1 if kind == "SAME" else max(1, (k - 1) * d + 1 - lo - hi)
        spatial.append(draw(st.integers(smallest, smallest + 4)))
    return {
        "n": n,
        "kernel": kernel,
        "stride": stride,
        "dilation": dilation,
        "padding": padding,
        "lax_padding": kind if kind in ("VALID", "SAME") else pads,
        "in_shape": (*spatial, draw(st.integers(1, 2))),
        "m": draw(st.integers(1, 2)),
        "features": draw(st.integers(1, 3)),
    }


def _layer(cfg, method):
    return FACTORIES[cfg["n"]](
        cfg["features"],
        cfg["kernel"],
        cfg["stride"],
        cfg["padding"],
        cfg["dilation"],
        method=method,
    )


def _xla(cfg, x, W):
    """The forward by XLA from the configuration's own spelling (SAME resolved by lax)."""
    n = cfg["n"]
    return lax.conv_general_dilated(
        x,
        W,
        cfg["stride"],
        cfg["lax_padding"],
        rhs_dilation=cfg["dilation"],
        dimension_numbers=C._dimension_numbers(n),
    )


# ------------------------------------------------------------- property tests


def _static_train(layer):
    return ("train",) if "train" in inspect.signature(layer.forward).parameters else ()


def jitted(layer):
    """The layer with a compiled forward and backward: one compilation per
    shape instead of one per primitive (hypothesis draws a new shape each time)."""
    return L.Layer(
        layer.init,
        # train, where the forward takes it (batch norm), picks the program
        jax.jit(layer.forward, static_argnames=_static_train(layer)),
        jax.jit(layer.backward),
        layer.update_state,
    )


def _random_params(cfg, rng):
    """Params from NumPy (no compilation per shape, unlike jax.random)."""
    W = rng.normal(size=(*cfg["kernel"], cfg["in_shape"][-1], cfg["features"]))
    return {"W": jnp.asarray(W), "b": jnp.asarray(rng.normal(size=cfg["features"]))}


@settings(max_examples=15, deadline=None)
@given(conv_configs(), st.sampled_from(C.METHODS), st.integers(0, 2**16))
def test_both_backward_passes_match_vjp_finite_differences_and_each_other(cfg, method, seed):
    """Per drawn geometry: both paths against XLA's forward, jax.vjp and each
    other; col2im as im2col's adjoint; the drawn path through check_layer."""
    rng = np.random.default_rng(seed)
    params = _random_params(cfg, rng)
    x = jnp.asarray(rng.normal(size=(cfg["m"], *cfg["in_shape"])))
    layers = {name: _layer(cfg, name) for name in C.METHODS}
    # The output shape by tracing alone: an eager init compiles its random
    # kernels for every drawn shape.
    out_shape = jax.eval_shape(layers["lax"].forward, params, x)[0].shape[1:]
    dy = jnp.asarray(rng.normal(size=(cfg["m"], *out_shape)))

    @jax.jit
    def everything(params, x, dy):
        out = {}
        for name, layer in layers.items():
            y, cache = layer.forward(params, x)
            out[name] = (y, layer.backward(params, cache, dy))
        y, vjp = jax.vjp(lambda p, x: layers["lax"].forward(p, x)[0], params, x)
        out["reference"] = (_xla(cfg, x, params["W"]) + params["b"], vjp(dy))
        # The adjoint identity <im2col(x), Y> = <x, col2im(Y)> for a fixed irregular Y.
        args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])
        cols = L.im2col(x, *args)
        Y = jnp.cos(jnp.arange(cols.size, dtype=x.dtype) * 0.7).reshape(cols.shape)
        adjoint = (jnp.vdot(cols, Y), jnp.vdot(x, L.col2im(Y, x.shape, *args)))
        return out, adjoint

    out, adjoint = everything(params, x, dy)
    np.testing.assert_allclose(*adjoint, rtol=1e-12, atol=1e-12)
    assert out["lax"][0].shape == (cfg["m"], *out_shape)
    for name in C.METHODS:  # both paths: XLA's forward, jax.vjp's gradients, each other
        for a, b in zip(jax.tree.leaves(out[name]), jax.tree.leaves(out["reference"]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11, err_msg=name)
    # The drawn path against jax.vjp and central differences, as a user would check it.
    report = check_layer(jitted(layers[method]), params, x, dy_key=jax.random.key(seed))
    assert report.passed, f"{method}\n{report}"


# ------------------------------------------------------------ known answers

# Saito, Deep Learning from Scratch, fig. 7-7 (input, filter, output) and
# fig. 7-6 (the same with padding 1); fig. 7-8 adds a bias of 3.
SAITO_X = np.array([[1, 2, 3, 0], [0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1]], np.float64)
SAITO_W = np.array([[2, 0, 1], [0, 1, 2], [1, 0, 2]], np.float64)


@pytest.mark.parametrize("method", C.METHODS)
def test_saito_figures_7_6_to_7_8(method):
    params = {"W": jnp.asarray(SAITO_W)[:, :, None, None], "b": jnp.array([3.0])}
    x = jnp.asarray(SAITO_X)[None, :, :, None]
    y, cache = L.conv2d(1, 3, method=method).forward(params, x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[18, 19], [9, 18]])
    padded = {"W": params["W"], "b": jnp.zeros(1)}
    y_pad, _ = L.conv2d(1, 3, padding=1, method=method).forward(padded, x)
    np.testing.assert_array_equal(
        y_pad[0, :, :, 0], [[7, 12, 10, 2], [4, 15, 16, 10], [10, 6, 15, 6], [8, 10, 4, 3]]
    )
    # Backward with dy = 1: dW is the sum of the four windows, dx the "full"
    # convolution of a 2x2 block of ones with the filter (SciPy's convolve2d).
    grads, dx = L.conv2d(1, 3, method=method).backward(params, cache, jnp.ones((1, 2, 2, 1)))
    windows = sum(SAITO_X[i : i + 3, j : j + 3] for i in range(2) for j in range(2))
    np.testing.assert_array_equal(grads["W"][:, :, 0, 0], windows)
    np.testing.assert_array_equal(grads["b"], [4.0])
    np.testing.assert_array_equal(
        dx[0, :, :, 0], scipy.signal.convolve2d(np.ones((2, 2)), SAITO_W, "full")
    )


@pytest.mark.parametrize("method", C.METHODS)
@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 0, 1), (3, 2, 1), (2, 1, 2)])
def test_conv1d_is_numpy_correlate(method, stride, padding, dilation):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=11), rng.normal(size=3)
    dilated = np.zeros((len(w) - 1) * dilation + 1)
    dilated[::dilation] = w
    expected = np.correlate(np.pad(x, padding), dilated, "valid")[::stride]
    layer = L.conv1d(1, 3, stride, padding, dilation, method=method)
    params = {"W": jnp.asarray(w)[:, None, None], "b": jnp.zeros(1)}
    y, _ = layer.forward(params, jnp.asarray(x)[None, :, None])
    np.testing.assert_allclose(y[0, :, 0], expected, rtol=1e-12)


def test_conv2d_sums_scipy_correlations_over_input_channels():
    rng = np.random.default_rng(1)
    x, W = rng.normal(size=(2, 6, 7, 3)), rng.normal(size=(3, 2, 3, 4))
    expected = np.stack(
        [
            np.stack(
                [
                    sum(
                        scipy.signal.correlate2d(x[n, :, :, c], W[:, :, c, f], "valid")
                        for c in range(3)
                    )
                    for f in range(4)
                ],
                axis=-1,
            )
            for n in range(2)
        ]
    )
    y = L.conv_forward(jnp.asarray(x), jnp.asarray(W))
    np.testing.assert_allclose(y, expected, rtol=1e-12)


@pytest.mark.parametrize("method", C.METHODS)
def test_rows_no_window_reaches_get_zero_gradient(method):
    # Length 8, kernel 3, stride 2: windows start at 0, 2, 4 and end at 6;
    # position 7 is read by no window (r = 1 in the module docstring).
    layer = L.conv1d(2, 3, stride=2, method=method)
    x = jax.random.normal(jax.random.key(0), (2, 8, 1), jnp.float64)
    _, params, _ = layer.init(jax.random.key(1), (8, 1), jnp.float64)
    y, cache = layer.forward(params, x)
    assert y.shape == (2, 3, 2)
    _, dx = layer.backward(params, cache, jnp.ones_like(y))
    np.testing.assert_array_equal(dx[:, 7], 0.0)
    assert np.all(dx[:, :7] != 0.0)


def test_same_padding_puts_the_odd_zero_at_the_end():
    pads, out = C.geometry((6,), (4,), (1,), "SAME", (1,))
    assert pads == ((1, 2),) and out == (6,)
    pads, out = C.geometry((7, 5), (3, 3), (2, 2), "SAME", (1, 1))
    assert pads == ((1, 1), (1, 1)) and out == (4, 3)


def test_default_init_is_he_normal_by_fan_in():
    _, params, _ = L.conv2d(64, 5).init(jax.random.key(0), (28, 28, 16))
    fan_in = 5 * 5 * 16
    assert params["W"].shape == (5, 5, 16, 64) and params["W"].dtype == jnp.float32
    assert abs(float(jnp.std(params["W"])) - np.sqrt(2 / fan_in)) < 0.03 * np.sqrt(2 / fan_in)
    np.testing.assert_array_equal(params["b"], 0.0)


# ------------------------------------------------------------ jit and vmap


@pytest.mark.parametrize("method", C.METHODS)
def test_jit_and_vmap_give_the_eager_numbers(method):
    layer = L.conv2d(3, (2, 3), stride=(2, 1), padding="SAME", method=method)
    _, params, _ = layer.init(jax.random.key(0), (5, 6, 2), jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (4, 3, 5, 6, 2), jnp.float64)

    def step(params, x):
        y, cache = layer.forward(params, x)
        return layer.backward(params, cache, jnp.sin(y))

    compiled = jax.jit(step)
    for a, b in zip(
        jax.tree.leaves(step(params, xs[0])), jax.tree.leaves(compiled(params, xs[0])), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    batched = jax.jit(jax.vmap(step, in_axes=(None, 0)))(params, xs)
    for i in range(len(xs)):
        for a, b in zip(
            jax.tree.leaves(compiled(params, xs[i])),
            jax.tree.leaves(jax.tree.map(lambda v, i=i: v[i], batched)),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # vmap over parameters: several initialisations (seeds) in one program.
    stacked = jax.vmap(lambda k: layer.init(k, (5, 6, 2), jnp.float64)[1])(
        jax.random.split(jax.random.key(2), 3)
    )
    per_seed = jax.vmap(step, in_axes=(0, None))(stacked, xs[0])
    first = compiled(jax.tree.map(lambda v: v[0], stacked), xs[0])
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(per_seed), strict=True):
        np.testing.assert_allclose(a, b[0], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------- whole networks


def _lenet(method):
    return L.serial(
        L.conv2d(4, 3, padding="SAME", method=method),
        L.relu(),
        L.max_pool2d(2),
        L.conv2d(5, 3, method=method),
        L.tanh(),
        L.avg_pool2d(2, 1),
        L.flatten(),
        L.dense(3),
    )


def _mnist1d_cnn(method):
    return L.serial(
        L.conv1d(4, 5, 2, 1, method=method),
        L.relu(),
        L.conv1d(4, 3, 2, 1, method=method),
        L.relu(),
        L.conv1d(4, 3, 2, 1, method=method),
        L.relu(),
        L.flatten(),
        L.dense(3),
    )


@pytest.mark.parametrize("method", C.METHODS)
@pytest.mark.parametrize(
    "net, in_shape", [(_lenet, (8, 8, 1)), (_mnist1d_cnn, (20, 1))], ids=["lenet", "mnist1d"]
)
def test_whole_cnn_backprop_equals_jax_grad_of_the_objective(method, net, in_shape):
    model = net(method)
    _, params, _ = model.init(jax.random.key(0), in_shape, jnp.float64)
    x = jax.random.normal(jax.random.key(1), (3, *in_shape), jnp.float64)
    t = jnp.array([0, 2, 1])
    loss = losses.softmax_cross_entropy
    J, grads = jax.jit(purenet.backprop(model, loss))(params, x, t)
    reference = jax.jit(jax.grad(purenet.objective(model, loss)))(params, x, t)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    if method == "lax" and net is _mnist1d_cnn:  # one full finite-difference check of a CNN
        report = check_gradients(model, loss, params, x, t)
        assert report.passed, report


@pytest.mark.parametrize("ctx", [{}, {"train": True}], ids=["eval", "train"])
def test_batchnorm_on_conv_feature_maps_is_per_channel(ctx):
    layer = L.batchnorm()
    _, params, state = layer.init(jax.random.key(0), (4, 5, 3), jnp.float64)
    params = {"gamma": jnp.array([0.5, 1.0, 2.0]), "beta": jnp.array([0.1, -0.2, 0.3])}
    state = {"mean": jnp.array([0.2, -0.1, 0.0]), "var": jnp.array([1.5, 0.5, 2.0])}
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(1), (2, 4, 5, 3), jnp.float64)
    report = check_layer(jitted(layer), params, x, dy_key=jax.random.key(2), state=state, **ctx)
    assert report.passed, report
    if ctx:
        y, _ = layer.forward(params, x, state=state, train=True)
        np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), params["beta"], atol=1e-12)


# ------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("method", C.METHODS)
def test_float32_in_float32_out(method):
    layer = L.conv1d(2, 3, method=method)
    _, params, _ = layer.init(jax.random.key(0), (6, 2))
    x = jnp.ones((2, 6, 2), jnp.float32)
    y, cache = layer.forward(params, x)
    grads, dx = layer.backward(params, cache, jnp.ones_like(y))
    assert {a.dtype for a in jax.tree.leaves((y, grads, dx))} == {jnp.dtype("float32")}


# -------------------------------------------------------------- bad input


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"kernel_size: expected a window no larger"):
        L.conv2d(2, 5).init(jax.random.key(0), (4, 4, 1))
    with pytest.raises(ValueError, match=r"kernel_size: expected a window no larger"):
        L.conv1d(2, 3, dilation=3).forward(
            {"W": jnp.ones((3, 1, 2)), "b": jnp.zeros(2)}, jnp.ones((1, 6, 1))
        )
    with pytest.raises(ValueError, match=r"stride: expected a positive integer, got 0"):
        L.conv2d(2, 3, stride=0)
    with pytest.raises(ValueError, match=r"stride\[1\]: expected a positive integer, got 0"):
        L.conv2d(2, 3, stride=(1, 0))
    with pytest.raises(ValueError, match=r"kernel_size: expected a positive integer or a tuple"):
        L.conv2d(2, (3, 3, 3))
    with pytest.raises(ValueError, match=r"kernel_size: expected a positive integer, got 2.5"):
        L.conv1d(2, 2.5)
    with pytest.raises(ValueError, match=r"padding: expected a non-negative integer, got -1"):
        L.conv1d(2, 3, padding=-1)
    with pytest.raises(ValueError, match=r"padding\[0\]: expected a non-negative integer"):
        L.conv2d(2, 3, padding=((1, -1), (0, 0)))
    with pytest.raises(ValueError, match=r"padding: expected 'VALID', 'SAME'"):
        L.conv2d(2, 3, padding="FULL")
    with pytest.raises(ValueError, match=r"method: expected one of \['lax', 'im2col'\]"):
        L.conv2d(2, 3, method="fft")
    layer = L.conv2d(2, 3)
    _, params, _ = layer.init(jax.random.key(0), (5, 5, 3))
    with pytest.raises(ValueError, match=r"x: expected 3 input channels"):
        layer.forward(params, jnp.ones((1, 5, 5, 2)))
    with pytest.raises(ValueError, match=r"x: expected a batch of shape \(m, H, W, C\)"):
        layer.forward(params, jnp.ones((5, 5)))
    with pytest.raises(ValueError, match=r"in_shape: expected 3 axes"):
        layer.init(jax.random.key(0), (5, 5))
    with pytest.raises(ValueError, match=r"cols: expected a matrix of shape"):
        L.col2im(jnp.ones((3, 3)), (1, 4, 4, 1), 3)
