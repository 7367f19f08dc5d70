"""Checkpoints: params, optimizer state, model state, step and key in one `.npz` file.

A training run carries three trees (DESIGN.md): `params` (what gradients
train), `opt_state` (the optimizer's) and `state` (non-gradient model
state such as batch norm's running mean and variance; `()` for a stateless
model). A checkpoint holds all three, with the step count and a random key:

```python
checkpoint.save("run.npz", params, opt_state, state, step=epoch, key=key)
ckpt = checkpoint.load("run.npz", params, opt.init(params), state)
params, opt_state, state = ckpt.params, ckpt.opt_state, ckpt.state
```

Format (version 2): a NumPy `.npz` archive (a zip of `.npy` arrays)
holding only numeric arrays, so it loads with `allow_pickle=False`:

* `params/0000`, `params/0001`, ...: the leaves of the params tree, in
  `jax.tree.leaves` order; likewise `opt_state/....` and `state/....`;
* `step`: an int64 scalar (for example the number of epochs done);
* `key_data`: `jax.random.key_data(key)`, the raw bits of a typed key;
* `meta`: UTF-8 JSON as uint8 bytes: format name and version, the key's
  implementation name and, for each tree, a description that does not depend
  on the JAX release: for every leaf its **key path** (a list of path
  entries, each `["key", k]` for a dict key, `["index", i]` for a tuple or
  list position, `["attr", name]` for a named-tuple field, `["flat", i]`
  for other containers), its shape and its dtype. `str(treedef)` is stored
  too, for people reading the file, but never compared: its text is JAX's
  to change.

Loading into a template. `load` takes trees of the expected structure (from
`model.init` and `opt.init`; their values are not used) and accepts the
file when both have the same leaves: the same key paths, shapes and dtypes,
in the same order. Container types are the template's, so a tree saved with
tuples loads into the same tree written with lists (their paths are the same).

Safety:

* **Atomic save.** The archive is written to a temporary file in the same
  folder, flushed to disk (`fsync`) and moved over the target with
  `os.replace`, which is atomic on POSIX and Windows: an interrupted save
  leaves the previous file untouched, never a truncated one.
* **No silent overwrite.** `save` refuses an existing path unless
  `overwrite=True`.
* **Strict load.** `load` refuses a missing, truncated or corrupted file, a
  pickled object, a format version it does not read, and a tree whose leaves
  differ from the template's, each with a message naming the file and the
  first difference.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

from purenet._checks import fail, fail_type
from purenet.layers.checking import check_params, layer_path
from purenet.layers.core import Layer

FORMAT = "purenet-checkpoint"
"""The format name stored in a checkpoint's `meta`; [`load`][purenet.checkpoint.load] refuses
a file without it."""
VERSION = 2
"""The version of the format written; [`load`][purenet.checkpoint.load] reads this version
only (version 1 described trees by JAX's treedef text)."""
TREES = ("params", "opt_state", "state")
"""The three trees a checkpoint holds, in the order of the arguments of
[`save`][purenet.checkpoint.save]."""


class Checkpoint(NamedTuple):
    """What [`load`][purenet.checkpoint.load] returns."""

    params: Any
    opt_state: Any  # None when none was saved and none was asked for
    state: Any  # non-gradient model state; () (or None) for a stateless model
    step: int
    key: Any  # a typed jax.random key, or None


# --- a description of a tree that JAX releases cannot change ---------------------------


def _entry(key) -> list:
    """One step of a key path as JSON: `[kind, value]`."""
    if isinstance(key, DictKey):
        k = key.key
        return ["key", k if isinstance(k, str | int) and not isinstance(k, bool) else repr(k)]
    if isinstance(key, SequenceKey):
        return ["index", key.idx]
    if isinstance(key, GetAttrKey):
        return ["attr", key.name]
    if isinstance(key, FlattenedIndexKey):
        return ["flat", key.key]
    return ["other", str(key)]


def _path_text(path: list) -> str:
    """A key path as Python-like text, `[0]['W']` or `.mu[1]['b']`, for messages."""
    parts = []
    for kind, value in path:
        if kind == "attr":
            parts.append(f".{value}")
        elif kind == "key":
            parts.append(f"[{value!r}]")
        else:
            parts.append(f"[{value}]")
    return "".join(parts) or "(the root)"


def _dtype(leaf) -> str:
    return str(np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)


def _describe(tree) -> dict:
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return {
        "paths": [[_entry(k) for k in path] for path, _ in with_paths],
        "shapes": [list(np.shape(leaf)) for _, leaf in with_paths],
        "dtypes": [_dtype(leaf) for _, leaf in with_paths],
        "treedef": str(treedef),  # for readers only; never compared
    }


# --- save -----------------------------------------------------------------------------


def _check_leaves(name: str, tree) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where = f"{name}{_path_text([_entry(k) for k in path])}"
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            fail_type(where, "a numeric array (save a random key with key=)", "a typed key")
        if not hasattr(leaf, "dtype") and not isinstance(leaf, int | float | np.number):
            fail_type(where, "an array or a number", type(leaf).__name__)


def save(
    path: str | os.PathLike,
    params: Any,
    opt_state: Any = None,
    state: Any = None,
    *,
    step: int = 0,
    key: jax.Array | None = None,
    overwrite: bool = False,
) -> None:
    """Write a checkpoint atomically.

    Args:
      path: target file (conventionally `*.npz`; the name is used as given).
      params: the params pytree.
      opt_state: the optimizer state pytree (or `None`).
      state: the non-gradient model state (`()` for a stateless model, or
        `None`).
      step: a non-negative integer saved with it (epochs or steps done).
      key: a typed `jax.random` key (or `None`).
      overwrite: replace an existing file (atomically). Default `False`:
        an existing file raises `FileExistsError`.

    Raises:
      TypeError: `step` is not an integer, `key` is not a typed key (a
        raw `uint32` key from `jax.random.PRNGKey`), or a leaf of a tree
        is not an array.
      ValueError: `step` is negative.
      FileExistsError: `path` exists and `overwrite` is false.
    """
    path = os.fspath(path)
    if isinstance(step, bool) or not isinstance(step, int | np.integer):
        fail_type("step", "a non-negative integer", f"{type(step).__name__} {step!r}")
    if step < 0:
        fail("step", "a non-negative integer", repr(step))
    trees = dict(zip(TREES, (params, opt_state, state), strict=True))
    for name, tree in trees.items():
        _check_leaves(name, tree)
    if key is not None and not (
        hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    ):
        got = f"dtype {key.dtype}" if hasattr(key, "dtype") else type(key).__name__
        fail_type("key", "a typed key from jax.random.key", got)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"path: {path!r} exists; pass overwrite=True to replace it")

    arrays = {}
    meta = {"format": FORMAT, "version": VERSION, "key_impl": None}
    for name, tree in trees.items():
        for i, leaf in enumerate(jax.tree.leaves(tree)):
            arrays[f"{name}/{i:04d}"] = np.asarray(leaf)
        meta[name] = _describe(tree)
    if key is not None:
        arrays["key_data"] = np.asarray(jax.random.key_data(key))
        meta["key_impl"] = str(jax.random.key_impl(key))
    arrays["step"] = np.asarray(step, np.int64)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".purenet-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --- load -----------------------------------------------------------------------------


