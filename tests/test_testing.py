"""purenet.testing: assertions, hypothesis strategies and the pytest plugin."""

import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from purenet import layers as L
from purenet import losses
from purenet.layers import Layer
from purenet.testing import assert_gradients, assert_layer, assert_vjp, strategies

pytest_plugins = ["pytester"]

KEY = jax.random.key(0)


def wrong_tanh() -> Layer:
    """tanh whose backward forgets the derivative: dx = dy."""
    good = L.tanh()
    return Layer(good.init, good.forward, lambda params, cache, dy: ((), dy))


def scaled_dense(n, scale) -> Layer:
    """dense whose dW is off by a factor (a subtle bug in one leaf only)."""
    good = L.dense(n)

    def backward(params, cache, dy):
        grads, dx = good.backward(params, cache, dy)
        return {"W": scale * grads["W"], "b": grads["b"]}, dx

    return Layer(good.init, good.forward, backward)


def batch(shape, dtype=jnp.float64, key=KEY):
    return jax.random.normal(key, shape, dtype)


# ---------------------------------------------------------------- assert_layer


@pytest.mark.parametrize(
    "layer, in_shape, ctx",
    [
        (L.dense(3), (4,), {}),
        (L.serial(L.dense(3), L.tanh()), (2, 4), {}),
        (L.serial(L.parallel(L.dense(2), L.sigmoid()), L.fan_in_concat()), ((3,), (2,)), {}),
        (L.dropout(0.5), (5,), {"train": True, "key": jax.random.key(3)}),
    ],
    ids=["dense", "sequence", "tuple input", "dropout"],
)
def test_assert_layer_passes_for_correct_layers(layer, in_shape, ctx):
    _, params, _ = layer.init(KEY, in_shape, jnp.float64)
    if isinstance(in_shape[0], tuple):
        x = tuple(batch((3, *s)) for s in in_shape)
    else:
        x = batch((3, *in_shape))
    assert_layer(layer, params, x, **ctx)


def test_assert_layer_passes_with_batchnorm_state_in_both_modes():
    layer = L.batchnorm()
    _, params, state = layer.init(KEY, (3,), jnp.float64)
    x = batch((5, 3))
    assert_layer(layer, params, x, state=state, train=True)
    assert_layer(layer, params, x, state=state)


def test_assert_layer_leaves_integer_inputs_out():
    def init(key, in_shape, dtype=jnp.float32):
        return (*in_shape, 2), {"W": jax.random.normal(key, (5, 2), dtype)}, ()

    def forward(params, ids, *, state=(), train=False, key=None):
        return params["W"][ids], ids

    def backward(params, ids, dy):
        return {"W": jnp.zeros_like(params["W"]).at[ids].add(dy)}, None

    embedding = Layer(init, forward, backward)
    _, params, _ = embedding.init(KEY, (), jnp.float64)
    assert_layer(embedding, params, jnp.array([0, 3, 3, 4]))


def test_assert_layer_reports_the_worst_entry_of_a_wrong_backward():
    x = batch((2, 3))
    with pytest.raises(AssertionError) as info:
        assert_layer(wrong_tanh(), (), x)
    message = str(info.value)
    assert message.startswith("layer: hand-written gradient is wrong")
    assert "FAILED" in message and "worst entries:" in message
    line = re.search(
        r"\['x'\]\[(\d), (\d)\]: hand-written (\S+), jax.vjp (\S+), finite diff (\S+)", message
    )
    assert line, message
    i, j = int(line[1]), int(line[2])
    hand, vjp, numeric = (float(line[k]) for k in (3, 4, 5))
    # the three values are those of the entry named: dy, and dy * (1 - tanh(x)**2)
    dy = jax.random.normal(jax.random.split(KEY, 1)[0], (2, 3), jnp.float64)
    np.testing.assert_allclose(hand, dy[i, j], rtol=1e-7)
    np.testing.assert_allclose(vjp, dy[i, j] * (1 - jnp.tanh(x[i, j]) ** 2), rtol=1e-7)
    np.testing.assert_allclose(numeric, vjp, rtol=1e-5)


