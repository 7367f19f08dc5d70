"""Specification of purenet.optim: pure optimizers ``init(params)``, ``step(params, grads, state)``.

Reference values are re-derived here in plain NumPy from each paper's formula,
never from the library's helpers. Float64 comparisons run under the ``x64``
fixture, which restores the previous setting afterwards.
"""

from __future__ import annotations

import doctest
import inspect
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import purenet
from purenet import optim, schedules, transforms

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def default_instance(name, learning_rate=0.01):
    """Each optimizer with default hyperparameters except the learning rate."""
    return getattr(optim, name)(learning_rate)


def run_steps(opt, params, grad_fn, n):
    """n steps in a Python loop; returns every iterate (params after each step)."""
    state = opt.init(params)
    iterates = []
    for _ in range(n):
        params, state = opt.step(params, grad_fn(params), state)
        iterates.append(params)
    return iterates


# --- NumPy references, one per paper ----------------------------------------------


def sgd_reference(w, grads, lr):
    out = []
    for g in grads:
        w = w - lr * g
        out.append(w)
    return out


def rumelhart_reference(w, grads, lr, mass):
    # Rumelhart, Hinton & Williams (1986), eq. 9: dw(t) = -eps dE/dw(t) + alpha dw(t-1).
    dw, out = np.zeros_like(w), []
    for g in grads:
        dw = -lr * g + mass * dw
        w = w + dw
        out.append(w)
    return out


def torch_nesterov_reference(w, grads, lr, mass):
    # torch.optim.SGD(momentum=mass, nesterov=True): the form with the gradient at w.
    buf, out = np.zeros_like(w), []
    for g in grads:
        buf = mass * buf + g
        w = w - lr * (g + mass * buf)
        out.append(w)
    return out


def adagrad_reference(w, grads, lr, eps):
    # Duchi, Hazan & Singer (2011), diagonal AdaGrad; eps outside the root as torch.
    G, out = np.zeros_like(w), []
    for g in grads:
        G = G + g**2
        w = w - lr * g / (np.sqrt(G) + eps)
        out.append(w)
    return out


def rmsprop_reference(w, grads, lr, decay, eps):
    # Tieleman & Hinton (2012) as torch.optim.RMSprop computes it.
    s, out = np.zeros_like(w), []
    for g in grads:
        s = decay * s + (1 - decay) * g**2
        w = w - lr * g / (np.sqrt(s) + eps)
        out.append(w)
    return out


def adam_reference(w, grads, lr, b1, b2, eps, weight_decay=0.0):
    # Kingma & Ba (2015), Algorithm 1; with weight_decay, torch.optim.AdamW's order:
    # shrink the weights first, then take the Adam step.
    m, v, out = np.zeros_like(w), np.zeros_like(w), []
    for t, g in enumerate(grads, start=1):
        w = w * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(w)
    return out


# Non-default hyperparameters, passed positionally: this also pins the argument
# order. The large eps values make its placement (inside or outside the root) visible.
FIRST_STEPS = {
    "sgd": (lambda: optim.sgd(0.1), partial(sgd_reference, lr=0.1)),
    "momentum": (lambda: optim.momentum(0.1, 0.8), partial(rumelhart_reference, lr=0.1, mass=0.8)),
    "nesterov": (
        lambda: optim.nesterov(0.1, 0.8),
        partial(torch_nesterov_reference, lr=0.1, mass=0.8),
    ),
    "adagrad": (lambda: optim.adagrad(0.3, 1e-2), partial(adagrad_reference, lr=0.3, eps=1e-2)),
    "rmsprop": (
        lambda: optim.rmsprop(0.05, 0.9, 1e-2),
        partial(rmsprop_reference, lr=0.05, decay=0.9, eps=1e-2),
    ),
    "adam": (
        lambda: optim.adam(0.1, 0.8, 0.95, 1e-2),
        partial(adam_reference, lr=0.1, b1=0.8, b2=0.95, eps=1e-2),
    ),
    "adamw": (
        lambda: optim.adamw(0.1, 0.8, 0.95, 1e-2, 0.05),
        partial(adam_reference, lr=0.1, b1=0.8, b2=0.95, eps=1e-2, weight_decay=0.05),
    ),
}

