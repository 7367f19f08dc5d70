"""purenet.cost: the core promise, hand-written gradients == jax.grad ==
finite differences, for fixed and random networks, eagerly and under jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import purenet
from purenet import layers as L
from purenet import losses
from purenet.gradcheck import check_gradients, norm_ratio, numerical_gradient, rel_error


def test_mazur_step_by_step_example():
    """Known answer: M. Mazur, "A Step by Step Backpropagation Example" (2015):
    a 2-2-2 sigmoid network, inputs (0.05, 0.10), targets (0.01, 0.99),
    E = 1/2 sum (t - o)^2. Published: E = 0.298371109, dE/dw5 = 0.082167041,
    dE/dw1 = 0.000438568 (w5: h1 -> o1, w1: i1 -> h1)."""
    model = L.serial(L.dense(2), L.sigmoid(), L.dense(2), L.sigmoid())
    params = (
        {"W": jnp.array([[0.15, 0.25], [0.20, 0.30]]), "b": jnp.array([0.35, 0.35])},
        (),
        {"W": jnp.array([[0.40, 0.50], [0.45, 0.55]]), "b": jnp.array([0.60, 0.60])},
        (),
    )
    x, t = jnp.array([[0.05, 0.10]]), jnp.array([[0.01, 0.99]])
    J, grads = purenet.backprop(model, losses.mse)(params, x, t)
    assert float(J) == pytest.approx(0.298371109, abs=1e-9)
    assert float(grads[2]["W"][0, 0]) == pytest.approx(0.082167041, abs=1e-9)
    assert float(grads[0]["W"][0, 0]) == pytest.approx(0.000438568, abs=1e-9)
    # and after one step with learning rate 0.5, Mazur's updated w5 = 0.35891648
    assert float(params[2]["W"][0, 0] - 0.5 * grads[2]["W"][0, 0]) == pytest.approx(
        0.35891648, abs=1e-8
    )


def course_debug_network(dtype=jnp.float64):
    """Ng's checkNNGradients: 3 inputs, 5 hidden sigmoid units, 3 classes, m = 5."""
    model = L.serial(L.dense(5), L.sigmoid(), L.dense(3))
    _, params, _ = model.init(jax.random.key(0), (3,), dtype)
    x = jax.random.normal(jax.random.key(1), (5, 3), dtype)
    t = jnp.array([1, 2, 0, 1, 2])
    return model, params, x, t


@pytest.mark.parametrize("penalties", [{}, {"l2": 0.3}, {"l1": 0.05}, {"l2": 0.1, "l1": 0.02}])
def test_course_debug_network(penalties):
    model, params, x, t = course_debug_network()
    penalty = purenet.penalty(**penalties) if penalties else None
    report = check_gradients(model, losses.softmax_cross_entropy, params, x, t, penalty=penalty)
    assert report.passed, report
    assert report.autodiff_rel_error < 1e-9
    assert report.numerical_norm_ratio < 1e-8


def test_penalties_leave_biases_alone_and_match_their_formula():
    model, params, x, t = course_debug_network()
    J0, g0 = purenet.backprop(model, losses.softmax_cross_entropy)(params, x, t)
    J, g = purenet.backprop(
        model, losses.softmax_cross_entropy, penalty=purenet.penalty(l2=0.5, l1=0.1)
    )(params, x, t)
    W1, W2 = params[0]["W"], params[2]["W"]
    expected = 0.25 * (jnp.sum(W1**2) + jnp.sum(W2**2)) + 0.1 * (
        jnp.sum(jnp.abs(W1)) + jnp.sum(jnp.abs(W2))
    )
    assert float(J - J0) == pytest.approx(float(expected), rel=1e-12)
    np.testing.assert_array_equal(g[0]["b"], g0[0]["b"])
    np.testing.assert_allclose(g[0]["W"] - g0[0]["W"], 0.5 * W1 + 0.1 * jnp.sign(W1), rtol=1e-12)


def test_penalize_other_keys_and_validation():
    model, params, x, t = course_debug_network()
    report = check_gradients(
        model,
        losses.softmax_cross_entropy,
        params,
        x,
        t,
        penalty=purenet.penalty(l2=0.2, penalize=("W", "b")),
    )
    assert report.passed, report
    with pytest.raises(ValueError, match="l2: expected a number in"):
        purenet.penalty(l2=-1.0)
    with pytest.raises(ValueError, match="penalize"):
        purenet.penalty(penalize="W")
    with pytest.raises(TypeError, match="model: expected a purenet Layer"):
        purenet.backprop(lambda p, x: x, losses.mse)
    with pytest.raises(TypeError, match="loss: expected a purenet Loss"):
        purenet.objective(model, "mse")
    with pytest.raises(TypeError, match="penalty: expected None or a purenet Penalty"):
        purenet.backprop(model, losses.mse, {"l2": 0.1})


