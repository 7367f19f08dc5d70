"""The one training step, shared by `purenet.train.make_step` and the data-parallel step.

Kept apart from `purenet.train` so that `purenet.parallel` (which `train`
imports) can build its per-device step from the same code: the data-parallel
step is this step with `mean` set to a `pmean` over devices.
"""

from __future__ import annotations

from collections.abc import Callable

from purenet import privacy as dp
from purenet.cost import Penalty, backprop
from purenet.layers import Layer
from purenet.losses import Loss
from purenet.optim import as_optimizer


def _identity(tree):
    return tree


def make_step(
    model: Layer,
    loss: Loss,
    optimizer,
    *,
    penalty: Penalty | None = None,
    mean: Callable = _identity,
    privacy: dp.DPSGD | None = None,
    expected_batch_size: int | None = None,
) -> Callable:
    """`step(params, opt_state, state, x, t, key, *, mask=None, sampled=None) ->
    (params, opt_state, state, J)`.

    Backprop, then `mean` on the cost and gradients (and on the new
    non-gradient state), then the optimizer's update and `apply_updates`.
    `optimizer` is anything with `init` and `update` (`purenet.optim.as_optimizer`).
    With `privacy` (DP-SGD settings) the gradient is `privacy.dp_gradient`'s,
    divided by `expected_batch_size`, over the rows that `sampled` marks; the
    non-gradient state is kept (DP-SGD refuses layers that couple examples,
    the only ones that update it from a cache).
    """
    optimizer = as_optimizer(optimizer)
    if privacy is not None:
        if penalty is not None:
            raise ValueError(
                "penalty: expected None with privacy (a weight penalty's gradient is not "
                "clipped per example; chain optim.add_decayed_weights instead), got a Penalty"
            )
        dp_fn = dp.dp_gradient(
            model, loss, l2_clip=privacy.l2_clip, noise_multiplier=privacy.noise_multiplier
        )

        def private_step(params, opt_state, state, x, t, key, *, mask=None, sampled=None):
            J, grads = dp_fn(
                params,
                x,
                t,
                key=key,
                batch_size=expected_batch_size,
                sampled=sampled,
                state=state,
                train=True,
                mask=mask,
            )
            J, grads = mean((J, grads))
            params, opt_state = optimizer.step(params, grads, opt_state)
            return params, opt_state, state, J

        return private_step

    grad_fn = backprop(model, loss, penalty, return_cache=True)

    def step(params, opt_state, state, x, t, key, *, mask=None, sampled=None):
        if sampled is not None:
            raise ValueError("sampled: expected None without privacy settings, got an array")
        J, grads, cache = grad_fn(params, x, t, state=state, train=True, key=key, mask=mask)
        J, grads = mean((J, grads))
        params, opt_state = optimizer.step(params, grads, opt_state)
        return params, opt_state, mean(model.update_state(state, cache)), J

    return step