W0 = np.array([0.5, -1.5, 2.0, 0.0])
GRADS = [
    np.array([1.0, -2.0, 0.0, 0.3]),  # a zero entry: no 0/0 anywhere
    np.array([0.5, 3.0, 0.0, -0.7]),
    np.array([-0.25, 1.0, 0.0, 4.0]),
]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_first_three_steps_match_the_paper_formula_float64(name, x64):
    make, reference = FIRST_STEPS[name]
    opt = make()
    params, state = jnp.asarray(W0), opt.init(jnp.asarray(W0))
    for g, expected in zip(GRADS, reference(W0, GRADS), strict=True):
        params, state = opt.step(params, jnp.asarray(g), state)
        assert params.dtype == jnp.float64
        np.testing.assert_allclose(params, expected, rtol=1e-13, atol=1e-15)
    assert int(state.count) == 3


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_first_three_steps_match_the_paper_formula_float32(name):
    make, reference = FIRST_STEPS[name]
    opt = make()
    params = jnp.asarray(W0, jnp.float32)
    state = opt.init(params)
    for g, expected in zip(GRADS, reference(W0, GRADS), strict=True):
        params, state = opt.step(params, jnp.asarray(g, jnp.float32), state)
        assert params.dtype == jnp.float32
        np.testing.assert_allclose(params, expected, rtol=2e-6, atol=1e-6)


