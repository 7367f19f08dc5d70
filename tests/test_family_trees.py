"""The family-trees experiment (Rumelhart, Hinton & Williams 1986, Figs. 2-4):
its network, the first non-chain network of the experiments (two input
groups through ``parallel`` and ``fan_in_concat``), has a hand-written
gradient equal to ``jax.grad`` of its objective, for ``mse`` and for the
experiment's tolerance loss; the loss's own gradient is refereed too; and
the experiment runs in smoke mode and replots from its JSON."""

import jax
import jax.numpy as jnp
import numpy as np

import purenet
from experiments import family_trees
from purenet import datasets, losses
from tests.test_experiments_a import check_smoke_and_replot


def _data(dtype):
    ft = datasets.family_trees()
    x = (jnp.asarray(ft.person1, dtype), jnp.asarray(ft.relationship, dtype))
    return x, jnp.asarray(ft.targets, dtype)


def test_network_gradient_matches_autodiff(x64):
    model = family_trees.network()
    x, t = _data(jnp.float64)
    _, params, state = model.init(jax.random.key(1), family_trees.IN_SHAPE, jnp.float64)
    # Larger weights than at initialisation, so that outputs fall on both
    # sides of the tolerance band and the masked error is exercised.
    params = jax.tree.map(lambda w: 4.0 * w, params)
    for loss in (losses.mse, family_trees.TOLERANT_MSE):
        # jitted: op-by-op dispatch of this deep tree is many times slower
        J, grads = jax.jit(purenet.backprop(model, loss))(params, x, t, state=state)
        reference = jax.jit(jax.grad(purenet.objective(model, loss)))(params, x, t, state=state)
        assert jax.tree.structure(grads) == jax.tree.structure(reference)
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True):
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13)
        assert np.isfinite(J)
    y = model.forward(params, x, state=state)[0]
    inside = np.where(t > 0.5, y > family_trees.ON, y < family_trees.OFF)
    assert 0 < inside.mean() < 1


def test_tolerant_loss_gradient_and_values(x64):
    y = jax.random.uniform(jax.random.key(0), (50, 24), jnp.float64, 0.01, 0.99)
    t = (jax.random.uniform(jax.random.key(1), (50, 24)) < 0.1).astype(jnp.float64)
    loss = family_trees.TOLERANT_MSE
    np.testing.assert_allclose(loss.grad(y, t), jax.grad(loss.value)(y, t), rtol=1e-12)
    # zero inside the band, the distance to its edge outside
    y1 = jnp.array([[0.9, 0.1, 0.5, 0.5]])
    t1 = jnp.array([[1.0, 0.0, 1.0, 0.0]])
    np.testing.assert_allclose(loss.grad(y1, t1), [[0.0, 0.0, -0.3, 0.3]], atol=1e-15)


def test_decay_scales_every_weight_and_bias():
    params = ({"W": jnp.ones((3, 2)), "b": jnp.full((2,), 2.0)}, (), ({"W": -jnp.ones(4)},))
    decayed = family_trees.decay(params)
    for p, d in zip(jax.tree.leaves(params), jax.tree.leaves(decayed), strict=True):
        np.testing.assert_allclose(d, p * (1 - family_trees.DECAY), rtol=1e-6)


def test_correlations_find_a_planted_code():
    ft = datasets.family_trees()
    W = np.zeros((24, 6))
    W[:, 0] = np.asarray(ft.nationality)
    W[:, 1] = -np.asarray(ft.generation)
    W[:, 2] = np.where(np.asarray(ft.branch) == 0.5, 7.0, np.asarray(ft.branch))  # 3rd gen ignored
    corr = family_trees.correlations(W)
    np.testing.assert_allclose([corr[0, 0], corr[1, 1], corr[2, 2]], [1.0, -1.0, 1.0], atol=1e-12)
    assert np.all(corr[3:] == 0.0)  # constant weights: no correlation


def test_family_trees_smoke_run_and_replot(tmp_path, monkeypatch):
    record = check_smoke_and_replot("family_trees", tmp_path, monkeypatch, finite=False)
    numbers = record["numbers"]
    assert len(numbers["held_out_correct_half"]) == 2
    assert np.asarray(numbers["example"]["person_weights"]).shape == (24, 6)
