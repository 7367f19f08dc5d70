"""Training: a gradient step, an epoch as one jitted `lax.scan`, and [`fit`][purenet.train.fit].

The recipe of the notes (Ng's course; Saito ch. 4.5): initialise, then
repeat { draw a mini-batch, forward, cost, backprop, update }. Every loop
carries three trees: `params` (what gradients train), `opt_state` (the
optimizer's slots) and `state` (non-gradient state such as batch norm's
running statistics; `()` for most models). Layers of API, each built from
the one below:

* [`make_step`][purenet.train.make_step] -> `step(params, opt_state, state, x, t, key, *,
  mask=None) -> (params, opt_state, state, J)`: one hand-written-gradient
  step, pure and jittable.
* [`make_epoch`][purenet.train.make_epoch] -> `epoch(params, opt_state, state, key, x, t, *,
  mask=None) -> (params, opt_state, state, step_losses)`: one shuffled pass
  over the data, every mini-batch step inside one `lax.scan`.
* [`make_train`][purenet.train.make_train] -> `train(params, opt_state, state, key, x, t, *,
  mask=None) -> (params, opt_state, state, history)`: many epochs as one `lax.scan`,
  pure, so `jax.jit` compiles a whole run and `jax.vmap` trains many
  seeds, learning rates or penalty strengths at once.
* [`accumulate_gradients`][purenet.train.accumulate_gradients]`(grad_fn, k)`:
  one batch's gradient as the mean over `k` micro-batches, one at a time
  (the memory of one micro-batch's caches), for any of the loops above or
  a loop of one's own.
* [`fit`][purenet.train.fit]: the eager loop over epochs (validation, progress line, NaN
  guard, history) for arrays in memory, with every input checked once,
  before any work.

Batch gradient descent, SGD and mini-batch training are one code path with
`batch_size = m`, `1` or `k` (see `purenet.data` for the rule when
`k` does not divide `m`: the leftover examples of each epoch's
permutation are dropped).

**Masks.** A padding mask (a bool array `(m, T)`, True at valid positions,
the layers' keyword `mask`) is not differentiated, so it travels beside the
data as the keyword `mask=` of every step, epoch, train and `fit`: its
rows are sliced with the batch's rows, so each example keeps its own mask.

**Determinism.** Epoch `e` uses the key `fold_in(key, e)`: the same key
gives the same shuffles and dropout masks, and a run resumed at epoch `e`
from a checkpoint (`start_epoch=e`) continues exactly where an
uninterrupted run would be, bit for bit on the same machine and JAX version.

**Non-gradient state.** After each optimizer step the step calls
`model.update_state(state, cache)` with the training forward's cache (batch
norm's running statistics; the identity for every other layer). The
optimizer never sees `state`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from purenet import _checks, _step, data, metrics, parallel
from purenet.cost import Penalty, flat_cost, objective
from purenet.layers import Layer, call_forward
from purenet.losses import Loss
from purenet.optim import Optimizer, as_optimizer
from purenet.params import ravel
from purenet.privacy import DPSGD, epsilon, max_batch_size, poisson_sample


def make_step(
    model: Layer,
    loss: Loss,
    optimizer: Optimizer,
    *,
    penalty: Penalty | None = None,
    privacy: DPSGD | None = None,
    expected_batch_size: int | None = None,
) -> Callable:
    """One training step with the hand-written gradient.

    Clipping, weight decay and any other change to the gradient are
    gradient transformations chained before the optimizer, e.g.
    `optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1))` (Pascanu
    et al. 2013's clipping), not options of the step.

    Args:
      model, loss: the network and its loss.
      optimizer: a [`purenet.optim`][purenet.optim] optimizer, a
        [`chain`][purenet.optim.chain] or any object with optax's `init` and
        `update` (an optax `GradientTransformation`); the step calls
        `update(grads, opt_state, params)` and `apply_updates`.
      penalty: an optional weight penalty (`purenet.penalty(l2=...)`).
      privacy: DP-SGD settings ([`purenet.privacy.dp_sgd`][purenet.privacy.dp_sgd]):
        the gradient is then [`dp_gradient`][purenet.privacy.dp_gradient]'s
        (per-example clipping and Gaussian noise, drawn from the step's `key`)
        over the rows that the step's `sampled` marks, divided by
        `expected_batch_size`.
      expected_batch_size: with `privacy`, the Poisson sample's expected size
        (default: each batch's row count).

    Returns:
      `step(params, opt_state, state, x, t, key, *, mask=None) ->
      (params, opt_state, state, J)`; `J` is the cost at the params *before*
      the update. `key` drives dropout; `mask` (the layers' padding mask,
      `(batch, T)` bools) is passed to the forward and backward. The step
      also takes `sampled=None`: with `privacy`, a bool `(batch,)` marking
      the rows of the Poisson sample (the others are padding).
    """
    _check_privacy(privacy)
    return _step.make_step(
        model,
        loss,
        optimizer,
        penalty=penalty,
        privacy=privacy,
        expected_batch_size=expected_batch_size,
    )


def _check_privacy(privacy):
    """`privacy` if it is `None` or [`DPSGD`][purenet.privacy.DPSGD] settings."""
    if privacy is not None and not isinstance(privacy, DPSGD):
        _checks.fail_type(
            "privacy", "None or DP-SGD settings (purenet.privacy.dp_sgd(...))", repr(privacy)
        )
    return privacy


def make_epoch(
    model: Layer,
    loss: Loss,
    optimizer: Optimizer,
    batch_size: int,
    num_examples: int,
    *,
    drop_remainder: bool = True,
    mesh: Mesh | None = None,
    **step_options: Any,
) -> Callable:
    """One epoch of shuffled mini-batch training as a pure function.

    Args:
      model, loss, optimizer: as in [`make_step`][purenet.train.make_step].
      batch_size: examples per step (`num_examples` for batch gradient
        descent, 1 for SGD).
      num_examples: rows of the training data (static, for the batch shapes).
      drop_remainder: see `purenet.data.batch_indices`.
      mesh: `None` (one device) or a mesh with a `"data"` axis
        (`purenet.parallel.data_mesh()`): each step's batch is then split by
        rows over `"data"` and `batch_size` must be a multiple of its
        size. Pass params, optimizer state, state, `x` and `t` replicated
        (`purenet.parallel.replicate`) and run the epoch under `jax.jit`.
      **step_options: `penalty`, `privacy`. With `privacy` (DP-SGD
        settings, [`purenet.privacy.dp_sgd`][purenet.privacy.dp_sgd]) the
        epoch is `num_examples // batch_size` steps, each on a Poisson sample
        (every example independently with probability `batch_size /
        num_examples`) padded to `privacy.max_batch_size` rows, which is what
        the privacy accounting assumes; `drop_remainder` is then unused.

    Returns:
      `epoch(params, opt_state, state, key, x, t, *, mask=None) ->
      (params, opt_state, state, step_losses)` with `step_losses` of shape
      `(num_batches,)`. `mask` (`(num_examples, T)` bools, or `None`)
      is sliced with the batch: each step gets its rows' masks.
    """
    if mesh is not None:
        parallel.check_batch_size(batch_size, mesh)
    if _check_privacy(step_options.get("privacy")) is not None:
        return _private_epoch(model, loss, optimizer, batch_size, num_examples, mesh, step_options)
    step = make_step(model, loss, optimizer, **step_options)
    count = data.num_batches(num_examples, batch_size, drop_remainder=drop_remainder)

    def epoch(params, opt_state, state, key, x, t, *, mask=None):
        shuffle_key, step_key = jax.random.split(key)
        indices = data.batch_indices(
            shuffle_key, num_examples, batch_size, drop_remainder=drop_remainder
        )
        batches = (indices, None, jax.random.split(step_key, count))
        return _scan_steps(step, mesh, (params, opt_state, state), batches, x, t, mask)

    return epoch


def _scan_steps(step, mesh, carry, batches, x, t, mask):
    """The epoch's `lax.scan` of `step` over `(rows, sampled, key)` per step."""

    def body(carry, batch):
        rows, sampled, k = batch
        # x may be a tuple of inputs; the mask's rows go with their examples
        xb, tb, mb = jax.tree.map(lambda a: a[rows], (x, t, mask))
        if mesh is not None:  # rows split over "data": the partitioner all-reduces grads
            xb, tb, mb, sampled = parallel.constrain_batch((xb, tb, mb, sampled), mesh)
        *carry, J = step(*carry, xb, tb, k, mask=mb, sampled=sampled)
        return tuple(carry), J

    carry, step_losses = jax.lax.scan(body, carry, batches)
    return (*carry, step_losses)


def _private_epoch(model, loss, optimizer, batch_size, num_examples, mesh, step_options):
    """DP-SGD's epoch: `num_examples // batch_size` steps on Poisson samples."""
    settings = step_options["privacy"]
    if batch_size > num_examples:
        _checks.fail("batch_size", f"at most num_examples ({num_examples})", batch_size)
    rate = batch_size / num_examples
    capacity = settings.max_batch_size or max_batch_size(num_examples, rate)
    if mesh is not None:  # the padded sample is what is split over the devices
        size = mesh.shape["data"]
        capacity = -(-capacity // size) * size
    step = make_step(model, loss, optimizer, **step_options, expected_batch_size=batch_size)
    count = num_examples // batch_size

    def epoch(params, opt_state, state, key, x, t, *, mask=None):
        sample_keys = jax.random.split(jax.random.fold_in(key, 0), count)
        rows, sampled = jax.vmap(lambda k: poisson_sample(k, num_examples, rate, capacity))(
            sample_keys
        )
        step_keys = jax.random.split(jax.random.fold_in(key, 1), count)
        batches = (rows, sampled, step_keys)
        return _scan_steps(step, mesh, (params, opt_state, state), batches, x, t, mask)

    return epoch


def make_train(
    model: Layer,
    loss: Loss,
    optimizer: Optimizer,
    batch_size: int,
    num_examples: int,
    epochs: int,
    *,
    evaluate: Callable | None = None,
    **epoch_options: Any,
) -> Callable:
    """Several epochs as one pure function: a `lax.scan` of
    [`make_epoch`][purenet.train.make_epoch].

    Unlike [`fit`][purenet.train.fit] (an eager loop with checks, a NaN guard and progress
    lines), the result is pure end to end, so `jax.jit` compiles a whole run
    and `jax.vmap` trains many seeds, learning rates (`optim.sgd(lr)` with
    a traced `lr`), penalty strengths or data sets at once. Epoch `e` uses
    the key `fold_in(key, e)`, as [`fit`][purenet.train.fit] does: the same key gives the
    same shuffles and dropout masks.

    Args:
      model, loss, optimizer, batch_size, num_examples: as in
          [`make_epoch`][purenet.train.make_epoch].
      epochs: the number of epochs (static).
      evaluate: optional `evaluate(params, state) -> pytree`, recorded after
        every epoch (e.g. `lambda p, s: make_evaluate(model, loss)(p, x_val,
        t_val, state=s)`).
      **epoch_options: `drop_remainder`, `mesh`, `penalty`.

    Returns:
      `train(params, opt_state, state, key, x, t, *, mask=None) ->
      (params, opt_state, state, history)` (`mask` as in
      [`make_epoch`][purenet.train.make_epoch]) with `history["step_loss"]` of shape `(epochs,
      num_batches)` and, when `evaluate` is given, `history["evaluation"]`:
      its outputs stacked over epochs.
    """
    epochs = _checks.positive_int("epochs", epochs)
    epoch = make_epoch(model, loss, optimizer, batch_size, num_examples, **epoch_options)

    def train(params, opt_state, state, key, x, t, *, mask=None):
        def body(carry, e):
            *carry, step_loss = epoch(*carry, jax.random.fold_in(key, e), x, t, mask=mask)
            record = {"step_loss": step_loss}
            if evaluate is not None:
                record["evaluation"] = evaluate(carry[0], carry[2])
            return tuple(carry), record

        carry, history = jax.lax.scan(body, (params, opt_state, state), jnp.arange(epochs))
        return (*carry, history)

    return train


def accumulate_gradients(grad_fn: Callable, micro_batches: int) -> Callable:
    """Gradient accumulation: one batch's cost and gradient as the mean over
    `micro_batches` equal slices of it, computed one slice at a time
    (a `lax.scan`), so that the memory of the forward caches is that of one
    micro-batch.

    For a loss that is a mean over the batch's rows (every purenet loss; for
    `purenet.losses.sequence_softmax_cross_entropy`
    when every micro-batch has the same number of counted steps), the mean of
    the micro-batches' means is the mean over the whole batch, so `k`
    micro-batches give the same update as one batch `k` times larger (to
    rounding). With padding labels spread unevenly the two differ, as in
    nanoGPT's loop.

    Args:
      grad_fn: `(params, x, t, **ctx) -> (J, grads)`, e.g.
        `purenet.backprop(model, loss)`.
      micro_batches: `k`, which must divide the batch size.

    Returns:
      `f(params, x, t, **ctx) -> (J, grads)` with `x`, `t` (arrays or pytrees of
      arrays with the batch on axis 0) of batch size `k * b`. A `key` in `ctx`
      is split into one key per micro-batch.
    """
    k = _checks.positive_int("micro_batches", micro_batches)

    def accumulated(params, x, t, **ctx):
        sizes = {np.shape(a)[0] for a in jax.tree.leaves((x, t))}
        if len(sizes) != 1 or next(iter(sizes)) % k:
            _checks.fail(
                "x",
                f"a batch whose size is a multiple of micro_batches = {k}",
                f"batch sizes {sorted(sizes)}",
            )
        m = next(iter(sizes))

        def split(a):
            return a.reshape(k, m // k, *a.shape[1:])

        xs, ts = jax.tree.map(split, x), jax.tree.map(split, t)
        key = ctx.pop("key", None)
        keys = None if key is None else jax.random.split(key, k)
        zeros = jax.tree.map(jnp.zeros_like, params)

        def body(carry, i):
            J_sum, g_sum = carry
            xi = jax.tree.map(lambda a: a[i], xs)
            ti = jax.tree.map(lambda a: a[i], ts)
            extra = {} if keys is None else {"key": keys[i]}
            J, g = grad_fn(params, xi, ti, **ctx, **extra)
            return (J_sum + J, jax.tree.map(jnp.add, g_sum, g)), None

        J0 = jnp.zeros((), jnp.result_type(*jax.tree.leaves(params)))
        (J, g), _ = jax.lax.scan(body, (J0, zeros), jnp.arange(k))
        return J / k, jax.tree.map(lambda a: a / k, g)

    return accumulated


def make_evaluate(model: Layer, loss: Loss, metric: Callable | None = None) -> Callable:
    """`evaluate(params, x, t, state=(), mask=None) -> (loss, metric)` in
    evaluation mode, jitted. The metric is `nan` when `metric` is `None`."""
    J = objective(model, loss)

    @jax.jit
    def evaluate(params, x, t, state=(), mask=None):
        value = J(params, x, t, state=state, mask=mask)
        if metric is None:
            return value, jnp.full((), jnp.nan, value.dtype)
        y, _ = call_forward(model, params, x, state=state, mask=mask)
        return value, metric(y, t).astype(value.dtype)

    return evaluate


class FitResult(NamedTuple):
    """What [`fit`][purenet.train.fit] returns.

    Attributes:
      params: the trained params (the last finite ones if the NaN guard
        stopped training).
      opt_state: the optimizer's state, from the same step as `params`.
      state: the model's non-gradient state, from the same step.
      history: NumPy arrays: `step_loss` `(epochs, num_batches)`,
        `epoch_loss` (mean step loss), `train_loss` and `train_metric`
        (whole training set, evaluation mode), `val_loss` and
        `val_metric` (when validation data is given), `seconds`, and with
        DP-SGD `epsilon` (the privacy spent by the end of each epoch).
      stopped: `None`, or the NaN guard's message.
    """

    params: object
    opt_state: object
    state: object
    history: dict
    stopped: str | None


def check_data(
    model: Layer,
    loss: Loss,
    params: Any,
    x: jax.Array | tuple[jax.Array, ...],
    t: jax.Array,
    *,
    state: Any = (),
    mask: jax.Array | None = None,
    name_x: str = "x",
    name_t: str = "t",
    name_mask: str = "mask",
) -> None:
    """Eager, before any work: dtypes, finiteness, shapes and label ranges.

    `x` is a batch `(m, *in_shape)` of floats, or of integer token ids for
    a model that starts with an embedding, or a tuple of such batches for a
    model with several inputs; `t` has `m` rows; `mask`, when given, is
    a bool array `(m, T)`. The params are checked against the model's
    `init` (`purenet.layers.check_params`).
    """
    inputs = x if isinstance(x, tuple) else (x,)
    names = [f"{name_x}[{i}]" for i in range(len(inputs))] if isinstance(x, tuple) else [name_x]
    for name, xi in zip(names, inputs, strict=True):
        if not hasattr(xi, "shape") or jnp.ndim(xi) < 2:
            _checks.fail(name, "a batch of shape (m, ...) with at least 2 axes", _shape_of(xi))
        if jnp.issubdtype(jnp.result_type(xi), jnp.floating):
            _checks.float_array(name, xi)
            _checks.all_finite(name, xi)
        if jnp.shape(xi)[:1] != jnp.shape(inputs[0])[:1]:
            _checks.fail(name, f"{inputs[0].shape[0]} rows, like {names[0]}", _shape_of(xi))
    if jnp.issubdtype(jnp.result_type(t), jnp.floating):
        _checks.all_finite(name_t, t)
    if jnp.shape(t)[:1] != jnp.shape(inputs[0])[:1]:
        _checks.fail(name_t, f"{inputs[0].shape[0]} rows, one per row of {name_x}", _shape_of(t))
    if mask is not None:
        m = inputs[0].shape[0]
        if not hasattr(mask, "shape") or jnp.ndim(mask) != 2 or jnp.shape(mask)[0] != m:
            _checks.fail(
                name_mask, f"a bool array of shape ({m}, T), one row per example", _shape_of(mask)
            )
        if jnp.result_type(mask) != jnp.bool_:
            _checks.fail(
                name_mask,
                "a bool array (True at valid positions)",
                f"dtype {jnp.result_type(mask)}",
            )

    # Static checks of the model (params against its init), the mask and the
    # loss on the real shapes, no compute. `t` stays concrete (closed over,
    # not traced), so the loss checks its label values by its own rule
    # (e.g. the sequence loss's -1 for ignored steps).
    def cost(p, s, x, mk):
        return objective(model, loss)(p, x, t, state=s, mask=mk)

    try:
        jax.eval_shape(cost, params, state, x, mask)
    except ValueError as error:
        text = str(error)
        if name_t != "t" and text.startswith("t:"):
            raise ValueError(f"{name_t}:{text[2:]}") from None
        if name_mask != "mask" and text.startswith("mask:"):
            raise ValueError(f"{name_mask}:{text[5:]}") from None
        raise


def _shape_of(x) -> str:
    return f"shape {tuple(jnp.shape(x))}" if hasattr(x, "shape") else type(x).__name__


def _all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def _check_fit_arguments(
    model, loss, params, state, x, t, mask, epochs, batch_size, start_epoch, validation
):
    """Every check of [`fit`][purenet.train.fit], once, before any work. Returns the number of
    rows."""
    epochs = _checks.positive_int("epochs", epochs)
    if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
        _checks.fail("start_epoch", "a non-negative integer", repr(start_epoch))
    first = x[0] if isinstance(x, tuple) and x else x
    m = jnp.shape(first)[0] if jnp.ndim(first) else 0
    if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > m >= 1:
        _checks.fail("batch_size", f"at most the number of examples ({m})", batch_size)
    _checks.positive_int("batch_size", batch_size)
    check_data(model, loss, params, x, t, state=state, mask=mask)
    if validation is not None:
        if not isinstance(validation, tuple) or len(validation) not in (2, 3):
            _checks.fail(
                "validation",
                "a pair (x_val, t_val) or a triple (x_val, t_val, mask_val)",
                f"a {type(validation).__name__} of length {len(validation)}"
                if isinstance(validation, tuple | list)
                else type(validation).__name__,
            )
        if (len(validation) == 3) != (mask is not None):
            _checks.fail(
                "validation",
                "(x_val, t_val, mask_val) when mask is given, (x_val, t_val) when not",
                f"{len(validation)} entries with mask={'given' if mask is not None else 'None'}",
            )
        check_data(
            model,
            loss,
            params,
            *validation[:2],
            state=state,
            mask=validation[2] if len(validation) == 3 else None,
            name_x="validation[0]",
            name_t="validation[1]",
            name_mask="validation[2]",
        )
    return m


def _nan_message(e: int, step_losses: np.ndarray) -> str:
    bad = np.flatnonzero(~np.isfinite(step_losses))
    where = (
        f"step {e * len(step_losses) + int(bad[0])} (epoch {e}, batch {int(bad[0])})"
        if bad.size
        else f"the params after epoch {e}"
    )
    return (
        f"non-finite loss at {where}; training stopped and the params, optimizer "
        f"state and state from the start of epoch {e}, the last known finite ones, are returned"
    )


def _record_epoch(history, evaluate, params, state, x, t, mask, validation, step_losses):
    """Append one epoch's numbers to `history`; return the progress line."""
    history["step_loss"].append(step_losses)
    history["epoch_loss"].append(float(np.mean(step_losses)))
    line = f"loss {history['epoch_loss'][-1]:.5f}"
    sets = [("train", (x, t, mask))]
    if validation is not None:
        sets.append(("val", (*validation[:2], validation[2] if len(validation) == 3 else None)))
    for name, (xs, ts, ms) in sets:
        value, metric = evaluate(params, xs, ts, state, ms)
        history[f"{name}_loss"].append(float(value))
        history[f"{name}_metric"].append(float(metric))
        if name == "val":
            line += f"  val_loss {float(value):.5f}"
        if not np.isnan(float(metric)):
            line += f"  {name}_metric {float(metric):.4f}"
    return line


def fit(
    model: Layer,
    loss: Loss,
    optimizer: Optimizer,
    params: Any,
    x: jax.Array | tuple[jax.Array, ...],
    t: jax.Array,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int,
    state: Any = (),
    mask: jax.Array | None = None,
    opt_state: Any = None,
    start_epoch: int = 0,
    validation: tuple | None = None,
    metric: str | Callable | None = "auto",
    nan_guard: bool = True,
    progress: bool = False,
    drop_remainder: bool = True,
    mesh: Mesh | None = None,
    penalty: Penalty | None = None,
    privacy: DPSGD | None = None,
) -> FitResult:
    """Train `model` on arrays in memory.

    Args:
      model, loss, optimizer: the network, its loss and an optimizer (a
        `purenet.optim` one, a chain, or any object with optax's `init`
        and `update`).
      params: initial params (never modified: JAX arrays are immutable).
      x, t: training inputs `(m, *in_shape)` (a tuple of them for a model
        with several inputs) and targets.
      key: a `jax.random` key for shuffling and dropout.
      epochs: epochs to run, counted from `start_epoch`.
      batch_size: examples per step.
      state: the model's non-gradient state (from `model.init`; `()` for
        models without batch norm).
      mask: an optional padding mask, a bool array `(m, T)` (True at valid
        positions), passed to the layers' keyword `mask` with its rows
        sliced like the batch's.
      opt_state: optimizer state to resume from (default `optimizer.init`).
      start_epoch: index of the first epoch (to resume from a checkpoint).
      validation: optional `(x_val, t_val)`, or `(x_val, t_val, mask_val)`
        when `mask` is given, evaluated after every epoch.
      metric: `"auto"` (the metric the loss names, `loss.metric`, via
        `purenet.metrics.for_loss`), `None` or a function
        `metric(y, t) -> scalar`.
      nan_guard: stop at the first non-finite loss or params and return the
        trees from the start of that epoch, the last ones known to be finite.
      progress: print one line per epoch.
      drop_remainder: see `purenet.data.batch_indices`.
      mesh: `None` (one device) or a mesh with a `"data"` axis
        (`purenet.parallel.data_mesh()`) for data parallelism: params,
        states and data are replicated on its devices and each step's batch
        is split by rows (`batch_size` must be a multiple of the `"data"`
        axis size). Same results up to float rounding.
      penalty: as in [`make_step`][purenet.train.make_step].
      privacy: DP-SGD settings ([`purenet.privacy.dp_sgd`][purenet.privacy.dp_sgd]):
        Poisson-sampled steps with the expected size `batch_size`, per-example
        clipping and Gaussian noise (see [`make_epoch`][purenet.train.make_epoch]);
        `history["epsilon"]` then holds the `epsilon` spent after each epoch
        at `privacy.delta` ([`purenet.privacy.epsilon`][purenet.privacy.epsilon]),
        and the progress line shows it. A `delta` not below `1 / m` is
        warned about before any work.

    Returns:
      A [`FitResult`][purenet.train.FitResult].
    """
    m = _check_fit_arguments(
        model, loss, params, state, x, t, mask, epochs, batch_size, start_epoch, validation
    )
    metric = metrics.for_loss(loss) if metric == "auto" else metric
    if _check_privacy(privacy) is not None:
        rate, steps_per_epoch = batch_size / m, m // batch_size
        # checks delta against 1/m (a warning) before any work
        epsilon(privacy.noise_multiplier, rate, 0, privacy.delta, dataset_size=m)
    epoch_fn = jax.jit(
        make_epoch(
            model,
            loss,
            optimizer,
            batch_size,
            m,
            drop_remainder=drop_remainder,
            mesh=mesh,
            penalty=penalty,
            privacy=privacy,
        )
    )
    evaluate = make_evaluate(model, loss, metric)
    optimizer = as_optimizer(optimizer)
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    if mesh is not None:
        params, opt_state, state, x, t, mask, validation = parallel.replicate(
            (params, opt_state, state, x, t, mask, validation), mesh
        )

    names = ["step_loss", "epoch_loss", "train_loss", "train_metric", "seconds"]
    names += ["val_loss", "val_metric"] if validation is not None else []
    names += ["epsilon"] if privacy is not None else []
    history = {name: [] for name in names}
    stopped = None
    for e in range(start_epoch, start_epoch + epochs):
        started = time.perf_counter()
        epoch_key = jax.random.fold_in(key, e)
        *new, step_losses = epoch_fn(params, opt_state, state, epoch_key, x, t, mask=mask)
        step_losses = np.asarray(step_losses)
        if nan_guard and not (np.all(np.isfinite(step_losses)) and _all_finite(new[0])):
            stopped = _nan_message(e, step_losses)
            warnings.warn(stopped, RuntimeWarning, stacklevel=2)
            break
        params, opt_state, state = new
        line = _record_epoch(history, evaluate, params, state, x, t, mask, validation, step_losses)
        if privacy is not None:
            steps = (e + 1) * steps_per_epoch
            spent = epsilon(privacy.noise_multiplier, rate, steps, privacy.delta)
            history["epsilon"].append(spent)
            line += f"  epsilon {spent:.3g} (delta {privacy.delta:g})"
        history["seconds"].append(time.perf_counter() - started)
        if progress:
            print(f"epoch {e + 1:>4}  {line}  ({history['seconds'][-1]:.2f}s)", flush=True)
    history = {k: np.asarray(v) for k, v in history.items()}
    return FitResult(params, opt_state, state, history, stopped)


def lbfgs(
    model: Layer,
    loss: Loss,
    params: Any,
    x: jax.Array,
    t: jax.Array,
    *,
    state: Any = (),
    penalty: Penalty | None = None,
    max_iterations: int = 200,
    tolerance: float = 1e-9,
) -> tuple[Any, dict]:
    """Full-batch L-BFGS through the flat-theta cost (the course's "advanced
    optimizer" path, `fmincg` / `fminunc` on unrolled theta).

    Uses `scipy.optimize.minimize(method="L-BFGS-B", jac=True)` (SciPy is a
    dependency of JAX). The cost and gradient are evaluated by the jitted
    hand-written backprop in the params' dtype; SciPy works in float64.
    Only `params` are optimised; `state` (evaluation mode) is held fixed.

    Returns:
      `(params, info)`: the trained params (same dtypes as given) and a dict
      with `loss` (per iteration), `iterations`, `evaluations`,
      `success` and `message`.
    """
    import scipy.optimize

    max_iterations = _checks.positive_int("max_iterations", max_iterations)
    tolerance = _checks.positive("tolerance", tolerance)
    check_data(model, loss, params, x, t, state=state)
    theta0, unravel = ravel(params)
    cost = jax.jit(flat_cost(model, loss, unravel, penalty))
    loss_per_iteration = []

    def fun(theta):
        J, g = cost(jnp.asarray(theta, theta0.dtype), x, t, state=state)
        return float(J), np.asarray(g, np.float64)

    def record(intermediate_result):
        loss_per_iteration.append(float(intermediate_result.fun))

    result = scipy.optimize.minimize(
        fun,
        np.asarray(theta0, np.float64),
        jac=True,
        method="L-BFGS-B",
        callback=record,
        options={"maxiter": max_iterations, "ftol": tolerance, "gtol": tolerance},
    )
    info = {
        "loss": np.asarray(loss_per_iteration),
        "iterations": int(result.nit),
        "evaluations": int(result.nfev),
        "success": bool(result.success),
        "message": str(result.message),
    }
    return unravel(jnp.asarray(result.x, theta0.dtype)), info
