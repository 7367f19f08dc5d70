"""purenet.custom_vjp: a purenet model or loss inside anyone's JAX program, with
``jax.grad`` running the hand-written backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import purenet
from purenet import layers as L
from purenet import losses
from purenet.layers import Layer

KEY = jax.random.key(0)


def mlp():
    return L.serial(L.dense(5), L.tanh(), L.dense(4), L.sigmoid(), L.dense(3))


def setup(model=None, in_shape=(4,), m=6, dtype=jnp.float64):
    model = mlp() if model is None else model
    k_init, k_x, k_t = jax.random.split(KEY, 3)
    _, params, state = model.init(k_init, in_shape, dtype)
    x = jax.random.normal(k_x, (m, *in_shape), dtype)
    return model, params, state, x


def huber(y, t, delta=1.0):
    """A loss purenet does not have, in plain jnp."""
    r = jnp.abs(y - t)
    return jnp.mean(jnp.sum(jnp.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta)), -1))


def assert_trees_close(a, b, rtol=1e-10, atol=1e-12):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# ------------------------------------------------------------------- layers


def test_check_grads_in_float64():
    model, params, _, x = setup()
    check_grads(purenet.custom_vjp(model), (params, x), order=1, modes=["rev"])


def test_grad_equals_backprop_and_autodiff_of_the_forward():
    model, params, _, x = setup()
    t = jax.random.normal(KEY, (6, 3), jnp.float64)
    f = purenet.custom_vjp(model)
    grads = jax.grad(lambda p: losses.mse.value(f(p, x), t))(params)
    _, expected = purenet.backprop(model, losses.mse)(params, x, t)
    assert_trees_close(grads, expected)
    reference = jax.grad(lambda p: losses.mse.value(model.forward(p, x)[0], t))(params)
    assert_trees_close(grads, reference)


def test_a_user_written_loss_through_the_hand_written_backward():
    model, params, _, x = setup()
    t = jax.random.normal(KEY, (6, 3), jnp.float64) * 3
    f = purenet.custom_vjp(model)

    def J(params, x, t):
        return huber(f(params, x), t)

    (dparams, dx) = jax.grad(J, argnums=(0, 1))(params, x, t)
    ref_dparams, ref_dx = jax.grad(lambda p, x: huber(model.forward(p, x)[0], t), argnums=(0, 1))(
        params, x
    )
    assert_trees_close(dparams, ref_dparams)
    assert_trees_close(dx, ref_dx)


def test_a_deliberately_wrong_backward_is_what_jax_grad_returns():
    def init(key, in_shape, dtype=jnp.float32):
        return in_shape, (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        return 2.0 * x, None

    def backward(params, cache, dy):
        return (), 3.0 * dy  # wrong on purpose: d(2x)/dx is 2

    doubled = Layer(init, forward, backward)
    f = purenet.custom_vjp(doubled)
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(f((), x), 2.0 * x)
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(f((), x)))(x), 3.0)
    np.testing.assert_array_equal(jax.jit(jax.grad(lambda x: jnp.sum(f((), x))))(x), 3.0)


def test_under_jit_vmap_and_scan():
    model, params, _, x = setup()
    t = jax.random.normal(KEY, (6, 3), jnp.float64)
    f = purenet.custom_vjp(model)

    def J(params, x, t):
        return huber(f(params, x), t)

    def reference(params, x, t):
        return huber(model.forward(params, x)[0], t)

    # jit
    assert_trees_close(jax.jit(jax.grad(J))(params, x, t), jax.grad(reference)(params, x, t))

    # vmap: per-example gradients (each example a batch of one)
    per_example = jax.vmap(jax.grad(J), in_axes=(None, 0, 0))(params, x[:, None], t[:, None])
    expected = jax.vmap(jax.grad(reference), in_axes=(None, 0, 0))(params, x[:, None], t[:, None])
    assert_trees_close(per_example, expected)

    # scan: a plain SGD training loop over the batch's rows
    def train(J):
        def step(params, row):
            xi, ti = row
            grads = jax.grad(J)(params, xi[None], ti[None])
            new = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
            return new, J(params, xi[None], ti[None])

        return jax.jit(lambda p: jax.lax.scan(step, p, (x, t)))(params)

    (trained, costs), (trained_ref, costs_ref) = train(J), train(reference)
    assert_trees_close(trained, trained_ref)
    assert_trees_close(costs, costs_ref)


def test_static_caches_survive_as_residuals_under_jit_and_vmap():
    # flatten caches a shape, fan_in_concat its split sizes: Python ints, not arrays.
    model = L.serial(
        L.flatten(),
        L.fan_out(2),
        L.parallel(L.dense(3), L.serial(L.dense(2), L.tanh())),
        L.fan_in_concat(),
        L.dense(2),
    )
    model, params, _, x = setup(model, in_shape=(2, 3))
    f = purenet.custom_vjp(model)
    check_grads(f, (params, x), order=1, modes=["rev"])
    J = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(f(p, x))), argnums=(0, 1)))
    ref = jax.grad(lambda p, x: jnp.sum(jnp.sin(model.forward(p, x)[0])), argnums=(0, 1))
    assert_trees_close(J(params, x), ref(params, x))
    batched = jax.vmap(J, in_axes=(None, 0))(params, jnp.stack([x, 2 * x]))
    assert_trees_close(jax.tree.map(lambda a: a[1], batched), ref(params, 2 * x))


def test_tuple_inputs_of_a_parallel_model():
    model = L.serial(L.parallel(L.dense(3), L.dense(2)), L.fan_in_concat(), L.dense(1))
    _, params, _ = model.init(KEY, ((4,), (2,)), jnp.float64)
    x = (jnp.ones((3, 4)), jnp.arange(6.0).reshape(3, 2))
    check_grads(purenet.custom_vjp(model), (params, x), order=1, modes=["rev"])


# ------------------------------------------------------------ integer inputs


def token_embedding(vocab: int, dim: int) -> Layer:
    """A minimal embedding with a hand-written backward (scatter-add of dy)."""

    def init(key, in_shape, dtype=jnp.float32):
        return (*in_shape, dim), {"W": jax.random.normal(key, (vocab, dim), dtype)}, ()

    def forward(params, ids, *, state=(), train=False, key=None, mask=None):
        return params["W"][ids], ids

    def backward(params, ids, dy):
        dW = jnp.zeros_like(params["W"]).at[ids.reshape(-1)].add(dy.reshape(-1, dy.shape[-1]))
        return {"W": dW}, None  # integer ids have no gradient

    return Layer(init, forward, backward)


def test_integer_inputs_get_float0_cotangents():
    model = L.serial(token_embedding(7, 3), L.flatten(), L.dense(2))
    _, params, _ = model.init(KEY, (4,), jnp.float64)
    ids = jnp.array([[0, 1, 2, 6], [6, 6, 3, 0]])
    f = purenet.custom_vjp(model)

    def J(params, ids):
        return jnp.sum(f(params, ids) ** 2)

    dparams, dids = jax.grad(J, argnums=(0, 1), allow_int=True)(params, ids)
    assert dids.dtype == jax.dtypes.float0 and dids.shape == ids.shape
    expected = jax.grad(lambda p: jnp.sum(model.forward(p, ids)[0] ** 2))(params)
    assert_trees_close(dparams, expected)
    check_grads(lambda p: f(p, ids), (params,), order=1, modes=["rev"])


def test_mixed_integer_and_float_tuple_input():
    model = L.serial(
        L.parallel(L.serial(token_embedding(5, 2), L.flatten()), L.dense(2)),
        L.fan_in_concat(),
        L.dense(1),
    )
    _, params, _ = model.init(KEY, ((3,), (4,)), jnp.float64)
    x = (jnp.array([[0, 4, 1], [2, 2, 3]]), jnp.ones((2, 4)))
    f = purenet.custom_vjp(model)
    dx = jax.grad(lambda x: jnp.sum(f(params, x)), allow_int=True)(x)
    assert dx[0].dtype == jax.dtypes.float0
    expected = jax.grad(lambda xf: jnp.sum(model.forward(params, (x[0], xf))[0]))(x[1])
    assert_trees_close(dx[1], expected)


# ---------------------------------------------------- state, train and keys


def test_dropout_key_is_an_argument_that_may_be_traced():
    model = L.serial(L.dense(5), L.tanh(), L.dropout(0.5), L.dense(2))
    model, params, _, x = setup(model)
    t = jax.random.normal(KEY, (6, 2), jnp.float64)
    f = purenet.custom_vjp(model, train=True)

    @jax.jit
    def grads(params, key):
        return jax.grad(lambda p: losses.mse.value(f(p, x, key=key), t))(params)

    for k in jax.random.split(KEY, 3):
        _, expected = purenet.backprop(model, losses.mse)(params, x, t, train=True, key=k)
        assert_trees_close(grads(params, k), expected)
    # the key is held constant: its cotangent is float0
    dkey = jax.grad(lambda k: jnp.sum(f(params, x, key=k)), allow_int=True)(KEY)
    assert dkey.dtype == jax.dtypes.float0
    # a different key, a different mask
    assert not np.allclose(f(params, x, key=jax.random.key(1)), f(params, x, key=jax.random.key(2)))


def test_batchnorm_state_in_both_modes():
    model = L.serial(L.dense(4), L.batchnorm(), L.tanh(), L.dense(2))
    model, params, state, x = setup(model)
    t = jax.random.normal(KEY, (6, 2), jnp.float64)

    train_f = purenet.custom_vjp(model, train=True, return_state=True)
    y, new_state = train_f(params, x, state)
    _, cache = model.forward(params, x, train=True)
    assert_trees_close(new_state, model.update_state(state, cache))

    def J(params, state):
        y, new_state = train_f(params, x, state)
        # the new state is an output that is not differentiated
        return losses.mse.value(y, t) + jnp.sum(new_state[1]["mean"])

    dparams, dstate = jax.jit(jax.grad(J, argnums=(0, 1)))(params, state)
    _, expected = purenet.backprop(model, losses.mse)(params, x, t, state=state, train=True)
    assert_trees_close(dparams, expected)
    assert all(np.all(leaf == 0) for leaf in jax.tree.leaves(dstate))

    eval_f = purenet.custom_vjp(model)
    check_grads(lambda p, x: eval_f(p, x, new_state), (params, x), order=1, modes=["rev"])
    dparams = jax.grad(lambda p: losses.mse.value(eval_f(p, x, new_state), t))(params)
    _, expected = purenet.backprop(model, losses.mse)(params, x, t, state=new_state)
    assert_trees_close(dparams, expected)


# -------------------------------------------------------------------- losses


@pytest.mark.parametrize(
    "loss, t",
    [
        (losses.mse, jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)),
        (losses.softmax_cross_entropy, jnp.array([0, 2, 1, 1])),
        (losses.softmax_cross_entropy, jax.nn.one_hot(jnp.array([0, 2, 1, 1]), 3)),
        (losses.multilabel_sigmoid_cross_entropy, (jnp.arange(12).reshape(4, 3) % 2) * 1.0),
    ],
)
def test_losses(loss, t):
    y = jax.random.normal(KEY, (4, 3), jnp.float64)
    J = purenet.custom_vjp(loss)
    np.testing.assert_allclose(J(y, t), loss.value(y, t))
    check_grads(lambda y: J(y, t), (y,), order=1, modes=["rev"])
    np.testing.assert_allclose(jax.grad(J)(y, t), loss.grad(y, t))
    # scaled by the incoming cotangent
    np.testing.assert_allclose(jax.grad(lambda y: 3.0 * J(y, t))(y), 3.0 * loss.grad(y, t))
    dt = jax.grad(J, argnums=1, allow_int=True)(y, t)
    assert dt.dtype == jax.dtypes.float0 if t.dtype.kind == "i" else np.all(dt == 0)


def test_model_and_loss_both_wrapped_equal_backprop():
    model, params, _, x = setup()
    t = jnp.array([0, 1, 2, 0, 1, 2])
    f = purenet.custom_vjp(model)
    J = purenet.custom_vjp(losses.softmax_cross_entropy)
    grads = jax.jit(jax.grad(lambda p: J(f(p, x), t)))(params)
    _, expected = purenet.backprop(model, losses.softmax_cross_entropy)(params, x, t)
    assert_trees_close(grads, expected)


def test_float32_in_float32_out():
    model, params, _, x = setup(dtype=jnp.float32)
    f = purenet.custom_vjp(model)
    grads = jax.grad(lambda p: jnp.sum(f(p, x)))(params)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(grads))


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [lambda x: x, (1, 2, 3), None, "mse"])
def test_neither_layer_nor_loss_is_a_type_error_naming_the_argument(bad):
    expected = r"^model_or_loss: expected a purenet Layer .* or a purenet Loss"
    with pytest.raises(TypeError, match=expected):
        purenet.custom_vjp(bad)


def test_bad_flags():
    with pytest.raises(TypeError, match=r"^train: expected a bool, got str"):
        purenet.custom_vjp(mlp(), train="yes")
    with pytest.raises(ValueError, match=r"^train: expected False for a Loss"):
        purenet.custom_vjp(losses.mse, train=True)
    with pytest.raises(ValueError, match=r"^return_state: expected False for a Loss"):
        purenet.custom_vjp(losses.mse, return_state=True)