def test_defaults_follow_torch_optim_except_the_documented_mass():
    def defaults(fn):
        return {
            k: p.default
            for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    # SGD-type learning rates have no default; mass=0.9 is our documented choice.
    assert defaults(optim.sgd) == {}
    assert defaults(optim.momentum) == {"mass": 0.9}
    assert defaults(optim.nesterov) == {"mass": 0.9}
    assert defaults(optim.adagrad) == {
        "learning_rate": 1e-2,
        "eps": 1e-10,
        "initial_accumulator": 0.0,
    }
    assert defaults(optim.rmsprop) == {"learning_rate": 1e-2, "decay": 0.99, "eps": 1e-8}
    assert defaults(optim.adam) == {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
    assert defaults(optim.adamw) == {
        "learning_rate": 1e-3,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "weight_decay": 1e-2,
        "mask": None,  # keyword only: every leaf decayed, as torch.optim.AdamW
    }
    with pytest.raises(TypeError):
        optim.sgd()


# --- momentum and Nesterov: the forms in the notes ---------------------------------

H = np.array([[3.0, 1.0], [1.0, 2.0]])  # E(w) = 1/2 w^T H w


def quadratic_grad(w):
    return H @ w if isinstance(w, np.ndarray) else jnp.asarray(H, w.dtype) @ w


def test_momentum_is_rumelharts_rule_even_under_a_schedule(x64):
    # dw(t) = -eps(t) * dE/dw(t) + alpha * dw(t-1);  w(t) = w(t-1) + dw(t)
    eps = [0.1, 0.1, 0.05, 0.05, 0.02, 0.02, 0.01, 0.01]
    alpha = 0.9
    opt = optim.momentum(lambda count: jnp.asarray(eps)[count], alpha)
    ours = run_steps(opt, jnp.array([1.0, -1.0]), quadratic_grad, len(eps))

    w, dw = np.array([1.0, -1.0]), np.zeros(2)
    for t in range(len(eps)):
        dw = -eps[t] * quadratic_grad(w) + alpha * dw
        w = w + dw
        np.testing.assert_allclose(ours[t], w, rtol=1e-13)

    # torch's form b = alpha b + g, w -= eps(t) b agrees only while eps is constant.
    w_torch, b = np.array([1.0, -1.0]), np.zeros(2)
    for t in range(len(eps)):
        b = alpha * b + quadratic_grad(w_torch)
        w_torch = w_torch - eps[t] * b
        if t < 2:
            np.testing.assert_allclose(ours[t], w_torch, rtol=1e-13)
    assert not np.allclose(ours[-1], w_torch, rtol=1e-3)


def test_momentum_with_constant_rate_equals_the_torch_form(x64):
    ours = run_steps(optim.momentum(0.05, 0.9), jnp.array([1.0, -1.0]), quadratic_grad, 30)
    w, b = np.array([1.0, -1.0]), np.zeros(2)
    for t in range(30):
        b = 0.9 * b + quadratic_grad(w)
        w = w - 0.05 * b
        np.testing.assert_allclose(ours[t], w, rtol=1e-12, atol=1e-15)


def test_nesterov_equals_the_look_ahead_form_after_the_change_of_variables(x64):
    # Sutskever et al. (2013): v <- mass v - lr grad E(theta + mass v); theta <- theta + v.
    # Our iterates are the look-ahead points w = theta + mass v.
    lr, mass, steps = 0.1, 0.9, 40
    ours = run_steps(optim.nesterov(lr, mass), jnp.array([1.0, -1.0]), quadratic_grad, steps)
    theta, v = np.array([1.0, -1.0]), np.zeros(2)
    for t in range(steps):
        v = mass * v - lr * quadratic_grad(theta + mass * v)
        theta = theta + v
        np.testing.assert_allclose(ours[t], theta + mass * v, rtol=1e-12, atol=1e-15)
    # Nesterov and heavy-ball momentum really are different methods.
    heavy_ball = run_steps(optim.momentum(lr, mass), jnp.array([1.0, -1.0]), quadratic_grad, 5)
    assert not np.allclose(heavy_ball[-1], ours[4])


# --- convergence sweep: every optimizer x problem x dtype ---------------------------

_c, _s = np.cos(0.5), np.sin(0.5)
_ROTATION = np.array([[_c, -_s], [_s, _c]])

# name: (loss, start, minimiser, tolerance on ||w - w*||)
PROBLEMS = {
    "quadratic": (np.diag([1.0, 2.0]), [1.5, -1.0], [0.0, 0.0], 1e-4),
    # Rotated so the ill-conditioning is not aligned with the axes (which
    # per-entry methods such as Adam would remove for free); condition number 100.
    "ill-conditioned": (_ROTATION @ np.diag([1.0, 100.0]) @ _ROTATION.T, [1.0, 1.0], [0, 0], 1e-4),
    "rosenbrock": (None, [-1.2, 1.0], [1.0, 1.0], 1e-2),
}


def _loss(problem, w):
    hessian = PROBLEMS[problem][0]
    if hessian is None:
        return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
    return 0.5 * w @ jnp.asarray(hessian, w.dtype) @ w


def _rms_schedule(steps):
    # RMSprop without momentum ends in a +-lr oscillation: anneal it to converge.
    return schedules.cosine_decay(0.01, steps)


# optimizer: {problem: (make optimizer, steps)}
SWEEP = {
    "sgd": {
        "quadratic": (lambda: optim.sgd(0.3), 100),
        "ill-conditioned": (lambda: optim.sgd(0.015), 1_000),
        "rosenbrock": (lambda: optim.sgd(1e-3), 20_000),
    },
    "momentum": {
        "quadratic": (lambda: optim.momentum(0.1), 300),
        "ill-conditioned": (lambda: optim.momentum(0.01), 500),
        "rosenbrock": (lambda: optim.momentum(1e-3), 20_000),
    },
    "nesterov": {
        "quadratic": (lambda: optim.nesterov(0.1), 300),
        "ill-conditioned": (lambda: optim.nesterov(0.01), 500),
        "rosenbrock": (lambda: optim.nesterov(1e-3), 20_000),
    },
    "adagrad": {
        "quadratic": (lambda: optim.adagrad(0.5), 300),
        "ill-conditioned": (lambda: optim.adagrad(0.5), 1_000),
        "rosenbrock": (lambda: optim.adagrad(0.5), 20_000),
    },
    "rmsprop": {
        "quadratic": (lambda: optim.rmsprop(_rms_schedule(1_000)), 1_000),
        "ill-conditioned": (lambda: optim.rmsprop(_rms_schedule(2_000)), 2_000),
        "rosenbrock": (lambda: optim.rmsprop(_rms_schedule(5_000)), 5_000),
    },
    "adam": {
        "quadratic": (lambda: optim.adam(0.05), 500),
        "ill-conditioned": (lambda: optim.adam(0.05), 1_000),
        "rosenbrock": (lambda: optim.adam(0.01), 5_000),
    },
    "adamw": {
        # The quadratics' minimiser is 0, a fixed point of the decay too; on
        # Rosenbrock the decay shifts the minimiser, so it is kept small there.
        "quadratic": (lambda: optim.adamw(0.05), 500),
        "ill-conditioned": (lambda: optim.adamw(0.05), 1_000),
        "rosenbrock": (lambda: optim.adamw(0.01, weight_decay=1e-4), 5_000),
    },
}


def minimise(opt, loss, w0, steps):
    grad = jax.grad(loss)

    @jax.jit
    def run(w0):
        def body(carry, _):
            w, state = carry
            return opt.step(w, grad(w), state), None

        (w, state), _ = jax.lax.scan(body, (w0, opt.init(w0)), length=steps)
        return w, state

    return run(w0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_converges(name, problem, dtype):
    make, steps = SWEEP[name][problem]
    _, start, minimiser, tolerance = PROBLEMS[problem]
    # float32 runs in JAX's default 32-bit mode, float64 with x64 enabled.
    with jax.enable_x64(dtype == "float64"):
        w, state = minimise(make(), partial(_loss, problem), jnp.asarray(start, dtype), steps)
        assert w.dtype == jnp.dtype(dtype)
        assert int(state.count) == steps
        assert np.linalg.norm(np.asarray(w, np.float64) - minimiser) < tolerance


# --- behaviour every user relies on ---------------------------------------------------


def test_adagrad_step_shrinks_monotonically_under_a_constant_gradient():
    lr, g = 0.1, 2.0
    iterates = run_steps(optim.adagrad(lr), jnp.zeros(1, jnp.float32), lambda w: jnp.full(1, g), 50)
    w = np.concatenate([[0.0], np.asarray(iterates)[:, 0]])
    steps = -np.diff(w)
    assert np.all(np.diff(steps) < 0)
    # with G(t) = t g^2 the step is lr / sqrt(t)
    np.testing.assert_allclose(steps, lr / np.sqrt(np.arange(1, 51)), rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(exponent=st.floats(-6.0, 6.0), sign=st.sampled_from([-1.0, 1.0]))
def test_adam_first_step_has_size_learning_rate_whatever_the_gradient_scale(exponent, sign):
    lr = 1e-3
    opt = optim.adam(lr)
    w0 = jnp.ones(3, jnp.float32)
    g = jnp.asarray(sign * 10.0**exponent * np.array([1.0, 2.0, 0.5]), jnp.float32)
    w1, _ = opt.step(w0, g, opt.init(w0))
    # |step| = lr |g| / (|g| + eps): within 1 % of lr down to |g| = 1e-6 with eps = 1e-8.
    np.testing.assert_allclose(np.abs(np.asarray(w1 - w0)), lr, rtol=0.02)
    assert np.all(np.sign(np.asarray(w0 - w1)) == sign)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_zero_gradients_give_finite_steps(name):
    params = {"W": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
    iterates = run_steps(default_instance(name), params, partial(jax.tree.map, jnp.zeros_like), 5)
    for leaf, start in zip(jax.tree.leaves(iterates[-1]), jax.tree.leaves(params), strict=True):
        assert np.all(np.isfinite(leaf))
        if name != "adamw":  # adamw still decays the weights
            np.testing.assert_array_equal(leaf, start)


def nested_params(dtype=jnp.float32):
    return {
        "layers": (
            {"W": jnp.full((3, 2), 0.5, dtype), "b": jnp.zeros(2, dtype)},
            [jnp.arange(4.0, dtype=dtype), jnp.array(1.5, dtype)],
        ),
        "scale": jnp.ones((1, 1), dtype),
    }


def nested_grads(params):
    return jax.tree.map(lambda x: jnp.sin(3.0 * x) + 0.1, params)


def structure_and_types(tree):
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("enable_x64", [False, True])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_structure_and_dtypes_are_stable_across_steps(name, enable_x64):
    # Under x64, Python-float hyperparameters and a float64 schedule must still
    # not promote float32 parameters; float64 leaves stay float64 next to them.
    with jax.enable_x64(enable_x64):
        params = nested_params(jnp.float32)
        if enable_x64:
            params["scale"] = params["scale"].astype(jnp.float64)
        opt = getattr(optim, name)(schedules.exponential_decay(0.01, 0.5, 10))
        state0 = opt.init(params)
        state = state0
        for _ in range(3):
            new_params, state = opt.step(params, nested_grads(params), state)
            assert structure_and_types(new_params) == structure_and_types(params)
            assert structure_and_types(state) == structure_and_types(state0)
            params = new_params
        assert type(state) is type(state0)
        assert state.count.dtype == jnp.int32 and state.count.shape == ()
        assert int(state.count) == 3


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameters_keep_their_dtype_when_gradients_are_wider(name, x64):
    # A float64 gradient (say, from a float64 loss) must not turn float32
    # parameters or state into float64: a scan carry would change type.
    opt = default_instance(name)
    params = jnp.ones(3, jnp.float32)
    state = opt.init(params)
    new_params, new_state = opt.step(params, jnp.full(3, 0.5, jnp.float64), state)
    assert new_params.dtype == jnp.float32
    assert structure_and_types(new_state) == structure_and_types(state)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_flat_theta_and_pytree_follow_the_same_trajectory(name):
    params = nested_params()
    theta, unravel = purenet.ravel(params)
    opt = default_instance(name, learning_rate=0.05)
    tree_iterates = run_steps(opt, params, nested_grads, 5)
    flat_iterates = run_steps(opt, theta, lambda th: purenet.ravel(nested_grads(unravel(th)))[0], 5)
    for tree, flat in zip(tree_iterates, flat_iterates, strict=True):
        np.testing.assert_allclose(purenet.ravel(tree)[0], flat, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "learning_rate", [0.01, schedules.cosine_decay(0.01, 100)], ids=["number", "schedule"]
)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_jit_traces_once(name, learning_rate):
    opt = getattr(optim, name)(learning_rate)
    traces = []

    @jax.jit
    def train_step(params, state):
        traces.append(None)  # runs only while tracing
        return opt.step(params, nested_grads(params), state)

    params = nested_params()
    state = opt.init(params)
    for _ in range(3):
        params, state = train_step(params, state)
    assert len(traces) == 1


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_vmap_over_a_stack_of_parameter_sets_equals_a_loop(name):
    opt = getattr(optim, name)(schedules.exponential_decay(0.05, 0.5, 2))
    seeds = jax.random.split(jax.random.key(0), 4)
    stack = jax.vmap(lambda k: {"w": jax.random.normal(k, (3,)), "b": jnp.zeros(())})(seeds)
    stack = jax.tree.map(lambda x: x.astype(jnp.float32), stack)

    def three_steps(params):
        state = opt.init(params)
        for _ in range(3):
            params, state = opt.step(params, nested_grads(params), state)
        return params, state

    batched_params, batched_state = jax.vmap(three_steps)(stack)
    assert batched_state.count.shape == (4,)
    for i in range(4):
        one_params, one_state = three_steps(jax.tree.map(lambda x, i=i: x[i], stack))
        for a, b in zip(jax.tree.leaves(batched_params), jax.tree.leaves(one_params), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7)


def scan_steps(opt, params, n=6):
    """n steps in one lax.scan on nested_params; returns the final params."""

    def body(carry, _):
        p, state = carry
        return opt.step(p, nested_grads(p), state), None

    (final, _), _ = jax.lax.scan(body, (params, opt.init(params)), length=n)
    return final


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_vmap_over_the_learning_rate_equals_one_run_per_rate(name):
    # One compiled program for a learning-rate sweep: the rate is traced.
    params = nested_params()
    rates = jnp.array([0.01, 0.05, 0.2])
    swept = jax.jit(jax.vmap(lambda lr: scan_steps(getattr(optim, name)(lr), params)))(rates)
    for i, lr in enumerate(rates.tolist()):
        one = scan_steps(getattr(optim, name)(lr), params)
        for a, b in zip(jax.tree.leaves(swept), jax.tree.leaves(one), strict=True):
            assert a.dtype == b.dtype == jnp.float32  # a float64 sweep does not promote
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


HYPERPARAMETER_SWEEPS = [
    ("momentum", "mass", [0.0, 0.5, 0.9]),
    ("nesterov", "mass", [0.0, 0.5, 0.9]),
    ("adagrad", "eps", [1e-10, 1e-2, 1.0]),
    ("adagrad", "initial_accumulator", [0.0, 0.1, 1.0]),
    ("rmsprop", "decay", [0.0, 0.9, 0.99]),
    ("rmsprop", "eps", [1e-8, 1e-2, 1.0]),
    ("adam", "b1", [0.0, 0.8, 0.9]),
    ("adam", "b2", [0.5, 0.95, 0.999]),
    ("adam", "eps", [1e-8, 1e-2, 1.0]),
    ("adamw", "weight_decay", [0.0, 0.01, 0.5]),
]


@pytest.mark.parametrize(
    "name, argument, values",
    HYPERPARAMETER_SWEEPS,
    ids=[f"{n}-{a}" for n, a, _ in HYPERPARAMETER_SWEEPS],
)
def test_vmap_over_a_hyperparameter_equals_one_run_per_value(name, argument, values):
    params = nested_params()

    def make(value):
        return getattr(optim, name)(0.05, **{argument: value})

    swept = jax.jit(jax.vmap(lambda v: scan_steps(make(v), params)))(jnp.array(values))
    for i, value in enumerate(values):
        one = scan_steps(make(value), params)
        for a, b in zip(jax.tree.leaves(swept), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_scan_equals_a_python_loop(name):
    opt = getattr(optim, name)(schedules.linear_warmup(3, 0.05))
    params = nested_params()

    def body(carry, _):
        p, state = carry
        return opt.step(p, nested_grads(p), state), None

    (scanned, state), _ = jax.jit(lambda c: jax.lax.scan(body, c, length=8))(
        (params, opt.init(params))
    )
    looped = run_steps(opt, params, nested_grads, 8)[-1]
    assert int(state.count) == 8
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(looped), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_the_first_step_uses_the_schedule_at_count_zero():
    # lr = 1 for the first step only: the first step moves, the second does not.
    opt = optim.sgd(schedules.piecewise_constant([1], [1.0, 0.0]))
    first, second = run_steps(opt, jnp.zeros(2), lambda w: jnp.ones(2), 2)
    np.testing.assert_array_equal(first, [-1.0, -1.0])
    np.testing.assert_array_equal(second, first)


def test_any_callable_is_a_learning_rate_schedule():
    opt = optim.sgd(lambda count: 1.0 / (count + 1.0))
    iterates = run_steps(opt, jnp.zeros(1), lambda w: jnp.ones(1), 3)
    np.testing.assert_allclose(np.asarray(iterates)[:, 0], [-1.0, -1.5, -1.5 - 1 / 3], rtol=1e-6)


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: optim.sgd(-0.1), "learning_rate"),
        (lambda: optim.sgd(float("nan")), "learning_rate"),
        (lambda: optim.momentum(0.1, 1.0), "mass"),
        (lambda: optim.momentum(0.1, -0.1), "mass"),
        (lambda: optim.nesterov(0.1, 1.5), "mass"),
        (lambda: optim.adagrad(-1.0), "learning_rate"),
        (lambda: optim.adagrad(0.1, 0.0), "eps"),
        (lambda: optim.adagrad(0.1, initial_accumulator=-0.1), "initial_accumulator"),
        (lambda: optim.rmsprop(0.1, 1.0), "decay"),
        (lambda: optim.rmsprop(0.1, -0.5), "decay"),
        (lambda: optim.rmsprop(0.1, 0.9, -1e-8), "eps"),
        (lambda: optim.adam(0.1, 1.0), "b1"),
        (lambda: optim.adam(0.1, 0.9, -0.1), "b2"),
        (lambda: optim.adam(0.1, 0.9, 1.0), "b2"),
        (lambda: optim.adam(0.1, 0.9, 0.999, 0.0), "eps"),
        (lambda: optim.adamw(0.1, 0.9, 0.999, 1e-8, -1e-2), "weight_decay"),
        (lambda: optim.adamw(0.1, 1.5), "b1"),
    ],
)
def test_nonsense_hyperparameters_raise_at_construction(make, argument):
    with pytest.raises(ValueError, match=f"^{argument}: expected"):
        make()


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: optim.sgd("fast"), "learning_rate"),
        (lambda: optim.sgd(None), "learning_rate"),
        (lambda: optim.momentum(0.1, True), "mass"),
        (lambda: optim.adam(0.1, "0.9"), "b1"),
    ],
)
def test_non_numbers_are_type_errors(make, argument):
    with pytest.raises(TypeError, match=f"^{argument}: expected a real number"):
        make()


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: optim.sgd(jnp.array(-0.1)), "learning_rate"),
        (lambda: optim.sgd(jnp.array([0.1, 0.2])), "learning_rate"),
        (lambda: optim.momentum(0.1, jnp.array(1.0)), "mass"),
        (lambda: optim.adam(0.1, 0.9, jnp.array(1.5)), "b2"),
    ],
)
def test_concrete_arrays_are_checked_like_numbers(make, argument):
    with pytest.raises(ValueError, match=f"^{argument}: expected"):
        make()