def _read(path) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no checkpoint at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "pickle" in str(error):
            raise ValueError(
                f"{path}: holds pickled objects; purenet refuses to load them"
            ) from error
        raise ValueError(f"{path}: not a readable purenet checkpoint ({error})") from error
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise ValueError(f"{path}: truncated or corrupted checkpoint ({error})") from error


def _first_difference(stored: dict, expected: dict) -> tuple[str, list] | None:
    """The first leaf at which two descriptions differ: `(words, key path)`
    (the template's path, or the file's for an extra leaf); `None` if none."""
    s_paths, e_paths = stored["paths"], expected["paths"]
    for i, (s_path, e_path) in enumerate(zip(s_paths, e_paths, strict=False)):
        if s_path != e_path:
            return (
                f"leaf {i} is at {_path_text(s_path)} in the file, "
                f"at {_path_text(e_path)} in the template"
            ), e_path
        shape, dtype = stored["shapes"][i], stored["dtypes"][i]
        e_shape, e_dtype = expected["shapes"][i], expected["dtypes"][i]
        if shape != e_shape or dtype != e_dtype:
            return (
                f"leaf {i} {_path_text(e_path)} is {dtype}{shape} in the file, "
                f"expected {e_dtype}{e_shape}"
            ), e_path
    counts = f"the file has {len(s_paths)} leaves, the template {len(e_paths)}"
    if len(s_paths) > len(e_paths):
        extra = s_paths[len(e_paths)]
        return f"{counts}; first extra leaf: {_path_text(extra)}", extra
    if len(s_paths) < len(e_paths):
        missing = e_paths[len(s_paths)]
        return f"{counts}; first missing leaf: {_path_text(missing)}", missing
    return None


