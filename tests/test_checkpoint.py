"""purenet.checkpoint: round trip of (params, opt_state, state), atomic save, strict and safe load.

Trees are written out by hand (the shapes of a small dense-batchnorm-dense
network) so that these tests pin the file format, not the layers.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import checkpoint, optim


def make_params(width=4, dtype=jnp.float32):
    k1, k2 = jax.random.split(jax.random.key(0))
    return (
        {"W": jax.random.normal(k1, (3, width), dtype), "b": jnp.zeros(width, dtype)},
        {"gamma": jnp.ones(width, dtype), "beta": jnp.zeros(width, dtype)},
        (),
        {"W": jax.random.normal(k2, (width, 2), dtype), "b": jnp.zeros(2, dtype)},
    )


PARAMS = make_params()
MODEL_STATE = ((), {"mean": jnp.full(4, 0.5), "var": jnp.full(4, 2.0)}, (), ())
OPT = optim.adam(1e-3)
OPT_STATE = OPT.step(PARAMS, jax.tree.map(jnp.ones_like, PARAMS), OPT.init(PARAMS))[1]
KEY = jax.random.key(42)


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def rewrite_meta(path, edit):
    """Rewrite the JSON ``meta`` entry of a saved checkpoint with ``edit(meta)``."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    edit(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_round_trip_of_the_three_trees(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, OPT_STATE, MODEL_STATE, step=7, key=KEY)
    loaded = checkpoint.load(path, PARAMS, OPT.init(PARAMS), MODEL_STATE)
    assert_trees_equal(loaded.params, PARAMS)
    assert_trees_equal(loaded.opt_state, OPT_STATE)
    assert type(loaded.opt_state) is optim.AdamState
    assert_trees_equal(loaded.state, MODEL_STATE)
    assert loaded.step == 7
    np.testing.assert_array_equal(jax.random.key_data(loaded.key), jax.random.key_data(KEY))
    np.testing.assert_array_equal(jax.random.normal(loaded.key, (3,)), jax.random.normal(KEY, (3,)))
    assert loaded._fields == ("params", "opt_state", "state", "step", "key")


@pytest.mark.parametrize("empty", [(), None, ((), ()), {}])
def test_empty_trees_round_trip(tmp_path, empty):
    # A stateless model has state (); no optimizer state is None.
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, None, empty)
    loaded = checkpoint.load(path, PARAMS, None, empty)
    assert loaded.opt_state is None
    assert jax.tree.structure(loaded.state) == jax.tree.structure(empty)
    assert loaded.key is None and loaded.step == 0


def test_a_treedef_text_from_another_jax_version_still_loads(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, OPT_STATE, MODEL_STATE)

    def other_jax(meta):
        for name in ("params", "opt_state", "state"):
            meta[name]["treedef"] = "PyTreeDef<v99>(CustomNode(namedtuple[AdamState], [*, *]))"

    rewrite_meta(path, other_jax)
    loaded = checkpoint.load(path, PARAMS, OPT.init(PARAMS), MODEL_STATE)
    assert_trees_equal(loaded.params, PARAMS)
    assert_trees_equal(loaded.opt_state, OPT_STATE)


def test_the_description_is_key_paths_shapes_and_dtypes(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, OPT_STATE)
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(bytes(archive["meta"]).decode())
    assert meta["version"] == 2
    assert meta["params"]["paths"][0] == [["index", 0], ["key", "W"]]
    assert meta["params"]["shapes"][0] == [3, 4]
    assert meta["params"]["dtypes"][0] == "float32"
    assert meta["opt_state"]["paths"][0] == [["attr", "count"]]
    assert meta["opt_state"]["paths"][1] == [["attr", "mu"], ["index", 0], ["key", "W"]]
    assert meta["state"]["paths"] == []