def test_penalty_strengths_may_be_traced_and_vmapped():
    """One vmap sweeps the L2 strength: no Python branch on its value."""
    model, params, x, t = course_debug_network()
    strengths = jnp.array([0.0, 0.1, 1.0])

    def grads_at(l2):
        return purenet.backprop(model, losses.softmax_cross_entropy, purenet.penalty(l2=l2))(
            params, x, t
        )

    Js, gs = jax.jit(jax.vmap(grads_at))(strengths)
    for i, l2 in enumerate([0.0, 0.1, 1.0]):
        J, g = grads_at(l2)
        assert float(Js[i]) == pytest.approx(float(J), rel=1e-12)
        assert rel_error(jax.tree.map(lambda a, i=i: a[i], gs), g) < 1e-12


def test_batchnorm_model_passes_in_both_modes_with_state_apart():
    """The seam of round one: a correct batch-norm model failed the check in
    evaluation mode because its running statistics were in params."""
    model = L.serial(L.dense(4), L.batchnorm(), L.tanh(), L.dense(2))
    _, params, state = model.init(jax.random.key(2), (3,), jnp.float64)
    x = jax.random.normal(jax.random.key(3), (6, 3), jnp.float64)
    t = jax.random.normal(jax.random.key(4), (6, 2), jnp.float64)
    state = model.update_state(state, model.forward(params, x, state=state, train=True)[1])
    for ctx in ({"state": state}, {"state": state, "train": True}):
        report = check_gradients(model, losses.mse, params, x, t, **ctx)
        assert report.passed, report
    assert all(
        "mean" not in path and "var" not in path
        for path in map(str, jax.tree_util.tree_flatten_with_path(params)[0])
    )


def test_relu_network_and_batchnorm_dropout_network():
    # Random biases: with zero biases, a row zeroed by ReLU and dropout would put
    # the leaky ReLU's input exactly on its kink, where differences straddle it.
    model = L.serial(
        L.dense(6),
        L.batchnorm(),
        L.relu(),
        L.dropout(0.3),
        L.dense(4, b_init="normal"),
        L.leaky_relu(0.1),
        L.dense(2),
    )
    _, params, _ = model.init(jax.random.key(7), (3,), jnp.float64)
    x = jax.random.normal(jax.random.key(8), (9, 3), jnp.float64)
    t = jax.random.uniform(jax.random.key(9), (9, 2), jnp.float64)
    report = check_gradients(model, losses.mse, params, x, t, train=True, key=jax.random.key(10))
    assert report.passed, report


def test_sigmoid_output_with_mse_is_expressible_and_correct():
    model = L.serial(L.dense(4), L.tanh(), L.dense(1), L.sigmoid())
    _, params, _ = model.init(jax.random.key(11), (2,), jnp.float64)
    x = jax.random.normal(jax.random.key(12), (8, 2), jnp.float64)
    t = (x[:, :1] > 0).astype(jnp.float64)
    assert check_gradients(model, losses.mse, params, x, t).passed


# ------------------------------------------------------- random architectures

SMOOTH = {"sigmoid": L.sigmoid, "tanh": L.tanh, "identity": L.identity}
KINKED = {"relu": L.relu, "leaky_relu": lambda: L.leaky_relu(0.05)}
HEADS = {
    "mse": (losses.mse, None),
    "bce": (losses.sigmoid_binary_cross_entropy, 1),
    "multilabel": (losses.multilabel_sigmoid_cross_entropy, None),
    "softmax_labels": (losses.softmax_cross_entropy, "labels"),
    "softmax_one_hot": (losses.softmax_cross_entropy, "one_hot"),
}


# Sizes come from a few buckets (the edge case 1 and a wider one): examples
# then share weight shapes, and the eager operations on them (unravelling a
# finite-difference gradient, say) compile once per bucket, not per example.
WIDTHS, FEATURES, BATCHES, OUTPUTS = (1, 3, 6), (1, 5), (1, 6), (2, 4)


def _params_like(model, in_shape, rng):
    """Parameters of ``model``'s structure, normal with the scale of a
    fan-in initialisation, from NumPy: an eager ``init`` compiles its random
    kernels for every new shape."""
    shapes = jax.eval_shape(lambda k: model.init(k, in_shape, jnp.float64)[1], jax.random.key(0))
    leaves, treedef = jax.tree.flatten(shapes)
    return treedef.unflatten(
        [jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(leaf.shape[0])) for leaf in leaves]
    )