def _restore(path, name, stored, arrays, like, model=None):
    expected = _describe(like)
    difference = _first_difference(stored, expected)
    if difference is not None:
        words, leaf_path = difference
        hint = f" (pass {name}_like= to load it)" if like is None else ""
        owner = ""
        if model is not None and name == "params":  # the layers owning that leaf
            owner = f" ({layer_path(model, tuple(value for _, value in leaf_path))})"
        raise ValueError(f"{path}: {name} differs from the template{owner}: {words}{hint}")
    leaves = []
    for i, (shape, dtype) in enumerate(zip(expected["shapes"], expected["dtypes"], strict=True)):
        entry = f"{name}/{i:04d}"
        if entry not in arrays:
            raise ValueError(f"{path}: truncated or corrupted checkpoint (missing {entry})")
        leaf = arrays[entry]
        if list(leaf.shape) != shape or str(leaf.dtype) != dtype:
            raise ValueError(
                f"{path}: corrupted checkpoint ({entry} is {leaf.dtype}{list(leaf.shape)} "
                f"where its description says {dtype}{shape})"
            )
        leaves.append(jnp.asarray(leaf))
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


def _meta(path, arrays) -> dict:
    try:
        meta = json.loads(bytes(arrays["meta"]).decode())
        ok = isinstance(meta, dict) and meta.get("format") == FORMAT
    except (KeyError, ValueError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: not a purenet checkpoint (no valid 'meta' entry)")
    version = meta.get("version")
    if version != VERSION:
        raise ValueError(
            f"{path}: checkpoint format version {version} is not supported; this purenet "
            f"reads version {VERSION} (version 1 described trees by JAX's treedef text, "
            f"which other JAX releases may not reproduce: load it with the purenet that "
            f"wrote it and save it again)"
        )
    return meta


def load(
    path: str | os.PathLike,
    params_like: Any,
    opt_state_like: Any = None,
    state_like: Any = None,
    *,
    model: Layer | None = None,
    x: Any = None,
) -> Checkpoint:
    """Read a checkpoint written by [`save`][purenet.checkpoint.save].

    Args:
      path: the file.
      params_like: a params tree of the expected structure, shapes and dtypes
        (e.g. from `model.init`); its values are not used.
      opt_state_like: likewise for the optimizer state (e.g.
        `opt.init(params)`; `None` if none was saved).
      state_like: likewise for the model state (`()` or `None` for a
        stateless model).
      model: optionally, the model the params belong to: a difference between
        the file's params and the template then names the layers that own
        the first differing leaf (`(serial[2], dense(8))`).
      x: with `model`, an example input batch (or a `jax.ShapeDtypeStruct`):
        `params_like` is first checked against what `model.init` gives for
        such inputs ([`check_params`][purenet.layers.checking.check_params]), so a
        template that does not fit the model is refused before the file is read.

    Returns:
      A [`Checkpoint`][purenet.checkpoint.Checkpoint] `(params, opt_state, state, step, key)`, each
      tree with the template's containers and the file's values.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file is not a readable purenet checkpoint of format
        version 2, or a tree's key paths, shapes or dtypes differ from its
        template's (the message names the file and the first difference).
    """
    if model is not None and not isinstance(model, Layer):
        fail_type("model", "None or a purenet Layer", type(model).__name__)
    if x is not None:
        if model is None:
            fail("x", "None unless model is given (x is the model's example input)", "an input")
        check_params(model, params_like, x, name="params_like")
    path = os.fspath(path)
    arrays = _read(path)
    meta = _meta(path, arrays)
    templates = (params_like, opt_state_like, state_like)
    try:
        trees = [
            _restore(path, name, meta[name], arrays, like, model)
            for name, like in zip(TREES, templates, strict=True)
        ]
        key = None
        if meta["key_impl"] is not None:
            key = jax.random.wrap_key_data(jnp.asarray(arrays["key_data"]), impl=meta["key_impl"])
        step = int(arrays["step"])
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(f"{path}: truncated or corrupted checkpoint ({error!r})") from error
    return Checkpoint(*trees, step, key)
