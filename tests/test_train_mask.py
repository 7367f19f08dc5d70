"""The padding mask through the training loops: `make_step`, `make_epoch`,
`make_train` and `fit` take `mask=` as the layers do, and slice its rows with
the batch's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purenet.layers as L
from purenet import data, losses, optim, train

LOSS = losses.sequence_softmax_cross_entropy
M, T, D, K = 6, 5, 8, 3
BATCH = 2


def _problem():
    model = L.serial(L.transformer_block(D, 2), L.dense(K))
    _, params, state = model.init(jax.random.key(0), (T, D), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (M, T, D), jnp.float64)
    lengths = jnp.array([5, 3, 4, 2, 5, 1])
    mask = jnp.arange(T)[None, :] < lengths[:, None]
    t = jax.random.randint(jax.random.key(2), (M, T), 0, K)
    t = jnp.where(mask, t, losses.IGNORE_LABEL)
    return model, params, state, x, t, mask


MODEL, PARAMS, STATE, X, TARGETS, MASK = _problem()
OPT = optim.adam(0.01)
# One compiled epoch for the tests below (a fresh jit per test would recompile).
EPOCH = jax.jit(train.make_epoch(MODEL, LOSS, OPT, BATCH, M))
STEP = jax.jit(train.make_step(MODEL, LOSS, OPT))


def _epoch(x, mask, seed=3):
    return EPOCH(PARAMS, OPT.init(PARAMS), STATE, jax.random.key(seed), x, TARGETS, mask=mask)


def test_epoch_slices_the_mask_with_the_batch():
    """An epoch equals its steps run one by one, each with its rows' masks."""
    key = jax.random.key(3)
    params, opt_state, state, losses_ = _epoch(X, MASK, 3)
    shuffle_key, step_key = jax.random.split(key)
    rows = data.batch_indices(shuffle_key, M, BATCH)
    p, o, s = PARAMS, OPT.init(PARAMS), STATE
    expected = []
    for r, k in zip(rows, jax.random.split(step_key, len(rows)), strict=True):
        p, o, s, J = STEP(p, o, s, X[r], TARGETS[r], k, mask=MASK[r])
        expected.append(J)
    np.testing.assert_allclose(losses_, np.array(expected), rtol=1e-12)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_masked_positions_do_not_reach_training():
    """With the mask, whatever sits at padded positions changes nothing;
    without it, the same change changes the trained params."""
    noise = 100.0 * jax.random.normal(jax.random.key(4), X.shape, X.dtype)
    x_other = jnp.where(MASK[..., None], X, noise)
    with_mask = _epoch(X, MASK)[0], _epoch(x_other, MASK)[0]
    for a, b in zip(*map(jax.tree.leaves, with_mask), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    without = _epoch(X, None)[0], _epoch(x_other, None)[0]
    differ = [not np.allclose(a, b) for a, b in zip(*map(jax.tree.leaves, without), strict=True)]
    assert any(differ)


def test_make_train_and_fit_take_the_mask():
    """`make_train` (under jit) and `fit` (with a masked validation set) give
    the same history for the same key."""
    epochs = 2
    run = jax.jit(train.make_train(MODEL, LOSS, OPT, BATCH, M, epochs))
    *_, history = run(PARAMS, OPT.init(PARAMS), STATE, jax.random.key(5), X, TARGETS, mask=MASK)
    result = train.fit(
        MODEL,
        LOSS,
        OPT,
        PARAMS,
        X,
        TARGETS,
        key=jax.random.key(5),
        epochs=epochs,
        batch_size=BATCH,
        mask=MASK,
        validation=(X, TARGETS, MASK),
    )
    np.testing.assert_allclose(result.history["step_loss"], history["step_loss"], rtol=1e-10)
    assert np.all(np.isfinite(result.history["val_loss"]))


def _fit(**changes):
    arguments = dict(key=jax.random.key(0), epochs=1, batch_size=BATCH, mask=MASK)
    arguments.update(changes)
    return train.fit(MODEL, LOSS, OPT, PARAMS, X, TARGETS, **arguments)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(mask=MASK.astype(jnp.int32)), "mask: expected a bool array"),
        (dict(mask=MASK[:4]), r"mask: expected a bool array of shape \(6, T\)"),
        (dict(mask=MASK[:, :3]), r"multi_head_attention\(2\)\): mask: expected"),
        (dict(validation=(X, TARGETS)), r"validation: expected \(x_val, t_val, mask_val\)"),
        (dict(validation=(X, TARGETS, MASK[:, :2])), r"multi_head_attention\(2\)\): mask"),
        (dict(validation=(X, TARGETS + 7, MASK)), r"validation\[1\]: expected labels"),
    ],
)
def test_fit_checks_the_mask_before_any_work(changes, message):
    with pytest.raises(ValueError, match=message):
        _fit(**changes)


def test_fit_accepts_ignored_sequence_labels():
    """The sequence loss's -1 (ignored step) is a valid label for `fit`'s checks."""
    assert (TARGETS == losses.IGNORE_LABEL).any()
    assert _fit().stopped is None
