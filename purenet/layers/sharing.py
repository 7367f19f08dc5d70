"""Weight sharing: one array used in several places of a model.

[`tied`][purenet.layers.sharing.tied] wraps any layer and ties some of its
parameter slots together. The tied model's params hold each shared array
**once**, at the first path of its group (the *owner*); every other slot of
the group holds `None` (an empty pytree node, so `ravel`, optimizers,
penalties and checkpoints see the array once):

```python
model = serial(embedding(V, d), ..., lm_head)          # params[0]["W"], params[5]["W"]
shared = tied(model, [((0, "W"), (5, "W"))])
_, params, _ = shared.init(key, (T,))
params[5]["W"] is None                                  # True: stored at params[0]["W"]
```

**Forward.** The owner's array is substituted into each slot of its group,
and the wrapped layer runs on the completed params.

**Backward.** The wrapped layer's backward gives one gradient per slot, as if
the copies were independent arrays. The model's output depends on the shared
array through every use, so by the multivariable chain rule its gradient is
the **sum** of the slots' gradients:

```text
dW_shared = sum over the paths p of the group of dparams[p]
```

which is stored at the owner's path; the other slots get `None`, matching
params. This is how weight tying of input and output embeddings (Press &
Wolf 2017; GPT-2, Radford et al. 2019) trains the one matrix with both
gradients.

Paths are tuples of keys, one per level of the params pytree: an `int` for a
tuple entry (`serial`'s params), a `str` for a dict key (`"W"`). The arrays
of a group must have one shape and dtype (a use that needs the transpose,
like GPT-2's output head `h @ W_te^T`, is written as a layer that takes the
untransposed array).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from purenet import _checks, _paths
from purenet.layers import per_example_rules as _rules
from purenet.layers.checking import within
from purenet.layers.core import Layer, call_forward, make_layer

Path = tuple
"""A path into a params pytree: one key per level, an `int` for a tuple entry, a `str` for
a dict key (module docstring)."""


def _normalise(ties) -> tuple[tuple[Path, ...], ...]:
    if isinstance(ties, str) or not isinstance(ties, Sequence) or not ties:
        _checks.fail(
            "ties",
            "a non-empty sequence of groups of params paths, such as [((0, 'W'), (5, 'W'))]",
            repr(ties),
        )
    groups, seen = [], set()
    for g, group in enumerate(ties):
        if isinstance(group, str) or not isinstance(group, Sequence) or len(group) < 2:
            _checks.fail(f"ties[{g}]", "a group of at least two params paths", repr(group))
        paths = []
        for path in group:
            if isinstance(path, str | int):
                path = (path,)
            if (
                not isinstance(path, Sequence)
                or not path
                or not all(isinstance(k, str | int) and not isinstance(k, bool) for k in path)
            ):
                _checks.fail(f"ties[{g}]", "paths as non-empty tuples of ints and strs", repr(path))
            path = tuple(path)
            if path in seen:
                _checks.fail(f"ties[{g}]", "each path in one group only, once", repr(path))
            seen.add(path)
            paths.append(path)
        groups.append(tuple(paths))
    return tuple(groups)


def tied(model: Layer, ties: Sequence[Sequence[Path]]) -> Layer:
    """`model` with groups of parameter slots sharing one array (module docstring).

    Args:
      model: any [`Layer`][purenet.layers.core.Layer].
      ties: groups of params paths, e.g. `[((0, "W"), (5, "W"))]`; in each
        group the first path owns the array, the others hold `None` in the
        tied model's params. The slots of a group must have one shape and dtype.

    Returns:
      A layer with `model`'s inputs, outputs and state. `init` draws `model`'s
      params and keeps each group's owner (the other draws are dropped);
      `forward` substitutes the owner into every slot of its group;
      `backward` sums the group's slot gradients into the owner's.

    Raises:
      ValueError: `ties` is malformed, a path does not exist in the model's
        params, or the arrays of a group differ in shape or dtype (at `init`).
    """
    if not isinstance(model, Layer):
        _checks.fail_type("model", "a purenet Layer", type(model).__name__)
    groups = _normalise(ties)

    def fill(params):
        """The wrapped model's params: each owner copied into its group's slots."""
        for group in groups:
            shared = _paths.get(params, group[0], "params")
            for path in group[1:]:
                params = _paths.replace(params, path, shared)
        return params

    def init(key, in_shape, dtype=jnp.float32):
        with within("tied", model):
            out_shape, params, state = model.init(key, in_shape, dtype)
        for g, group in enumerate(groups):
            owner = _paths.get(params, group[0], "ties")
            for path in group[1:]:
                other = _paths.get(params, path, "ties")
                same = (
                    hasattr(other, "shape")
                    and hasattr(owner, "shape")
                    and tuple(other.shape) == tuple(owner.shape)
                    and jnp.dtype(other.dtype) == jnp.dtype(owner.dtype)
                )
                if not same:
                    _checks.fail(
                        f"ties[{g}]",
                        f"arrays of one shape and dtype; "
                        f"{_paths.text(group[0])} is {_checks.describe(owner)}",
                        f"{_paths.text(path)}: {_checks.describe(other)}",
                    )
                params = _paths.replace(params, path, None)
        return out_shape, params, state

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        with within("tied", model):
            context = dict(state=state, train=train, key=key, mask=mask)
            return call_forward(model, fill(params), x, **context)

    def gather(grads):
        """Every slot's gradient summed into its owner's (the multivariable
        chain rule for one parameter used in several places)."""
        for group in groups:
            total = _paths.get(grads, group[0], "grads")
            for path in group[1:]:
                total = total + _paths.get(grads, path, "grads")
                grads = _paths.replace(grads, path, None)
            grads = _paths.replace(grads, group[0], total)
        return grads

    def backward(params, cache, dy):
        with within("tied", model):
            grads, dx = model.backward(fill(params), cache, dy)
        return gather(grads), dx

    def per_example(params, cache, dy):
        # as backward, with each example's slot gradients summed into its owner's
        with within("tied", model):
            grads, dx = _rules.layer_grads(model, fill(params), cache, dy)
        return gather(grads), dx

    return make_layer(
        init,
        forward,
        backward,
        model.update_state,
        name=f"tied({model.name})",
        children=((None, model),),
        per_example=per_example,
    )
