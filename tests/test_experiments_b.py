"""Smoke tests of five experiments (output heads, batch sizes, optimizers,
vanishing gradients, regularisation): each runs in ``Mode.SMOKE`` through the
runner and is redrawn from its JSON without training (see
``test_experiments_a``); plus the hand-written gradients of the optimizer
experiment's 2-D surfaces, refereed by ``jax.grad``, and the regularization
experiment's single vmap over penalty strengths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import optimizers, regularization
from experiments._common import jit
from tests.test_experiments_a import check_smoke_and_replot

NAMES = ["output_heads", "batch_sizes", "optimizers", "vanishing_gradients"]


@pytest.mark.parametrize("name", NAMES)
def test_experiment_smoke_run_and_replot(name, tmp_path, monkeypatch):
    # Non-finite numbers are data here (the exploding runs): only the summary
    # must be finite.
    check_smoke_and_replot(name, tmp_path, monkeypatch, finite=False)


def test_regularization_smoke_sweeps_penalties_in_one_program(tmp_path, monkeypatch):
    """The smoke run, replotted; and every penalized configuration (no
    penalty, L2, clean labels) trained in ONE compiled program: the
    strengths are traced values of one ``purenet.penalty``."""
    compiled = []
    real = regularization.returning

    def counting(select):  # every sweep of the experiment compiles through returning
        return real(select, compile=lambda fn: compiled.append(fn) or jit(fn))

    monkeypatch.setattr(regularization, "returning", counting)
    record = check_smoke_and_replot("regularization", tmp_path, monkeypatch, finite=False)
    # penalized configurations, dropout, batch norm without and with
    assert len(compiled) == 4
    final = record["numbers"]["final"]
    assert {"none", "L2 1e-2", "dropout 0.5", "none (clean labels)"} <= set(final)
    # Same seeds, splits and inits: the penalty alone makes these two differ.
    assert final["none"]["test_loss"] != final["L2 1e-2"]["test_loss"]


@pytest.mark.parametrize("name", list(optimizers.SURFACES))
def test_surface_gradients_match_autodiff(name):
    f, grad, *_ = optimizers.SURFACES[name]
    points = jax.random.uniform(jax.random.key(0), (20, 2), jnp.float64, -2.0, 2.0)
    for p in points:
        np.testing.assert_allclose(grad(p), jax.grad(f)(p), rtol=1e-10, atol=1e-10)


def test_local_minimum_surface_has_a_shallow_local_minimum():
    f, grad, start, *_ = optimizers.SURFACES["local_minimum"]
    # The x-derivative changes sign from - to + around x = -0.795 on y = 0.
    assert grad(jnp.array([-0.85, 0.0], jnp.float64))[0] < 0 < grad(jnp.array([-0.75, 0.0]))[0]
    local = jnp.array([-0.795, 0.0], jnp.float64)
    barrier = jnp.array([-0.04, 0.0], jnp.float64)
    assert f(local) < f(barrier) < f(jnp.asarray(start, jnp.float64))
    assert f(jnp.array([3.0, 0.0], jnp.float64)) < f(local) - 0.5  # the deeper, global one


def _tiny_sweep_setup():
    from purenet import layers, losses

    model = layers.serial(layers.dense(3), layers.tanh(), layers.dense(2))
    x = jax.random.normal(jax.random.key(0), (8, 4), jnp.float32)
    t = jax.random.randint(jax.random.key(1), (8,), 0, 2)
    return model, losses.softmax_cross_entropy, x, t


def test_sweep_draws_per_seed_inside_the_program_as_a_run_of_its_own():
    """`draw` gives each seed its own data rows and init inside the program;
    the result is the run that `make_train` makes from the same draw."""
    from experiments._common import sweep
    from purenet import optim, train

    model, loss, x, t = _tiny_sweep_setup()
    opt = optim.sgd(0.1)

    def draw(key, point):
        rows_key, init_key, train_key = jax.random.split(key, 3)
        rows = jax.random.permutation(rows_key, 8)[:6]
        _, params, state = model.init(init_key, (4,))
        return {"key": train_key, "x": x[rows], "t": t[rows], "params": params, "state": state}

    keys = jax.random.split(jax.random.key(2), 3)
    params, _, history = sweep(
        model, loss, opt, 3, 2,
        lambda point: (point["x"], point["t"]),
        lambda point: (point["params"], point["state"]),
        keys, draw=draw, compile=jax.jit,
    )  # fmt: skip
    assert history["step_loss"].shape == (3, 2, 2)
    for s in (0, 2):
        d = draw(keys[s], {})
        run = train.make_train(model, loss, opt, 3, 6, 2)
        p, *_ = run(d["params"], opt.init(d["params"]), d["state"], d["key"], d["x"], d["t"])
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params), strict=True):
            np.testing.assert_allclose(a, b[s], rtol=1e-5, atol=1e-6)


def test_sweep_per_point_starts_in_sequence_are_the_runs_of_their_own_bit_for_bit():
    """Per-arm starting params: one program over the arms, `lax.map` over
    them, gives exactly what each arm's own sweep gives; a shared key and
    `every` (an evaluation every 2 epochs of 4) too."""
    from experiments._common import init_many, sweep
    from purenet import optim

    model, loss, x, t = _tiny_sweep_setup()
    opt = optim.sgd(0.1)
    starts = [init_many(model, jax.random.split(jax.random.key(k), 2), (4,)) for k in (3, 4)]
    both = jax.tree.map(lambda *a: np.stack(a), *starts)
    probe = lambda p, s, point: jnp.sum(p[0]["W"])  # noqa: E731
    common = dict(evaluate=probe, every=2, compile=jax.jit)
    key = jax.random.key(5)
    _, _, together = sweep(
        model, loss, opt, 4, 4, (x, t), both, key,
        start_per_point=True, points_in_sequence=True, **common,
    )  # fmt: skip
    assert together["evaluation"].shape == (2, 2, 2)  # (arms, seeds, evaluations)
    assert together["step_loss"].shape == (2, 2, 2, 2, 2)  # (arms, seeds, chunks, every, batches)
    for arm, start in enumerate(starts):
        _, _, alone = sweep(model, loss, opt, 4, 4, (x, t), start, key, **common)
        np.testing.assert_array_equal(alone["evaluation"], together["evaluation"][arm])
    with pytest.raises(ValueError, match="every"):
        sweep(model, loss, opt, 4, 4, (x, t), starts[0], key, every=3)


def test_sweep_returning_only_what_is_read_is_the_hand_written_run():
    """`compile=returning(select)`: the run returns `select(params, state,
    history)` alone, exactly what a vmapped `make_train` that returns only
    that computes (nothing else is left in the program)."""
    from experiments._common import returning, sweep
    from purenet import optim, train

    model, loss, x, t = _tiny_sweep_setup()
    opt = optim.sgd(0.1)
    probe = lambda p, s: jnp.sum(p[0]["W"])  # noqa: E731

    def draw(key, point):
        init_key, train_key = jax.random.split(key)
        _, params, state = model.init(init_key, (4,))
        return {"key": train_key, "params": params, "state": state}

    def one(key):
        d = draw(key, {})
        run = train.make_train(model, loss, opt, 4, 8, 2, evaluate=probe)
        *_, history = run(d["params"], opt.init(d["params"]), d["state"], d["key"], x, t)
        return history["evaluation"]

    keys = jax.random.split(jax.random.key(6), 3)
    mine = sweep(
        model, loss, opt, 4, 2, (x, t),
        lambda point: (point["params"], point["state"]),
        keys, draw=draw, evaluate=lambda p, s, point: probe(p, s),
        compile=returning(lambda p, s, h: h["evaluation"], compile=jax.jit),
    )  # fmt: skip
    assert mine.shape == (3, 2)
    np.testing.assert_array_equal(mine, jax.jit(jax.vmap(one))(keys))
