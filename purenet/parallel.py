"""Data parallelism with JAX's own sharding: one code path, one device or many.

Data-parallel training splits each mini-batch by rows across devices, keeps a
full copy of the parameters (and optimizer state) on every device, and sums
the per-device gradients before the update. Nothing in the hand-written
backward has to change for that, because the batch enters the gradient only
through sums over rows: for `y = x @ W + b`,

    dW = x.T @ dy = sum over devices d of x_d.T @ dy_d,   db = sum of dy_d,

with the loss's `1/m` taken over the global batch. So the per-device
gradients only need to be summed across devices: an all-reduce.

**Main path: jit + NamedSharding** (what `fit(..., mesh=mesh)` and
`make_epoch(..., mesh=mesh)` use). The training step is the ordinary
single-device program. The batch is placed with `PartitionSpec("data")`
(rows split over the mesh's `"data"` axis), the params and optimizer state
with `PartitionSpec()` (replicated), and XLA's SPMD partitioner (Shardy,
formerly GSPMD) splits the program: the `x.T @ dy` of every dense layer
contracts over the sharded batch axis, so the partitioner computes a partial
product on each device and inserts the all-reduce itself
(`tests/test_parallel.py` finds it in the compiled HLO). This is the main
path because sharding is an annotation, not a change of meaning: `jit`
gives the same values whatever the shardings are. Batch norm's statistics
are those of the whole batch, dropout masks are the same bits
(`jax_threefry_partitionable` is on by default), penalties and gradient
clipping see the summed gradient, and the result equals the one-device run
up to the order of floating-point sums. `mesh=None` is the unchanged
one-device code.

**Explicit path: shard_map + pmean**
([`make_shard_map_step`][purenet.parallel.make_shard_map_step]). The step is written per device:
each device runs the hand-written backprop on its own rows and the gradients are averaged with
`jax.lax.pmean(grads, "data")`, the all-reduce in plain sight (the `DistributedDataParallel`
recipe). It is here because it shows what the partitioner does for us. It differs from
one device in the places where the per-device program is not the global one:
batch norm normalises with per-device statistics (no "sync batch norm"), and
dropout draws its mask per device from `fold_in(key, device index)`.

**Mesh axes.** [`data_mesh`][purenet.parallel.data_mesh] makes the `"data"` axis `AxisType.Auto`.
`jax.make_mesh` makes `AxisType.Explicit` axes by default (JAX 0.10),
and explicit sharding refuses a contraction over a sharded axis unless the
caller names the output sharding (`ShardingTypeError: Contracting
dimensions are sharded ...`), which the layers' `x.T @ dy` does not do.
Auto leaves the choice to the partitioner.

**Seeds.** A sweep over seeds is a `jax.vmap` over a stack of keys (and of
the params they initialise). [`shard_seeds`][purenet.parallel.shard_seeds] places that stack's
leading axis on `"data"`, so each device trains its share of the seeds.

Multi-host use (`jax.distributed.initialize`) and GPU installation are
described in `docs/parallel.md`.

Example:

```python
from purenet import parallel, train

mesh = parallel.data_mesh()                   # all devices, axis "data"
result = train.fit(model, loss, opt, params, x, t, key=key, epochs=10,
                   batch_size=256, mesh=mesh) # 256 % num_devices == 0
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from purenet import _checks
from purenet._step import make_step
from purenet.cost import Penalty
from purenet.layers import Layer
from purenet.losses import Loss
from purenet.optim import Optimizer

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "check_batch_size",
    "constrain_batch",
    "data_mesh",
    "make_shard_map_step",
    "num_shards",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "shard_seeds",
]

DATA_AXIS = "data"
"""The mesh axis name over which batch rows (or seeds) are split."""


# --------------------------------------------------------------------- the mesh


def data_mesh(num_devices: int | None = None, *, devices: Sequence | None = None) -> Mesh:
    """A 1-D mesh with one `"data"` axis over the first `num_devices` devices.

    Args:
      num_devices: how many devices (default: all of `devices`).
      devices: the devices to choose from (default `jax.devices()`, every
        device of every process).

    Returns:
      `jax.sharding.Mesh` of shape `{"data": num_devices}`, axis type
      `AxisType.Auto` (module docstring).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        _checks.fail("devices", "at least one device", "an empty sequence")
    if num_devices is None:
        num_devices = len(devices)
    num_devices = _checks.positive_int("num_devices", num_devices)
    if num_devices > len(devices):
        _checks.fail("num_devices", f"at most the {len(devices)} devices available", num_devices)
    return jax.make_mesh(
        (num_devices,), (DATA_AXIS,), (AxisType.Auto,), devices=devices[:num_devices]
    )


