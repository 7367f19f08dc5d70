"""Paths into a params pytree, shared by `layers.sharing` (the ties) and
`feedback` (the feedback matrices).

A path is a tuple with one key per level: an `int` for an entry of a tuple
or list, a `str` for a dict key, e.g. `(0, "W")` for the first layer's
weights in a `serial`.
"""

from __future__ import annotations

from purenet import _checks


def text(path: tuple) -> str:
    """`path` as Python indexing of `params`: `params[0]['W']`."""
    return "params" + "".join(f"[{k!r}]" for k in path)


def get(tree, path: tuple, name: str):
    """The entry of `tree` at `path`; a path that leads nowhere is an error
    naming the argument `name` and the first level without the key."""
    for depth, k in enumerate(path):
        if isinstance(tree, dict) and k in tree:
            tree = tree[k]
        elif (
            isinstance(tree, tuple | list)
            and isinstance(k, int)
            and not isinstance(k, bool)
            and -len(tree) <= k < len(tree)
        ):
            tree = tree[k]
        else:
            _checks.fail(
                name,
                f"paths into the model's params; {text(path[:depth])} has no entry {k!r}",
                f"the path {path!r}",
            )
    return tree


def replace(tree, path: tuple, value):
    """A copy of `tree` with the entry at `path` replaced by `value` (dicts
    stay dicts, tuples tuples, lists lists)."""
    if not path:
        return value
    k, rest = path[0], path[1:]
    if isinstance(tree, dict):
        out = dict(tree)
        out[k] = replace(tree[k], rest, value)
        return out
    out = list(tree)
    out[k] = replace(tree[k], rest, value)
    return type(tree)(out) if isinstance(tree, tuple) else out