@st.composite
def networks(draw, activations):
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.sampled_from(WIDTHS), min_size=depth, max_size=depth))
    acts = draw(st.lists(st.sampled_from(sorted(activations)), min_size=depth, max_size=depth))
    head = draw(st.sampled_from(sorted(HEADS)))
    loss, kind = HEADS[head]
    n_out = 1 if kind == 1 else draw(st.sampled_from(OUTPUTS))
    n_in, m = draw(st.sampled_from(FEATURES)), draw(st.sampled_from(BATCHES))
    seed = draw(st.integers(0, 2**30))
    layers = []
    for w, a in zip(widths, acts, strict=True):
        layers += [L.dense(w), activations[a]()]
    model = L.serial(*layers, L.dense(n_out))
    # Params and data from NumPy: a jax.random draw compiles anew for every drawn shape.
    rng = np.random.default_rng(seed)
    params = _params_like(model, (n_in,), rng)
    x = jnp.asarray(rng.standard_normal((m, n_in)))
    if kind in ("labels", "one_hot"):
        t = jnp.asarray(rng.integers(0, n_out, m), jnp.int32)
        t = jax.nn.one_hot(t, n_out, dtype=jnp.float64) if kind == "one_hot" else t
    else:
        t = jnp.asarray(rng.random((m, n_out)) < 0.5, jnp.float64)
    return model, loss, params, x, t


# Each example compiles a finite-difference pass (~3 s on 2 cores): few examples.
@settings(max_examples=12, deadline=None)
@given(networks(SMOOTH), st.sampled_from([0.0, 0.1]))
def test_random_smooth_networks_match_jax_grad_and_finite_differences(net, l2):
    model, loss, params, x, t = net
    report = check_gradients(model, loss, params, x, t, penalty=purenet.penalty(l2=l2))
    assert report.autodiff_rel_error < 1e-9, report
    assert report.numerical_norm_ratio < 1e-8, report


@settings(max_examples=25, deadline=None)
@given(networks({**SMOOTH, **KINKED}))
def test_random_networks_with_kinks_match_jax_grad(net):
    # Finite differences are exact only away from ReLU's kink, so networks with
    # kinks are refereed by jax.grad (which takes relu'(0) = 0, as we do).
    model, loss, params, x, t = net
    # One compiled program per drawn network (eagerly, every primitive would
    # compile on its own for each new shape).
    manual, auto = jax.jit(
        lambda p, x, t: (
            purenet.backprop(model, loss)(p, x, t)[1],
            jax.grad(purenet.objective(model, loss))(p, x, t),
        )
    )(params, x, t)
    assert rel_error(manual, auto) < 1e-9


# ------------------------------------------------------------- jit, vmap, dtypes


def test_relu_derivative_at_exactly_zero_matches_the_referee():
    # A row zeroed by the first ReLU meets a zero bias: the second ReLU's input
    # is exactly 0, where relu'(0) = 0 by convention on both sides.
    model = L.serial(L.dense(3), L.relu(), L.dense(2), L.relu(), L.dense(1))
    _, params, _ = model.init(jax.random.key(0), (2,), jnp.float64)
    params = (dict(params[0], b=jnp.full(3, -100.0)),) + params[1:]
    x, t = jnp.ones((2, 2)), jnp.ones((2, 1))
    manual = purenet.backprop(model, losses.mse)(params, x, t)[1]
    auto = jax.grad(purenet.objective(model, losses.mse))(params, x, t)
    assert rel_error(manual, auto) == 0.0


def test_under_jit_equals_eager():
    model, params, x, t = course_debug_network()
    f = purenet.backprop(model, losses.softmax_cross_entropy, penalty=purenet.penalty(l2=0.1))
    J, g = f(params, x, t)
    Jj, gj = jax.jit(f)(params, x, t)
    assert float(J) == pytest.approx(float(Jj), rel=1e-14)
    assert rel_error(g, gj) < 1e-12


def test_under_vmap_over_a_stack_of_parameter_sets():
    model = L.serial(L.dense(5), L.tanh(), L.dense(3))
    keys = jax.random.split(jax.random.key(3), 4)
    stacked = jax.vmap(lambda k: model.init(k, (3,), jnp.float64)[1])(keys)
    _, _, x, t = course_debug_network()
    f = purenet.backprop(model, losses.softmax_cross_entropy)
    Js, gs = jax.jit(jax.vmap(f, in_axes=(0, None, None)))(stacked, x, t)
    # The referee in one compiled program (eagerly, each primitive compiles on its own).
    auto = jax.jit(
        jax.vmap(
            jax.grad(purenet.objective(model, losses.softmax_cross_entropy)),
            in_axes=(0, None, None),
        )
    )(stacked, x, t)
    assert Js.shape == (4,)
    assert rel_error(gs, auto) < 1e-9
    for i in range(4):
        p_i = jax.tree.map(lambda a, i=i: a[i], stacked)
        assert rel_error(jax.tree.map(lambda a, i=i: a[i], gs), f(p_i, x, t)[1]) < 1e-12