def test_loads_into_any_template_with_the_same_leaves(tmp_path):
    # Same key paths, shapes and dtypes; lists where the file had tuples.
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    as_lists = list(PARAMS)
    loaded = checkpoint.load(path, as_lists)
    assert isinstance(loaded.params, list)
    assert_trees_equal(tuple(loaded.params), PARAMS)


def test_a_different_key_path_names_the_file_and_the_first_difference(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    renamed = (PARAMS[0], {"scale": PARAMS[1]["gamma"], "beta": PARAMS[1]["beta"]}, *PARAMS[2:])
    with pytest.raises(
        ValueError,
        match=r"ckpt.npz: params differs from the template: leaf 3 is at \[1\]\['gamma'\] "
        r"in the file, at \[1\]\['scale'\] in the template",
    ):
        checkpoint.load(path, renamed)


def test_more_or_fewer_leaves(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    with pytest.raises(ValueError, match=r"first extra leaf: \[3\]\['W'\]"):
        checkpoint.load(path, PARAMS[:3])
    with pytest.raises(ValueError, match=r"first missing leaf: \[4\]\['W'\]"):
        checkpoint.load(path, (*PARAMS, {"W": jnp.ones(2)}))


def test_state_saved_but_not_asked_for(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, None, MODEL_STATE)
    with pytest.raises(ValueError, match=r"state differs from the template.*pass state_like="):
        checkpoint.load(path, PARAMS)


def test_different_shapes_or_dtypes(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    with pytest.raises(
        ValueError,
        match=r"leaf 0 \[0\]\['W'\] is float32\[3, 4\] in the file, expected float32\[3, 5\]",
    ):
        checkpoint.load(path, make_params(width=5))
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match=r"expected float64\[3, 4\]"):
            checkpoint.load(path, make_params(dtype=jnp.float64))


def test_format_version_1_is_refused_clearly(tmp_path):
    path = tmp_path / "old.npz"
    checkpoint.save(path, PARAMS)
    rewrite_meta(path, lambda meta: meta.update(version=1))
    with pytest.raises(ValueError, match=r"old.npz: checkpoint format version 1 is not supported"):
        checkpoint.load(path, PARAMS)


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
    checkpoint.save(path, PARAMS, OPT_STATE, step=1, key=KEY)
    before = path.read_bytes()

    def savez_then_die(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")  # some bytes reach the disk...
        raise KeyboardInterrupt  # ...then the process is interrupted

    monkeypatch.setattr(np, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, PARAMS, OPT_STATE, step=2, key=KEY, overwrite=True)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "nope.npz", PARAMS)


def test_truncated_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, OPT_STATE, key=KEY)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        checkpoint.load(path, PARAMS, OPT_STATE)


def test_missing_leaf_entry(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "params/0002"}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"corrupted checkpoint \(missing params/0002"):
        checkpoint.load(path, PARAMS)


def test_corrupted_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, PARAMS, OPT_STATE, key=KEY)
    data = bytearray(path.read_bytes())
    for i in range(200, 260):  # inside the first stored array
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="ckpt.npz"):
        checkpoint.load(path, PARAMS, OPT_STATE)


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


def test_bad_save_arguments(tmp_path):
    path = tmp_path / "a.npz"
    with pytest.raises(ValueError, match=r"^step: expected a non-negative integer, got -1"):
        checkpoint.save(path, PARAMS, step=-1)
    with pytest.raises(TypeError, match=r"^step: expected a non-negative integer, got float"):
        checkpoint.save(path, PARAMS, step=1.5)
    with pytest.raises(TypeError, match=r"^key: expected a typed key from jax.random.key"):
        checkpoint.save(path, PARAMS, key=jnp.array([0, 1], jnp.uint32))
    with pytest.raises(TypeError, match=r"^state\[0\]: expected a numeric array"):
        checkpoint.save(path, PARAMS, None, (KEY,))
    with pytest.raises(TypeError, match=r"^params\['W'\]: expected an array or a number"):
        checkpoint.save(path, {"W": "weights"})
    assert not path.exists()