def test_step_refuses_gradients_that_do_not_match_params():
    opt = optim.sgd(0.1)
    params = {"W": jnp.ones((2, 2)), "b": jnp.ones(2)}
    state = opt.init(params)
    with pytest.raises(ValueError, match="^grads: expected"):
        opt.step(params, {"W": jnp.ones((2, 2))}, state)
    with pytest.raises(ValueError, match="^grads: expected"):
        opt.step(params, {"W": jnp.ones((2, 2)), "b": jnp.ones(3)}, state)


def test_init_refuses_integer_parameters():
    with pytest.raises(ValueError, match="^params: expected"):
        optim.adam().init({"W": jnp.ones(3, jnp.int32)})
    with pytest.raises(TypeError, match="^params: expected an array"):
        optim.adam().init({"W": [1.0, 2.0]})


# --- documentation --------------------------------------------------------------------


@pytest.mark.parametrize("module", [optim, transforms, schedules], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


# --- optax's interface: update, apply_updates, chain ----------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_is_update_then_apply_updates(name):
    opt = default_instance(name, learning_rate=0.05)
    params = nested_params()
    state = opt.init(params)
    for _ in range(3):
        grads = nested_grads(params)
        updates, by_update = opt.update(grads, state, params)
        stepped, by_step = opt.step(params, grads, state)
        assert structure_and_types(updates) == structure_and_types(params)
        for a, b in zip(
            jax.tree.leaves((optim.apply_updates(params, updates), by_update)),
            jax.tree.leaves((stepped, by_step)),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        params, state = stepped, by_step


def test_update_needs_no_params_except_for_weight_decay():
    w = jnp.array([1.0, -2.0])
    opt = optim.adam(0.1)
    updates, _ = opt.update(jnp.array([0.5, 0.5]), opt.init(w))  # params=None
    np.testing.assert_allclose(updates, [-0.1, -0.1], rtol=1e-6)
    decay = optim.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="^params: expected the parameters"):
        decay.update(w, decay.init(w))


def test_adamw_is_the_chain_of_scale_by_adam_decay_and_learning_rate(x64):
    params = {"W": jnp.asarray(W0.reshape(2, 2)), "b": jnp.asarray(W0[:2])}
    mask = optim.decay_mask
    folded = optim.adamw(0.1, 0.8, 0.95, 1e-2, 0.05, mask=mask)
    chained = optim.as_optimizer(
        optim.chain(
            optim.scale_by_adam(0.8, 0.95, 1e-2),
            optim.add_decayed_weights(0.05, mask),
            optim.scale_by_learning_rate(0.1),
        )
    )
    fn = lambda p: jax.tree.map(lambda x: jnp.cos(x) - 0.2, p)  # noqa: E731
    ours, chain = run_steps(folded, params, fn, 5), run_steps(chained, params, fn, 5)
    for a, b in zip(ours, chain, strict=True):
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(u, v)


def test_decay_mask_is_nanogpts_ndim_rule_with_optional_exclusions():
    params = (
        {"W": jnp.ones((5, 3))},  # an embedding table: 2-D, decayed as in nanoGPT
        {"W": jnp.ones((3, 3, 2, 4)), "b": jnp.ones(4)},  # conv kernel and bias
        {"gamma": jnp.ones(4), "beta": jnp.ones(4)},  # a norm's gain and offset
        (),
    )
    assert optim.decay_mask(params) == (
        {"W": True},
        {"W": True, "b": False},
        {"gamma": False, "beta": False},
        (),
    )
    assert optim.decay_mask(params, exclude=("[0]",))[0] == {"W": False}


def test_masked_decay_leaves_the_unmasked_leaves_to_adam():
    params = {"W": jnp.full((2, 2), 3.0), "b": jnp.full(2, 3.0)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    opt = optim.adamw(0.1, weight_decay=0.5, mask=optim.decay_mask)
    new, _ = opt.step(params, zeros, opt.init(params))
    np.testing.assert_allclose(new["W"], 3.0 - 0.1 * 0.5 * 3.0, rtol=1e-6)
    np.testing.assert_array_equal(new["b"], params["b"])  # zero gradient, no decay


def test_chain_order_matters_and_is_left_to_right():
    g = jnp.array([3.0, 4.0])
    clip_then_scale = optim.chain(optim.clip_by_global_norm(1.0), optim.scale_by_learning_rate(2.0))
    scale_then_clip = optim.chain(optim.scale_by_learning_rate(2.0), optim.clip_by_global_norm(1.0))
    a, _ = clip_then_scale.update(g, clip_then_scale.init(g))
    b, _ = scale_then_clip.update(g, scale_then_clip.init(g))
    np.testing.assert_allclose(a, [-1.2, -1.6], rtol=1e-6)
    np.testing.assert_allclose(b, [-0.6, -0.8], rtol=1e-6)


def test_clip_is_elementwise():
    tx = optim.clip(1.0)
    g = jnp.array([-3.0, 0.5, 2.0])
    np.testing.assert_array_equal(tx.update(g, tx.init(g))[0], [-1.0, 0.5, 1.0])


def test_a_chain_runs_under_jit_vmap_and_scan_on_a_flat_theta():
    opt = optim.as_optimizer(
        optim.chain(optim.clip_by_global_norm(0.5), optim.adamw(0.05, mask=optim.decay_mask))
    )
    params = nested_params()
    theta, unravel = purenet.ravel(params)
    # decay_mask of a flat theta (1-D) decays nothing; compare with the tree without decay
    flat = optim.as_optimizer(
        optim.chain(optim.clip_by_global_norm(0.5), optim.adamw(0.05, weight_decay=0.0))
    )
    grad_theta = lambda th: purenet.ravel(nested_grads(unravel(th)))[0]  # noqa: E731
    np.testing.assert_allclose(
        run_steps(opt, theta, grad_theta, 6)[-1], run_steps(flat, theta, grad_theta, 6)[-1]
    )
    stack = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), params)
    batched = jax.jit(jax.vmap(lambda p: scan_steps(opt, p)))(stack)
    for i in range(2):
        one = scan_steps(opt, jax.tree.map(lambda x, i=i: x[i], stack))
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7)