def test_assert_layer_names_a_backward_of_the_wrong_structure():
    good = L.dense(2)
    broken = Layer(good.init, good.forward, lambda p, c, dy: good.backward(p, c, dy)[0])
    _, params, _ = broken.init(KEY, (3,), jnp.float64)
    with pytest.raises(ValueError, match=r"^layer.backward: expected a tuple of 2 cotangents"):
        assert_layer(broken, params, batch((2, 3)))


# ------------------------------------------------------------ assert_gradients


def mlp_point(model, dtype=jnp.float64):
    _, params, _ = model.init(KEY, (4,), dtype)
    x = batch((5, 4), dtype)
    t = jnp.array([0, 1, 2, 1, 0])
    return params, x, t


def test_assert_gradients_passes_for_purenet_models():
    model = L.serial(L.dense(3), L.tanh(), L.dense(3))
    params, x, t = mlp_point(model)
    assert_gradients(model, losses.softmax_cross_entropy, params, x, t)


def test_assert_gradients_names_the_wrong_leaf_and_its_worst_entry():
    model = L.serial(L.dense(3), L.tanh(), scaled_dense(3, 1.5))
    params, x, t = mlp_point(model)
    with pytest.raises(AssertionError) as info:
        assert_gradients(model, losses.softmax_cross_entropy, params, x, t)
    message = str(info.value)
    worst = message.split("worst entries:")[1]
    assert "[2]['W'][" in worst and "[0]['W']" not in worst and "['b']" not in worst, message
    values = re.search(r"hand-written (\S+), jax.grad (\S+),", worst).groups()
    hand, grad = (float(v) for v in values)
    np.testing.assert_allclose(hand, 1.5 * grad, rtol=1e-6)


def test_assert_gradients_float32_uses_the_float32_tolerance():
    model = L.serial(L.dense(3), L.tanh(), L.dense(3))
    params, x, t = mlp_point(model, jnp.float32)
    assert_gradients(model, losses.softmax_cross_entropy, params, x, t)


@pytest.mark.parametrize("where", ["x", "params"])
def test_a_nan_is_named_not_blamed_on_the_gradient(where):
    model = L.serial(L.dense(3), L.tanh(), L.dense(3))
    params, x, t = mlp_point(model)
    if where == "x":
        x = x.at[1, 2].set(jnp.nan)
    else:
        params = (params[0], (), {**params[2], "b": params[2]["b"].at[0].set(jnp.nan)})
    with pytest.raises(AssertionError) as info:
        assert_gradients(model, losses.softmax_cross_entropy, params, x, t)
    first = str(info.value).splitlines()[0]
    label = "the input x" if where == "x" else "the params"
    expected = f"model: non-finite values (NaN or inf) entered at {label} (1 of"
    assert first.startswith(expected), first
    assert "hand-written gradient is wrong" not in str(info.value)
    if where == "x":
        with pytest.raises(AssertionError, match=r"^layer: non-finite values .* the input x"):
            assert_layer(L.tanh(), (), x)


def test_a_float32_failure_says_float32_and_points_to_the_x64_fixture():
    x = batch((2, 3), jnp.float32)
    with pytest.raises(AssertionError) as info:
        assert_layer(wrong_tanh(), (), x)
    first = str(info.value).splitlines()[0]
    assert first.startswith("layer: hand-written gradient is wrong (checked in float32")
    assert "x64 fixture of purenet.testing.plugin" in first


def test_assert_layer_passes_the_mask_to_the_forward():
    layer = L.multi_head_attention(2, causal=True)
    _, params, _ = layer.init(KEY, (4, 4), jnp.float64)
    mask = jnp.array([[True, True, True, False], [True, True, False, False]])
    assert_layer(layer, params, batch((2, 4, 4)), mask=mask)


