"""The one training step, shared by `purenet.train.make_step` and the data-parallel step.

Kept apart from `purenet.train` so that `purenet.parallel` (which `train`
imports) can build its per-device step from the same code: the data-parallel
step is this step with `mean` set to a `pmean` over devices.
"""

from __future__ import annotations

from collections.abc import Callable

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
) -> Callable:
    """`step(params, opt_state, state, x, t, key, *, mask=None) -> (params, opt_state, state, J)`.

    Backprop, then `mean` on the cost and gradients (and on the new
    non-gradient state), then the optimizer's update and `apply_updates`.
    `optimizer` is anything with `init` and `update` (`purenet.optim.as_optimizer`).
    """
    optimizer = as_optimizer(optimizer)
    grad_fn = backprop(model, loss, penalty, return_cache=True)

    def step(params, opt_state, state, x, t, key, *, mask=None):
        J, grads, cache = grad_fn(params, x, t, state=state, train=True, key=key, mask=mask)
        J, grads = mean((J, grads))
        params, opt_state = optimizer.step(params, grads, opt_state)
        return params, opt_state, mean(model.update_state(state, cache)), J

    return step
