"""Checkpoints: params, optimizer state, step and key in one ``.npz`` file.

Format: a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) holding only
numeric arrays, so it loads with ``allow_pickle=False``:

* ``params/0000``, ``params/0001``, ...: the leaves of the params tree;
* ``opt_state/0000``, ...: the leaves of the optimizer state;
* ``step``: an int64 scalar (for example the number of epochs done);
* ``key_data``: ``jax.random.key_data(key)``, the raw bits of a typed key;
* ``meta``: UTF-8 JSON as uint8 bytes: format name and version, the tree
  structures (``str(treedef)``), shapes and dtypes, and the key's
  implementation name.

Safety:

* **Atomic save.** The archive is written to a temporary file in the same
  folder, flushed to disk (``fsync``) and moved over the target with
  ``os.replace``, which is atomic on POSIX and Windows: an interrupted save
  leaves the previous file untouched, never a truncated one.
* **No silent overwrite.** ``save`` refuses an existing path unless
  ``overwrite=True``.
* **Strict load.** ``load`` takes the params (and optimizer state) the
  caller expects as a template and refuses a missing, truncated or corrupted
  file, a pickled object, a different tree structure, and different shapes or
  dtypes, each with a message naming the file and the first difference.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "purenet-checkpoint"
VERSION = 1


class Checkpoint(NamedTuple):
    params: object
    opt_state: object
    step: int
    key: object


def _describe(tree) -> dict:
    leaves, treedef = jax.tree.flatten(tree)
    return {
        "tree": str(treedef),
        "shapes": [list(np.shape(leaf)) for leaf in leaves],
        "dtypes": [str(jnp.result_type(leaf)) for leaf in leaves],
    }


def save(path, params, opt_state=None, *, step: int = 0, key=None, overwrite: bool = False):
    """Write a checkpoint atomically.

    Args:
      path: target file (conventionally ``*.npz``; the name is used as given).
      params: the params pytree.
      opt_state: optimizer state pytree (or ``None``).
      step: a non-negative integer saved with it (epochs or steps done).
      key: a typed ``jax.random`` key (or ``None``).
      overwrite: replace an existing file (atomically). Default ``False``:
        an existing file raises ``FileExistsError``.
    """
    path = os.fspath(path)
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step: expected a non-negative integer, got {step!r}")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"path: {path!r} exists; pass overwrite=True to replace it")
    arrays = {}
    for prefix, tree in (("params", params), ("opt_state", opt_state)):
        for i, leaf in enumerate(jax.tree.leaves(tree)):
            arrays[f"{prefix}/{i:04d}"] = np.asarray(leaf)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "params": _describe(params),
        "opt_state": _describe(opt_state),
        "key_impl": None,
    }
    if key is not None:
        if not jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
            raise ValueError(
                f"key: expected a typed key from jax.random.key, got {jnp.result_type(key)}"
            )
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


def _restore(path, prefix, stored_meta, arrays, like):
    expected = _describe(like)
    if stored_meta["tree"] != expected["tree"]:
        raise ValueError(
            f"{path}: {prefix} structure differs from the expected one:\n"
            f"  file:     {stored_meta['tree']}\n  expected: {expected['tree']}"
        )
    leaves = []
    for i, (shape, dtype) in enumerate(zip(expected["shapes"], expected["dtypes"], strict=True)):
        name = f"{prefix}/{i:04d}"
        if name not in arrays:
            raise ValueError(f"{path}: truncated or corrupted checkpoint (missing {name})")
        leaf = arrays[name]
        if list(leaf.shape) != shape or str(leaf.dtype) != dtype:
            raise ValueError(
                f"{path}: {prefix} leaf {i} is {leaf.dtype}{list(leaf.shape)}, "
                f"expected {dtype}{shape}"
            )
        leaves.append(jnp.asarray(leaf))
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


def load(path, params_like, opt_state_like=None) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    Args:
      path: the file.
      params_like: a params tree of the expected structure, shapes and dtypes
        (e.g. from ``model.init``); its values are not used.
      opt_state_like: likewise for the optimizer state (``None`` if none was
        saved).

    Returns:
      A :class:`Checkpoint` ``(params, opt_state, step, key)``.
    """
    path = os.fspath(path)
    arrays = _read(path)
    try:
        meta = json.loads(bytes(arrays["meta"]).decode())
        ok = meta.get("format") == FORMAT
    except (KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: not a purenet checkpoint (no valid 'meta' entry)")
    if meta["version"] != VERSION:
        raise ValueError(f"{path}: checkpoint format version {meta['version']}, expected {VERSION}")
    params = _restore(path, "params", meta["params"], arrays, params_like)
    opt_state = _restore(path, "opt_state", meta["opt_state"], arrays, opt_state_like)
    key = None
    if meta["key_impl"] is not None:
        key = jax.random.wrap_key_data(jnp.asarray(arrays["key_data"]), impl=meta["key_impl"])
    return Checkpoint(params, opt_state, int(arrays["step"]), key)
