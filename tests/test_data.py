"""Specification of purenet.data: one-hot targets, standardization, splits, batches."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purenet import data

KEY = jax.random.key(0)


def rows_as_ids(m, features=2):
    """Inputs whose row i is filled with i, and targets 10 * i: rows can be traced."""
    ids = np.arange(m, dtype=np.float32)
    return np.repeat(ids[:, None], features, axis=1), 10 * ids[:, None]


# ----------------------------------------------------------------------------- one_hot


def test_one_hot_known_answer():
    np.testing.assert_array_equal(
        data.one_hot(jnp.array([2, 0, 1]), 3),
        [[0, 0, 1], [1, 0, 0], [0, 1, 0]],
    )


def test_one_hot_dtype_and_shape():
    assert data.one_hot(np.array([0, 1]), 4).dtype == jnp.float32
    assert data.one_hot([0, 1], 4, dtype=jnp.float64).dtype == jnp.float64
    assert data.one_hot(jnp.zeros((2, 3), jnp.int32), 5).shape == (2, 3, 5)


def test_one_hot_every_row_sums_to_one():
    labels = jnp.arange(50) % 7
    np.testing.assert_array_equal(data.one_hot(labels, 7).sum(axis=1), np.ones(50))


@pytest.mark.parametrize(
    "labels, match",
    [
        ([0, 3], r"labels: expected integers in \[0, 3\), got 3 at index 1"),
        ([-1, 0], r"labels: expected integers in \[0, 3\), got -1 at index 0"),
        (np.array([0, 2**40]), r"got 1099511627776"),  # not wrapped into int32 range
        ([0.0, 1.0], r"labels: expected integer class labels, got dtype float"),
        ([True, False], r"labels: expected integer class labels, got dtype bool"),
    ],
)
def test_one_hot_refuses_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        data.one_hot(labels, 3)


def test_one_hot_refuses_bad_arguments():
    with pytest.raises(ValueError, match="num_classes: expected a positive integer, got 0"):
        data.one_hot([0], 0)
    with pytest.raises(ValueError, match="dtype: expected float32 or float64"):
        data.one_hot([0], 2, dtype=jnp.int32)


def test_one_hot_under_jit_marks_out_of_range_labels_with_nan():
    # Tracers hold no values to check; NaN makes the loss fail loudly instead of
    # training on an all-zero target.
    rows = jax.jit(data.one_hot, static_argnums=1)(jnp.array([1, 5]), 3)
    np.testing.assert_array_equal(rows[0], [0, 1, 0])
    assert np.all(np.isnan(rows[1]))


# ------------------------------------------------------------------------- standardize


def test_standardize_fit_gives_training_mean_zero_and_std_one():
    x = jax.random.normal(KEY, (200, 3), jnp.float32) * jnp.array([1, 10, 0.1], jnp.float32) + 5
    z = data.standardize_apply(data.standardize_fit(x), x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-5)
    assert z.dtype == jnp.float32


def test_standardize_applies_training_statistics_to_other_splits():
    train = np.array([[0.0, 10.0], [2.0, 30.0]])
    test = np.array([[4.0, 20.0]])
    stats = data.standardize_fit(train)
    np.testing.assert_allclose(stats.mean, [1.0, 20.0])
    np.testing.assert_allclose(stats.std, [1.0, 10.0])
    np.testing.assert_allclose(data.standardize_apply(stats, test), [[3.0, 0.0]])


def test_standardize_constant_feature_divides_by_one_and_gives_zero():
    # 0.1 is not representable: the rounded mean of the column is not exactly 0.1,
    # which a plain std == 0 test would miss.
    x = np.stack([np.full(7, 0.1, np.float32), np.arange(7, dtype=np.float32)], axis=1)
    stats = data.standardize_fit(x)
    assert float(stats.std[0]) == 1.0
    z = data.standardize_apply(stats, x)
    assert np.all(np.isfinite(z))
    np.testing.assert_array_equal(z[:, 0], 0)
    np.testing.assert_allclose(data.standardize_apply(stats, [[1.1, 3.0]])[0, 0], 1.0)


def test_standardize_keeps_dtype_and_inverts():
    x = jax.random.normal(KEY, (20, 2), jnp.float64)
    stats = data.standardize_fit(x)
    z = data.standardize_apply(stats, x)
    assert z.dtype == jnp.float64
    np.testing.assert_allclose(data.standardize_invert(stats, z), x, rtol=1e-12)


def test_standardize_refuses_bad_input():
    with pytest.raises(ValueError, match="x: expected finite values, got 1 NaN or inf"):
        data.standardize_fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="x: expected float32 or float64 data"):
        data.standardize_fit(np.array([[1], [2]]))
    stats = data.standardize_fit(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"x: expected rows of shape \(2,\) \(as fitted\)"):
        data.standardize_apply(stats, np.ones((3, 4)))
    with pytest.raises(ValueError, match="stats: expected a Standardizer"):
        data.standardize_apply((0.0, 1.0), np.ones((3, 2)))


# ------------------------------------------------------------------------------- split


def test_split_sizes_disjointness_and_coverage():
    x, t = rows_as_ids(100)
    parts = data.split(KEY, x, t)
    assert [len(px) for px, _ in parts] == [60, 20, 20]
    ids = np.concatenate([np.asarray(px[:, 0]) for px, _ in parts])
    np.testing.assert_array_equal(np.sort(ids), np.arange(100))  # disjoint and complete
    for px, pt in parts:  # targets travel with their inputs
        np.testing.assert_array_equal(pt, 10 * px[:, :1])


def test_split_is_shuffled_and_determined_by_the_key():
    x, t = rows_as_ids(50)
    (a, _), _, _ = data.split(KEY, x, t)
    (b, _), _, _ = data.split(KEY, x, t)
    (c, _), _, _ = data.split(jax.random.key(1), x, t)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(np.asarray(a[:, 0]), np.arange(30))


def test_split_with_other_fractions_and_rounding():
    x, t = rows_as_ids(7)
    assert [len(px) for px, _ in data.split(KEY, x, t, (0.5, 0.5))] == [4, 3]
    assert [len(px) for px, _ in data.split(KEY, x, t)] == [4, 2, 1]


@pytest.mark.parametrize("fractions", [(0.6, 0.2), (0.5, 0.6, -0.1), (1.0, 0.0), (), "abc"])
def test_split_refuses_bad_fractions(fractions):
    x, t = rows_as_ids(10)
    with pytest.raises(ValueError, match="fractions: expected positive numbers that sum to 1"):
        data.split(KEY, x, t, fractions)


def test_split_refuses_empty_parts_mismatched_rows_and_bad_keys():
    x, t = rows_as_ids(10)
    with pytest.raises(ValueError, match=r"every part at least one .*part sizes \(10, 0\)"):
        data.split(KEY, x, t, (0.99, 0.01))
    with pytest.raises(ValueError, match=r"t: expected the same number of rows as x \(10\)"):
        data.split(KEY, x, t[:9])
    with pytest.raises(ValueError, match="key: expected a single jax.random key"):
        data.split(0, x, t)
    with pytest.raises(ValueError, match="x: expected finite values"):
        data.split(KEY, np.full((10, 2), np.inf), t)


def test_split_sizes_known_answers():
    assert data.split_sizes(100) == (60, 20, 20)
    assert data.split_sizes(7) == (4, 2, 1)
    assert data.split_sizes(7, (0.5, 0.5)) == (4, 3)
    assert data.split_sizes(5, (1.0,)) == (5,)


@settings(max_examples=50, deadline=None)
@given(
    m=st.integers(1, 10_000),
    weights=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5),
)
def test_split_sizes_property_add_up_and_stay_within_one_of_the_fractions(m, weights):
    fractions = [w / sum(weights) for w in weights]
    try:
        sizes = data.split_sizes(m, fractions)
    except ValueError as error:  # only when a part would be empty
        assert "part sizes" in str(error)
        assert min(f * m for f in fractions) < 1
        return
    assert sum(sizes) == m and min(sizes) >= 1
    assert all(abs(n - f * m) <= 1 for n, f in zip(sizes, fractions, strict=True))


# ---------------------------------------------------------------------------- batching


def test_when_batch_size_divides_m_every_example_appears_exactly_once():
    idx = data.batch_indices(KEY, 10, 5)
    assert idx.shape == (2, 5) and idx.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(idx.ravel()), np.arange(10))


def test_drop_rule_when_batch_size_does_not_divide_m():
    # m = 10, k = 3: m // k = 3 batches; the m mod k = 1 example left at the end
    # of the permutation is dropped for that epoch.
    epochs = [np.asarray(data.batch_indices(jax.random.key(e), 10, 3)) for e in range(40)]
    dropped = []
    for idx in epochs:
        assert idx.shape == (3, 3)
        assert len(set(idx.ravel())) == 9  # at most once per epoch
        dropped.extend(set(range(10)) - set(idx.ravel()))
    # A fresh permutation each epoch drops a different example, so every
    # example is trained on over the epochs.
    assert len(set(dropped)) > 5
    assert data.num_batches(10, 3) == 3


def test_keep_remainder_completes_the_last_batch_from_the_same_permutation():
    idx = np.asarray(data.batch_indices(KEY, 10, 3, drop_remainder=False))
    assert idx.shape == (4, 3) and data.num_batches(10, 3, drop_remainder=False) == 4
    counts = collections.Counter(idx.ravel())
    assert set(counts) == set(range(10))  # every example at least once
    assert sorted(counts.values()) == [1] * 8 + [2] * 2  # k - m mod k seen twice
    np.testing.assert_array_equal(idx[-1, 1:], idx[0, :2])


def test_batch_gradient_descent_and_sgd_are_the_extreme_batch_sizes():
    full = np.asarray(data.batch_indices(KEY, 10, 10))  # batch GD: one batch of all m
    assert full.shape == (1, 10)
    np.testing.assert_array_equal(np.sort(full[0]), np.arange(10))
    single = np.asarray(data.batch_indices(KEY, 10, 1))  # SGD: m batches of one
    assert single.shape == (10, 1)
    np.testing.assert_array_equal(np.sort(single[:, 0]), np.arange(10))


def test_batch_indices_same_key_same_epoch_different_key_different():
    first = data.batch_indices(KEY, 10, 3)
    np.testing.assert_array_equal(first, data.batch_indices(jax.random.key(0), 10, 3))
    assert not np.array_equal(first, data.batch_indices(jax.random.key(1), 10, 3))
    # Legacy raw keys work too.
    assert data.batch_indices(jax.random.PRNGKey(0), 10, 3).shape == (3, 3)


@pytest.mark.parametrize(
    "batch_size, match",
    [
        (0, "batch_size: expected a positive integer, got 0"),
        (11, r"batch_size: expected an integer in \[1, 10\]"),
        (2.0, "batch_size: expected a positive integer, got 2.0"),
    ],
)
def test_batch_indices_refuses_bad_batch_sizes(batch_size, match):
    with pytest.raises(ValueError, match=match):
        data.batch_indices(KEY, 10, batch_size)


def test_batch_indices_refuses_bad_keys_and_sizes():
    with pytest.raises(ValueError, match="key: expected a single jax.random key"):
        data.batch_indices(42, 10, 2)
    with pytest.raises(ValueError, match="key: expected a single jax.random key"):
        data.batch_indices(jax.random.split(KEY, 3), 10, 2)
    with pytest.raises(ValueError, match="num_examples: expected a positive integer"):
        data.batch_indices(KEY, 0, 1)


def test_batches_gathers_rows_of_x_and_t_together():
    x, t = rows_as_ids(10)
    xb, tb = data.batches(KEY, x, t, 3)
    assert xb.shape == (3, 3, 2) and tb.shape == (3, 3, 1)
    idx = data.batch_indices(KEY, 10, 3)
    np.testing.assert_array_equal(xb, x[idx])
    np.testing.assert_array_equal(tb, 10 * xb[..., :1])


def test_batches_refuses_mismatched_rows_and_non_finite_data():
    x, t = rows_as_ids(10)
    with pytest.raises(ValueError, match=r"t: expected the same number of rows as x \(10\)"):
        data.batches(KEY, x, t[:5], 2)
    with pytest.raises(ValueError, match="t: expected finite values"):
        data.batches(KEY, x, np.full((10, 1), np.nan), 2)
    with pytest.raises(ValueError, match="x: expected an array with one row per example"):
        data.batches(KEY, np.float32(1.0), t, 2)
    with pytest.raises(ValueError, match=r"x: expected at least one row, got shape \(0, 2\)"):
        data.batches(KEY, np.zeros((0, 2)), np.zeros((0, 1)), 1)


def test_batches_run_inside_jit_and_scan_over_epochs():
    x, t = rows_as_ids(10)
    keys = jax.random.split(KEY, 5)

    @jax.jit
    def epochs(keys):
        def one_epoch(carry, key):
            xb, tb = data.batches(key, x, t, 3)
            return carry + 1, (xb, tb)

        return jax.lax.scan(one_epoch, 0, keys)

    count, (xb, tb) = epochs(keys)
    assert int(count) == 5
    assert xb.shape == (5, 3, 3, 2) and tb.shape == (5, 3, 3, 1)
    for e, key in enumerate(keys):  # same batches as eagerly, epoch by epoch
        np.testing.assert_array_equal(xb[e], data.batches(key, x, t, 3)[0])
    assert not np.array_equal(xb[0], xb[1])  # a fresh permutation each epoch


@pytest.mark.parametrize("batch_size", [40, 1, 8])  # batch GD, SGD, mini-batch
def test_one_training_loop_serves_every_batch_size(batch_size):
    # Least squares t = 2 x - 1 fitted by the same scan loop for every batch size.
    x = jax.random.uniform(KEY, (40, 1), jnp.float32, -1, 1)
    t = 2 * x - 1
    learning_rate = 0.5 if batch_size > 1 else 0.05

    def loss(w, xb, tb):
        return 0.5 * jnp.mean((xb * w[0] + w[1] - tb) ** 2)

    def step(w, batch):
        return w - learning_rate * jax.grad(loss)(w, *batch), None

    def epoch(w, key):
        w, _ = jax.lax.scan(step, w, data.batches(key, x, t, batch_size))
        return w, loss(w, x, t)

    w, losses = jax.jit(lambda keys: jax.lax.scan(epoch, jnp.zeros(2), keys))(
        jax.random.split(KEY, 200)
    )
    np.testing.assert_allclose(w, [2.0, -1.0], atol=1e-3)
    assert losses[-1] < 1e-6


# A few shapes (each compiles once) and many keys.
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    case=st.sampled_from(
        [(10, 3, True), (10, 3, False), (10, 10, True), (10, 1, False), (7, 2, False)]
    ),
)
def test_batch_indices_property(seed, case):
    m, k, drop_remainder = case
    idx = np.asarray(data.batch_indices(jax.random.key(seed), m, k, drop_remainder=drop_remainder))
    counts = collections.Counter(idx.ravel())
    assert idx.shape == (data.num_batches(m, k, drop_remainder=drop_remainder), k)
    assert set(counts) <= set(range(m))
    if drop_remainder:  # m // k batches, each example at most once
        assert idx.shape[0] == m // k and max(counts.values()) == 1
    else:  # ceil(m / k) batches, each example once or twice
        assert set(counts) == set(range(m)) and max(counts.values()) <= 2
        assert sum(counts.values()) - m == -m % k