def _check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        _checks.fail(
            "mesh", "a jax.sharding.Mesh (e.g. purenet.parallel.data_mesh())", type(mesh).__name__
        )
    if DATA_AXIS not in mesh.axis_names:
        _checks.fail("mesh", f"a mesh with a {DATA_AXIS!r} axis", f"axes {mesh.axis_names}")
    kind = mesh.axis_types[mesh.axis_names.index(DATA_AXIS)]
    if kind != AxisType.Auto:
        _checks.fail(
            "mesh",
            f"a {DATA_AXIS!r} axis of type AxisType.Auto (purenet.parallel.data_mesh makes one; "
            "Explicit sharding refuses the backward's x.T @ dy over the sharded batch axis)",
            f"AxisType.{kind.name}",
        )
    return mesh


def num_shards(mesh: Mesh) -> int:
    """The size of the mesh's `"data"` axis: how many pieces a batch is cut into."""
    return int(_check_mesh(mesh).shape[DATA_AXIS])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """`NamedSharding(mesh, P("data"))`: leading axis split over `"data"`,
    other axes (and other mesh axes) replicated."""
    return NamedSharding(_check_mesh(mesh), PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """`NamedSharding(mesh, P())`: a full copy on every device of the mesh."""
    return NamedSharding(_check_mesh(mesh), PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh) -> int:
    """`batch_size` if it is a positive multiple of the `"data"` axis size,
    else a `ValueError` naming `batch_size`."""
    batch_size = _checks.positive_int("batch_size", batch_size)
    n = num_shards(mesh)
    if batch_size % n:
        _checks.fail(
            "batch_size",
            f"a multiple of the number of devices on the mesh's {DATA_AXIS!r} axis ({n}), "
            "so that every device gets the same number of rows",
            batch_size,
        )
    return batch_size


# -------------------------------------------------------------------- placement


def _check_leading(name: str, tree, n: int) -> None:
    for leaf in jax.tree.leaves(tree):
        shape = jnp.shape(leaf)
        if not shape or shape[0] % n:
            _checks.fail(
                name,
                f"arrays whose leading axis is a multiple of the {n} devices on the mesh's "
                f"{DATA_AXIS!r} axis",
                f"shape {tuple(shape)}",
            )


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Place a batch (an array or a pytree such as `(x, t)`) with its rows
    split over `"data"`.

    Every leaf's leading axis must be a multiple of [`num_shards`][purenet.parallel.num_shards];
    `jax.device_put` does the copy. Outside `jit` only; inside, use
    [`constrain_batch`][purenet.parallel.constrain_batch].
    """
    _check_leading("batch", batch, num_shards(mesh))
    return jax.device_put(batch, batch_sharding(mesh))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of `tree` (params, optimizer state, a data set) in
    full on every device of `mesh`."""
    return jax.device_put(tree, replicated_sharding(mesh))


def constrain_batch(batch: Any, mesh: Mesh) -> Any:
    """Inside `jit`: ask for `batch`'s rows to be split over `"data"`
    (`jax.lax.with_sharding_constraint`).

    The training epoch calls this on the batch it gathers with `x[rows]`,
    which is what makes every device run the forward and backward on its own
    rows. Leading axes must be multiples of [`num_shards`][purenet.parallel.num_shards].
    """
    _check_leading("batch", batch, num_shards(mesh))
    return jax.lax.with_sharding_constraint(batch, batch_sharding(mesh))


def shard_seeds(tree: Any, mesh: Mesh) -> Any:
    """Place a stack of seeds with the seed axis split over `"data"`.

    `tree` is anything with one leading entry per seed: a stack of keys
    (`jax.random.split(key, n)`), the params initialised from them
    (`jax.vmap(init)(keys)`), their optimizer states. `jax.jit(jax.vmap(f))`
    of such inputs then runs each device's seeds on that device:

    ```python
    keys = parallel.shard_seeds(jax.random.split(key, 8), mesh)
    params = jax.jit(jax.vmap(lambda k: model.init(k, (d,))[1]))(keys)
    states = jax.vmap(opt.init)(params)
    params, states, losses = jax.jit(jax.vmap(epoch, (0, 0, 0, None, None)))(
        params, states, keys, x, t)            # x, t shared by every seed
    ```

    The number of seeds must be a multiple of [`num_shards`][purenet.parallel.num_shards].
    """
    _check_leading("seeds", tree, num_shards(mesh))
    return jax.device_put(tree, batch_sharding(mesh))


# ------------------------------------------------------ the explicit shard_map step


def make_shard_map_step(
    model: Layer,
    loss: Loss,
    optimizer: Optimizer,
    mesh: Mesh,
    *,
    penalty: Penalty | None = None,
) -> Callable:
    """`purenet.train.make_step` written per device with `jax.shard_map`.

    The ordinary step plus a mean over devices: each device runs the
    hand-written backprop on its rows of the batch; the cost and the
    gradients are then averaged over `"data"` with `jax.lax.pmean` (the
    per-device cost is a mean over equal-sized shards, so the mean of means
    is the global mean, and the penalty term, the same on every device,
    passes through unchanged). The optimizer's update (with any clipping
    chained in it) follows on the averaged gradient, identically on every
    device, so params and optimizer state stay replicated.

    The mean of means is the global mean only for a loss that is a mean over
    rows. The sequence loss averages over the steps whose label is not
    `IGNORE_LABEL`; when shards hold different numbers of such steps the
    `pmean` weighs them equally, not by their counts (measured: 1.4109 vs
    1.4328 for the one-device step on 4 sequences of lengths 5, 3, 4, 2 over
    2 devices). Use the GSPMD path (`make_epoch(..., mesh=)`), which
    computes the global loss, for padded sequences.

    Differences from the one-device step (module docstring): batch norm uses
    per-device batch statistics, and its running statistics are the
    `pmean` of the per-device ones; dropout's key is
    `fold_in(key, device index)`.

    Args:
      model, loss, optimizer, penalty: as in `purenet.train.make_step`.
      mesh: a mesh with a `"data"` axis ([`data_mesh`][purenet.parallel.data_mesh]).

    Returns:
      `step(params, opt_state, state, x, t, key, *, mask=None) ->
      (params, opt_state, state, J)`, the signature of `make_step`'s step;
      `x`, `t` (and `mask`, split by rows with them) need a leading
      axis that is a multiple of [`num_shards`][purenet.parallel.num_shards]. Wrap it in `jax.jit`.
    """
    n = num_shards(mesh)
    ordinary_step = make_step(
        model, loss, optimizer, penalty=penalty, mean=lambda tree: jax.lax.pmean(tree, DATA_AXIS)
    )

    def local_step(params, opt_state, state, x, t, key, mask):
        key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
        return ordinary_step(params, opt_state, state, x, t, key, mask=mask)

    rows, whole = PartitionSpec(DATA_AXIS), PartitionSpec()  # split by rows / replicated
    spread = jax.shard_map(
        local_step,
        mesh=mesh,
        in_specs=(whole, whole, whole, rows, rows, whole, rows),
        out_specs=whole,
    )

    def step(params, opt_state, state, x, t, key, *, mask=None):
        _check_leading("x", x, n)
        _check_leading("t", t, n)
        if mask is not None:
            _check_leading("mask", mask, n)
        return spread(params, opt_state, state, x, t, key, mask)

    return step