# --- both directions with optax (skipped when optax is absent) -------------------------


@pytest.fixture(scope="module")
def optax():
    return pytest.importorskip("optax")


def optax_trajectory(tx, params, grad_fn, n):
    """n steps of the plain optax loop, written with optax's own functions."""
    import optax as _optax

    state, out = tx.init(params), []
    for _ in range(n):
        updates, state = tx.update(grad_fn(params), state, params)
        params = _optax.apply_updates(params, updates)
        out.append(params)
    return out


def assert_same_trajectory(ours, theirs, rtol):
    for a, b in zip(ours, theirs, strict=True):
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(u, v, rtol=rtol, atol=1e-14)


PAIRS = {
    "sgd": (lambda: optim.sgd(0.1), lambda o: o.sgd(0.1)),
    "adam": (lambda: optim.adam(0.1, 0.8, 0.95, 1e-3), lambda o: o.adam(0.1, 0.8, 0.95, 1e-3)),
    "adamw-mask": (
        lambda: optim.adamw(0.1, weight_decay=0.05, mask=optim.decay_mask),
        lambda o: o.adamw(0.1, weight_decay=0.05, mask=optim.decay_mask),
    ),
    "adamw-schedule": (
        lambda: optim.adamw(schedules.cosine_decay(0.1, 20), weight_decay=0.05),
        lambda o: o.adamw(o.cosine_decay_schedule(0.1, 20), weight_decay=0.05),
    ),
    "clip-momentum-torch-form": (
        # constant rate: Rumelhart's form equals the trace form (b = mass b + g, -lr b)
        lambda: optim.chain(optim.clip_by_global_norm(0.5), optim.momentum(0.1, 0.9)),
        lambda o: o.chain(o.clip_by_global_norm(0.5), o.sgd(0.1, momentum=0.9)),
    ),
    "trace-torch-form": (
        lambda: optim.chain(optim.trace(0.9), optim.scale_by_learning_rate(0.1)),
        lambda o: o.sgd(0.1, momentum=0.9),
    ),
    "trace-nesterov-torch-form": (
        lambda: optim.chain(optim.trace(0.9, nesterov=True), optim.scale_by_learning_rate(0.1)),
        lambda o: o.sgd(0.1, momentum=0.9, nesterov=True),
    ),
    "clip-decay-scale": (
        lambda: optim.chain(
            optim.clip(0.7),
            optim.add_decayed_weights(0.1, optim.decay_mask),
            optim.scale_by_learning_rate(0.2),
        ),
        lambda o: o.chain(
            o.clip(0.7), o.add_decayed_weights(0.1, optim.decay_mask), o.scale_by_learning_rate(0.2)
        ),
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_same_trajectory_as_optax_float64(name, optax, x64):
    ours, theirs = PAIRS[name]
    params = nested_params(jnp.float64)
    n = 20
    mine = run_steps(optim.as_optimizer(ours()), params, nested_grads, n)
    assert_same_trajectory(mine, optax_trajectory(theirs(optax), params, nested_grads, n), 1e-12)


def test_a_purenet_optimizer_inside_optax_chain(optax, x64):
    params = nested_params(jnp.float64)
    # Weight decay given explicitly: the defaults differ (torch's 1e-2 here, optax's 1e-4).
    adamw = optim.adamw(0.1, weight_decay=0.05, mask=optim.decay_mask)
    theirs = optax.chain(optax.clip_by_global_norm(0.5), adamw)
    ours = optim.chain(optim.clip_by_global_norm(0.5), adamw)
    reference = optax.chain(
        optax.clip_by_global_norm(0.5), optax.adamw(0.1, weight_decay=0.05, mask=optim.decay_mask)
    )
    mixed = optax_trajectory(theirs, params, nested_grads, 20)
    assert_same_trajectory(mixed, run_steps(optim.as_optimizer(ours), params, nested_grads, 20), 0)
    assert_same_trajectory(mixed, optax_trajectory(reference, params, nested_grads, 20), 1e-12)


def test_an_optax_transformation_is_an_optimizer_here(optax, x64):
    opt = optim.as_optimizer(optax.adam(0.05))
    params = nested_params(jnp.float64)
    assert_same_trajectory(
        run_steps(opt, params, nested_grads, 5),
        run_steps(optim.adam(0.05), params, nested_grads, 5),
        1e-12,
    )


def test_scale_by_sign_is_batch_manhattan():
    # Liao et al. 2016's Batch Manhattan: w <- w - lr * sign(g), 0 staying 0
    opt = optim.as_optimizer(optim.chain(optim.scale_by_sign(), optim.sgd(0.1)))
    params = {"W": jnp.array([1.0, 2.0, 3.0])}
    new, _ = opt.step(params, {"W": jnp.array([-30.0, 0.0, 1e-9])}, opt.init(params))
    np.testing.assert_allclose(new["W"], [1.1, 2.0, 2.9], rtol=1e-15)
    optax = pytest.importorskip("optax")
    grads = {"W": jnp.array([-2.0, 0.0, 0.5])}
    ours, _ = optim.scale_by_sign().update(grads, optim.scale_by_sign().init(params))
    theirs, _ = optax.scale_by_sign().update(grads, optax.scale_by_sign().init(params))
    np.testing.assert_array_equal(ours["W"], theirs["W"])
