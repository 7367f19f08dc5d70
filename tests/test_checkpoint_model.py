"""`checkpoint.load(..., model=, x=)`: params checked against the model, and
a file that does not fit names the layer that owns the first differing leaf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purenet.layers as L
from purenet import checkpoint

X = jax.ShapeDtypeStruct((5, 4), jnp.float32)


def _net(out: int):
    model = L.serial(L.dense(8), L.relu(), L.dense(out))
    _, params, state = model.init(jax.random.key(0), (4,))
    return model, params, state


@pytest.fixture
def saved(tmp_path):
    model, params, state = _net(3)
    path = tmp_path / "run.npz"
    checkpoint.save(path, params, None, state, step=7)
    return path, model, params, state


def test_load_with_the_model_gives_the_saved_trees(saved):
    path, model, params, state = saved
    ckpt = checkpoint.load(path, params, None, state, model=model, x=X)
    assert ckpt.step == 7
    for a, b in zip(jax.tree.leaves(ckpt.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_file_of_another_model_names_the_layer(saved):
    path, _, _, state = saved
    other, other_params, _ = _net(2)
    with pytest.raises(
        ValueError,
        match=r"params differs from the template \(serial\[2\], "
        r"dense\(2\)\): leaf 2 \[2\]\['W'\] is float32\[8, 3\] in the file",
    ):
        checkpoint.load(path, other_params, None, state, model=other, x=X)


def test_a_template_that_does_not_fit_the_model_is_refused_first(saved):
    path, _, params, state = saved
    other, _, _ = _net(2)
    with pytest.raises(
        ValueError,
        match=r"params_like\[2\]\['W'\] \(serial\[2\], dense\(2\)\): "
        r"expected shape \(8, 2\), got \(8, 3\)",
    ):
        checkpoint.load(path, params, None, state, model=other, x=X)
    # before the file is read: a missing file does not matter
    with pytest.raises(ValueError, match=r"params_like\[2\]\['W'\]"):
        checkpoint.load(path.with_name("absent.npz"), params, None, state, model=other, x=X)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(model="net"), TypeError, "model: expected None or a purenet Layer, got str"),
        (dict(x=X), ValueError, "x: expected None unless model is given"),
    ],
)
def test_bad_model_arguments(saved, kwargs, error, message):
    path, _, params, state = saved
    with pytest.raises(error, match=message):
        checkpoint.load(path, params, None, state, **kwargs)
