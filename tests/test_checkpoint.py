"""purenet.checkpoint: round trip, atomic save, strict and safe load."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import checkpoint, optim
from purenet import layers as L

MODEL = L.serial(L.dense(4), L.relu(), L.dense(2))
PARAMS = MODEL.init(jax.random.key(0), (3,))[1]
OPT = optim.adam(1e-3)
STATE = OPT.step(PARAMS, jax.tree.map(jnp.ones_like, PARAMS), OPT.init(PARAMS))[1]
KEY = jax.random.key(42)


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_round_trip(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, STATE, step=7, key=KEY)
    loaded = checkpoint.load(path, PARAMS, OPT.init(PARAMS))
    assert_trees_equal(loaded.params, PARAMS)
    assert_trees_equal(loaded.opt_state, STATE)
    assert loaded.step == 7
    np.testing.assert_array_equal(jax.random.key_data(loaded.key), jax.random.key_data(KEY))
    np.testing.assert_array_equal(jax.random.normal(loaded.key, (3,)), jax.random.normal(KEY, (3,)))


def test_saved_file_has_the_usual_permissions(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_no_silent_overwrite(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        checkpoint.save(path, PARAMS)
    checkpoint.save(path, PARAMS, step=1, overwrite=True)
    assert checkpoint.load(path, PARAMS).step == 1


def test_interrupted_save_leaves_the_good_file_in_place(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, STATE, step=1, key=KEY)
    before = path.read_bytes()

    def savez_then_die(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")  # some bytes reach the disk...
        raise KeyboardInterrupt  # ...then the process is interrupted

    monkeypatch.setattr(np, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, PARAMS, STATE, step=2, key=KEY, overwrite=True)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "nope.npz", PARAMS)


def test_truncated_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, STATE, key=KEY)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        checkpoint.load(path, PARAMS, STATE)


def test_corrupted_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, STATE, key=KEY)
    data = bytearray(path.read_bytes())
    for i in range(200, 260):  # inside the first stored array
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="ckpt.npz"):
        checkpoint.load(path, PARAMS, STATE)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        checkpoint.load(path, PARAMS)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.ones(3))
    with pytest.raises(ValueError, match="not a purenet checkpoint"):
        checkpoint.load(path, PARAMS)


def test_different_model_structure(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    other = L.serial(L.dense(4), L.relu(), L.dense(2), L.relu()).init(jax.random.key(0), (3,))[1]
    with pytest.raises(ValueError, match="params structure differs"):
        checkpoint.load(path, other)


def test_different_shapes_or_dtypes(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    wider = L.serial(L.dense(5), L.relu(), L.dense(2)).init(jax.random.key(0), (3,))[1]
    with pytest.raises(
        ValueError, match=r"params leaf 0 is float32\[3, 4\], expected float32\[3, 5\]"
    ):
        checkpoint.load(path, wider)
    f64 = jax.tree.map(lambda a: a.astype(jnp.float64), PARAMS)
    with pytest.raises(ValueError, match="expected float64"):
        checkpoint.load(path, f64)


def test_bad_save_arguments(tmp_path):
    with pytest.raises(ValueError, match="step: expected a non-negative integer"):
        checkpoint.save(tmp_path / "a.npz", PARAMS, step=-1)
    with pytest.raises(ValueError, match="key: expected a typed key"):
        checkpoint.save(tmp_path / "a.npz", PARAMS, key=jnp.array([0, 1], jnp.uint32))