def test_tolerance_must_name_both_checks():
    with pytest.raises(ValueError, match=r"^tolerance: expected None or a dict"):
        assert_vjp(jnp.sin, lambda x, ct: (ct * jnp.cos(x),), jnp.ones(2), tolerance={"a": 1})


# ------------------------------------------------------------------ assert_vjp


def f_tanh(w, x):
    return jnp.tanh(x @ w)


def f_tanh_vjp(w, x, ct):
    delta = ct * (1 - jnp.tanh(x @ w) ** 2)
    return x.T @ delta, delta @ w.T


def test_assert_vjp_passes_for_a_correct_vjp():
    assert_vjp(f_tanh, f_tanh_vjp, batch((3, 2)), batch((4, 3), key=jax.random.key(1)))


def test_assert_vjp_with_pytree_primals_outputs_and_integer_primals():
    def f(params, ids):
        h = params["E"][ids]
        return {"h": h, "s": jnp.sum(jnp.sin(h), axis=-1)}

    def vjp(params, ids, ct):
        h = params["E"][ids]
        dh = ct["h"] + ct["s"][..., None] * jnp.cos(h)
        return {"E": jnp.zeros_like(params["E"]).at[ids].add(dh)}, None

    assert_vjp(f, vjp, {"E": batch((4, 3))}, jnp.array([1, 1, 3]))


def test_assert_vjp_reports_with_the_functions_parameter_names():
    def wrong(w, x, ct):
        dw, dx = f_tanh_vjp(w, x, ct)
        return dw, 2 * dx

    with pytest.raises(AssertionError) as info:
        assert_vjp(f_tanh, wrong, batch((3, 2)), batch((4, 3), key=jax.random.key(1)))
    message = str(info.value)
    assert message.startswith("f_tanh: hand-written gradient is wrong")
    worst = message.split("worst entries:")[1]
    assert "['x'][" in worst and "['w']" not in worst


@pytest.mark.parametrize(
    "vjp, got",
    [
        (lambda w, x, ct: f_tanh_vjp(w, x, ct)[0], r"got an array of shape \(3, 2\)"),
        (lambda w, x, ct: f_tanh_vjp(w, x, ct)[:1], r"got tuple of length 1"),
        (lambda w, x, ct: (f_tanh_vjp(w, x, ct)[0].T, x), r"got shape \(2, 3\) in cotangent 0"),
        (lambda w, x, ct: ([w], x), r"got list in cotangent 0"),
    ],
    ids=["not a tuple", "too short", "wrong shape", "wrong structure"],
)
def test_assert_vjp_names_vjp_when_its_output_does_not_match_the_primals(vjp, got):
    with pytest.raises(ValueError, match=r"^vjp: expected a tuple of 2 cotangents.*" + got):
        assert_vjp(f_tanh, vjp, batch((3, 2)), batch((4, 3)))


def test_assert_vjp_bad_arguments():
    with pytest.raises(TypeError, match=r"^vjp: expected a function, got int"):
        assert_vjp(jnp.sin, 3, jnp.ones(2))
    with pytest.raises(ValueError, match=r"^primals: expected at least one primal"):
        assert_vjp(jnp.sin, lambda ct: ())


# ------------------------------------------------------------------ strategies


SETTINGS = settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@SETTINGS
@given(strategies.problems(models=strategies.chain_models()))
def test_backprop_is_the_gradient_of_random_chains(problem):
    assert_gradients(
        problem.model, problem.loss, problem.params, problem.x, problem.t, state=problem.state
    )


@SETTINGS
@given(strategies.problems(models=strategies.non_chain_models()))
def test_backprop_is_the_gradient_of_random_non_chain_networks(problem):
    assert_gradients(
        problem.model, problem.loss, problem.params, problem.x, problem.t, state=problem.state
    )


