"""Params checked against the model, and errors that name their layer.

The machinery behind [`make_layer`][purenet.layers.core.make_layer] and the
combinators (DESIGN.md, "Params are checked against the model"):

* [`check_params`][purenet.layers.checking.check_params] compares params
  with what the layer's `init` gives (structure, shapes, dtypes, by
  `jax.eval_shape`: no FLOPs, at trace time under `jit`);
* [`checked_call`][purenet.layers.checking.checked_call] runs it once per
  entry point (`backprop`, `objective`, a layer's `forward` called from
  outside any other, `custom_vjp`), not again in every nested layer;
* [`layer_path`][purenet.layers.checking.layer_path] names the layers a
  params path runs through (`"serial[2], dense(8)"`);
* [`within`][purenet.layers.checking.within] makes an error raised inside a
  combinator start with the sub-layer's path (`serial[3] (conv2d): ...`).

A layer here is anything with the [`Layer`][purenet.layers.core.Layer]
fields `init`, `name` and `children` (this module does not import
`purenet.layers.core`, which imports it).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from purenet import _checks

if TYPE_CHECKING:  # core imports this module; the annotations are strings
    from purenet.layers.core import Layer

__all__ = ["check_params", "checked_call", "layer_path", "within"]

_INSIDE = contextvars.ContextVar("purenet_params_checked", default=False)


def _is_layer(obj) -> bool:
    """A [`Layer`][purenet.layers.core.Layer] or anything shaped like one."""
    return callable(getattr(obj, "init", None)) and hasattr(obj, "name")


def _input_shape(x):
    """`in_shape` as `init` takes it, from a batch (a tuple for several inputs)."""
    if isinstance(x, tuple | list):
        return tuple(_input_shape(xi) for xi in x)
    return tuple(jnp.shape(x)[1:])


def _params_dtype(params):
    for leaf in jax.tree.leaves(params):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            return jnp.dtype(dtype)
    return jnp.dtype(jnp.float32)


@functools.lru_cache(maxsize=512)
def _expected(layer: Layer, in_shape, dtype):
    """What `layer.init` gives for `in_shape`: shapes and dtypes only
    (`jax.eval_shape` runs no FLOPs); None when `init` refuses the shape
    (then the forward's own input checks speak)."""
    try:
        return jax.eval_shape(lambda key: layer.init(key, in_shape, dtype)[1], jax.random.key(0))
    except (ValueError, TypeError):
        return None


def _labels(layer: Layer, path: tuple) -> list[str]:
    """The layers a params path runs through: `["serial[2]", "dense(8)"]`."""
    for key, child in getattr(layer, "children", ()):
        if key is None:
            return [layer.name] + _labels(child, path)
        if path and path[0] == key:
            return [f"{layer.name}[{key}]"] + _labels(child, path[1:])
    return [layer.name]


def layer_path(layer: Layer, path: tuple) -> str:
    """The layers that a params path runs through, as messages show them.

    Args:
      layer: the model.
      path: the keys from the root of its params to a leaf, e.g. `(2, "W")`.

    Returns:
      e.g. `"serial[2], dense(8)"`: each combinator with the index or key it
      passes to a child, then the layer that owns the leaf.
    """
    return ", ".join(_labels(layer, tuple(path)))


def _mismatch(expected, got, path=()):
    """The first place where `got` differs from `expected`:
    `(path, what was expected, what was given)`, or None."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return path, _checks.describe(expected), _checks.describe(got)
        if set(expected) != set(got):
            missing = sorted(map(str, set(expected) - set(got)))
            extra = sorted(map(str, set(got) - set(expected)))
            said = (f"missing keys {missing}" if missing else "") + (
                ("; " if missing and extra else "") + (f"unexpected keys {extra}" if extra else "")
            )
            return path, f"keys {sorted(map(str, expected))}", said
        for k in expected:
            found = _mismatch(expected[k], got[k], path + (k,))
            if found:
                return found
        return None
    if isinstance(expected, tuple | list):
        if type(got) is not type(expected) or len(got) != len(expected):
            want = _checks.describe(expected)
            if not expected:
                want = "() (this layer has no params)"
            return path, want, _checks.describe(got)
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            found = _mismatch(e, g, path + (i,))
            if found:
                return found
        return None
    if expected is None:
        return None if got is None else (path, "None", _checks.describe(got))
    if not (hasattr(got, "shape") and hasattr(got, "dtype")):
        return path, f"an array of shape {tuple(expected.shape)}", _checks.describe(got)
    if tuple(got.shape) != tuple(expected.shape):
        return path, f"shape {tuple(expected.shape)}", f"{tuple(got.shape)}"
    if jnp.dtype(got.dtype) != jnp.dtype(expected.dtype):
        return path, f"dtype {jnp.dtype(expected.dtype).name}", jnp.dtype(got.dtype).name
    return None


def _batched(in_shape) -> str:
    if in_shape and isinstance(in_shape[0], tuple):
        return "(" + ", ".join(_batched(s) for s in in_shape) + ")"
    return "(" + ", ".join(["m", *map(str, in_shape)]) + ")"


def check_params(layer: Layer, params, x, name: str = "params") -> None:
    """Check `params` against what `layer.init` gives for inputs like `x`.

    Structure, shapes and dtypes are compared with `jax.eval_shape` of `init`
    (no FLOPs, memoized per layer, input shape and dtype), so under `jit` the
    check runs once at trace time and adds nothing to the compiled program.
    The dtype expected is that of the first floating leaf of `params`.

    Raises:
      ValueError: naming the path in params and the layers it runs through,
        e.g. `params[2]['W'] (serial[2], dense(8)): expected shape (4, 8), got (4, 3)`.
    """
    if not _is_layer(layer):
        return
    try:
        in_shape = _input_shape(x)
        hash((layer, in_shape))
    except TypeError:
        return
    expected = _expected(layer, in_shape, _params_dtype(params))
    if expected is None:
        return
    found = _mismatch(expected, params)
    if found is None:
        return
    path, want, got = found
    where = name + "".join(f"[{k!r}]" for k in path)
    labels = layer_path(layer, path)
    raise ValueError(
        f"{where} ({labels}): expected {want}, got {got} "
        f"(what {layer.name}'s init gives for inputs of shape {_batched(in_shape)})"
    )


# An error about the input: "x: ..." or "x[1]: ..." (one of several inputs).
_ABOUT_X = re.compile(r"x(\[\d+\])*: ")


def checked_call(layer: Layer, params, x, fn: Callable):
    """`fn()`, with `params` checked against `layer` first, unless a caller
    further out has already checked them (one check per entry point)."""
    if _INSIDE.get():
        return fn()
    token = _INSIDE.set(True)
    try:
        try:
            check_params(layer, params, x)
        except ValueError as params_error:
            # Params that do not fit the input may mean a wrong input: when the
            # layers themselves reject `x`, that error comes first, and the
            # params' misfit second (another instance's params give the same
            # rejection of a right `x`: only the caller knows which is wrong).
            try:
                jax.eval_shape(fn)
            except Exception as error:  # the wrong params may fail any way (KeyError)
                message = getattr(error, "purenet_message", str(error))
                if not _ABOUT_X.match(message):
                    raise params_error from None
                if type(error) not in (ValueError, TypeError):
                    raise error from None
                misfit = f"; or, if x is right, params that do not fit it: {params_error}"
                again = type(error)(f"{error}{misfit}")
                if hasattr(error, "purenet_path"):  # as `within` made it, for an outer one
                    again.purenet_path, again.purenet_leaf = error.purenet_path, error.purenet_leaf
                    again.purenet_message = message + misfit
                raise again from None
            raise params_error from None
        return fn()
    finally:
        _INSIDE.reset(token)


@contextlib.contextmanager
def within(segment: str, layer: Layer):
    """Errors raised by a sub-layer start with its path through the combinators:
    `serial[3] (conv2d): kernel_size: ...`; nested paths are joined with
    commas. A `ValueError` or `TypeError` is raised again with the path in
    its message; any other exception gets the path as a note."""
    try:
        yield
    except (ValueError, TypeError) as error:
        path = [segment] + getattr(error, "purenet_path", [])
        leaf = getattr(error, "purenet_leaf", layer.name)
        message = getattr(error, "purenet_message", str(error))
        if type(error) not in (ValueError, TypeError):
            error.add_note(f"in {', '.join(path)} ({leaf})")
            raise
        again = type(error)(f"{', '.join(path)} ({leaf}): {message}")
        again.purenet_path, again.purenet_leaf, again.purenet_message = path, leaf, message
        raise again.with_traceback(error.__traceback__) from None
    except Exception as error:
        error.add_note(f"in {segment} ({layer.name})")
        raise