def test_float32_in_float32_out():
    model, params, x, t = course_debug_network(jnp.float32)
    J, grads = jax.jit(
        purenet.backprop(model, losses.softmax_cross_entropy, penalty=purenet.penalty(l2=0.1))
    )(params, x, t)
    assert J.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    auto = jax.jit(
        jax.grad(
            purenet.objective(model, losses.softmax_cross_entropy, penalty=purenet.penalty(l2=0.1))
        )
    )(params, x, t)
    assert rel_error(grads, auto) < 1e-4


def test_no_nan_or_inf_in_gradients_at_huge_logits_float32():
    model = L.serial(L.dense(3))
    params = ({"W": jnp.array([[1e4, -1e4, 0.0]], jnp.float32), "b": jnp.zeros(3, jnp.float32)},)
    x = jnp.array([[1.0], [-1.0]], jnp.float32)
    for loss, t in [
        (losses.softmax_cross_entropy, jnp.array([1, 0])),
        (losses.multilabel_sigmoid_cross_entropy, jnp.ones((2, 3), jnp.float32)),
    ]:
        J, g = purenet.backprop(model, loss)(params, x, t)
        assert jnp.isfinite(J) and all(jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(g))


# ------------------------------------------------------------------- flat theta


def test_flat_cost_gradient_is_the_raveled_gradient():
    model, params, x, t = course_debug_network()
    theta, unravel = purenet.ravel(params)
    cost = purenet.flat_cost(
        model, losses.softmax_cross_entropy, unravel, penalty=purenet.penalty(l2=0.1)
    )
    J, g = cost(theta, x, t)
    assert g.shape == theta.shape
    J_ref, grads = purenet.backprop(
        model, losses.softmax_cross_entropy, penalty=purenet.penalty(l2=0.1)
    )(params, x, t)
    assert float(J) == float(J_ref)
    np.testing.assert_array_equal(g, purenet.ravel(grads)[0])
    obj = purenet.objective(model, losses.softmax_cross_entropy, penalty=purenet.penalty(l2=0.1))
    assert norm_ratio(g, numerical_gradient(lambda th: obj(unravel(th), x, t), theta)) < 1e-8


def test_lbfgs_trains_xor_through_the_flat_cost():
    """The course's 'advanced optimizer' path: fmincg / L-BFGS on unrolled theta."""
    x = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    t = jnp.array([[0.0], [1.0], [1.0], [0.0]])
    model = L.serial(L.dense(4), L.tanh(), L.dense(1))
    _, params, _ = model.init(jax.random.key(1), (2,), jnp.float64)
    theta0, unravel = purenet.ravel(params)
    cost = jax.jit(purenet.flat_cost(model, losses.sigmoid_binary_cross_entropy, unravel))

    def fun(th):
        J, g = cost(jnp.asarray(th), x, t)
        return float(J), np.asarray(g, np.float64)

    result = scipy.optimize.minimize(
        fun, np.asarray(theta0), jac=True, method="L-BFGS-B", options={"maxiter": 500}
    )
    assert result.fun < 1e-3
    y, _ = model.forward(unravel(jnp.asarray(result.x)), x)
    np.testing.assert_array_equal(np.asarray(y > 0), np.asarray(t > 0.5))


def test_jax_grad_referee_survives_unoptimised_recomputation():
    """The example hypothesis found: at XLA's optimisation level 0, jax.grad of
    the cost went to inf through the gradient of the softmax's max shift; the
    shift's gradient is stopped (exactly zero), so the referee agrees."""
    model = L.serial(L.dense(1), L.dense(1), L.dense(1), L.dense(2))
    a = jnp.array
    params = (
        {"W": a([[0.12573022]]), "b": a([-0.13210486])},
        {"W": a([[0.64042265]]), "b": a([0.10490012])},
        {"W": a([[-0.53566937]]), "b": a([0.36159505])},
        {"W": a([[1.30400005, 0.94708096]]), "b": a([-0.49761596, -0.8947881])},
    )
    x, t = a([[-0.62327446]]), jnp.array([1], jnp.int32)
    loss = losses.softmax_cross_entropy
    level0 = {"xla_backend_optimization_level": 0}
    auto = jax.jit(jax.grad(purenet.objective(model, loss)), compiler_options=level0)(params, x, t)
    manual = purenet.backprop(model, loss)(params, x, t)[1]
    assert rel_error(manual, auto) < 1e-12