@settings(max_examples=25, deadline=None, derandomize=True)
@given(strategies.mlps() | strategies.chain_models() | strategies.non_chain_models())
def test_an_architecture_is_the_expression_that_builds_it(arch):
    rebuilt = eval(arch.expression, {name: getattr(L, name) for name in L.__all__})  # noqa: S307
    shape, params, _ = rebuilt.init(KEY, arch.in_shape, jnp.float64)
    assert tuple(shape) == arch.out_shape
    assert jax.tree.structure(params) == jax.tree.structure(arch.model.init(KEY, arch.in_shape)[1])
    assert repr(arch).startswith(f"Architecture({arch.expression}")


@settings(max_examples=10, deadline=None, derandomize=True)
@given(strategies.mlps().flatmap(lambda a: strategies.inputs_for(a).map(lambda i: (a, i))))
def test_inputs_for_matches_the_model(drawn):
    arch, inputs = drawn
    y, _ = arch.model.forward(inputs.params, inputs.x)
    assert y.shape[1:] == arch.out_shape and y.dtype == jnp.float64


def test_without_hypothesis_the_assertions_still_work():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["hypothesis"] = None  # as if it were not installed
        import jax.numpy as jnp
        from purenet.testing import assert_vjp
        assert_vjp(jnp.sin, lambda x, ct: (ct * jnp.cos(x),), jnp.ones(3))
        try:
            from purenet.testing import strategies
        except ImportError as error:
            assert "needs hypothesis" in str(error), error
            print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------- plugin


PLUGIN_TESTS = """
import jax
import jax.numpy as jnp
import pytest
from purenet import layers as L

def test_x64_is_on(x64):
    assert jax.config.read("jax_enable_x64")
    assert jnp.ones(2, jnp.float64).dtype == jnp.float64

def test_x64_was_restored():
    assert jax.config.read("jax_enable_x64") == {before}

def test_prng_key(prng_key):
    expected = jax.random.key_data(jax.random.key({seed}))
    assert jax.random.key_data(prng_key).tolist() == expected.tolist()

def test_gradient_check_layer(gradient_check):
    layer = L.serial(L.dense(3), L.tanh())
    _, params, _ = layer.init(jax.random.key(0), (2,), jnp.float64)
    gradient_check.layer(layer, params, jnp.ones((4, 2), jnp.float64))
    gradient_check.vjp(jnp.sin, lambda x, ct: (ct * jnp.cos(x),), jnp.ones(3))

def test_gradient_check_catches_a_wrong_layer(gradient_check):
    good = L.tanh()
    wrong = L.Layer(good.init, good.forward, lambda p, c, dy: ((), dy))
    with pytest.raises(AssertionError, match="worst entries"):
        gradient_check.layer(wrong, (), jnp.ones((4, 2)))
"""


@pytest.fixture
def restore_x64():
    previous = jax.config.read("jax_enable_x64")
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("before", [False, True])
def test_plugin_fixtures(pytester, restore_x64, before):
    jax.config.update("jax_enable_x64", before)
    pytester.makepyfile(PLUGIN_TESTS.format(before=before, seed=7))
    result = pytester.runpytest("-p", "no:cacheprovider", "--purenet-seed", "7", "-q")
    result.assert_outcomes(passed=5)
    assert jax.config.read("jax_enable_x64") == before


def test_plugin_is_registered_by_entry_point(pytester):
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*fixtures defined from purenet.testing.plugin*", "x64*"])


# ----------------------------------------------------------------------- guide


def test_the_your_own_layer_guide_runs_as_written(restore_x64):
    """docs/guides/your_own_layer.md: every Python block, in order, then its tests."""
    from pathlib import Path

    from purenet.testing.plugin import GradientCheck

    text = (Path(__file__).parent.parent / "docs/guides/your_own_layer.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 6
    namespace: dict = {}
    exec(compile("\n".join(blocks), "your_own_layer.md", "exec"), namespace)  # noqa: S102
    check = GradientCheck(jax.random.key(0))
    namespace["test_swish_backward"](check, jax.random.key(0))
    namespace["test_scale_shift_backward"](check, jax.random.key(0))
    namespace["test_swish_in_random_batches"]()
