"""purenet: neural-network training from first principles, as pure JAX functions.

Every gradient used for training comes from a backward pass written by hand,
layer by layer, and is verified against ``jax.grad`` and finite differences
(``purenet.gradcheck``). Read the modules in this order; each imports only
modules above it::

    params       ravel / unravel ("unrolled theta"), initialisers
    activations  f and f' by hand
    losses       value and dJ/dy by hand (fused softmax / sigmoid + cross-entropy)
    layers       Layer = (init, forward, backward); dense, activations, dropout, batchnorm, serial
    backprop     backprop(model, loss), objective(model, loss), flat_cost
    gradcheck    finite differences, directional checks, reports
    schedules    learning-rate schedules, gradient clipping
    optim        SGD, momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW
    data         one-hot, standardisation, splits, shuffled batches
    datasets     synthetic tasks, bundled real data, the IDX (MNIST) reader
    metrics      accuracy for binary, multi-class and multi-label heads
    parallel     data parallelism: a device mesh, sharded batches, replicated params
    train        make_step, make_epoch (one jitted scan), fit, lbfgs
    checkpoint   atomic .npz checkpoints, strict loading
"""

from purenet import (
    activations,
    checkpoint,
    data,
    datasets,
    gradcheck,
    layers,
    losses,
    metrics,
    optim,
    parallel,
    params,
    schedules,
    train,
)
from purenet.backprop import backprop, flat_cost, objective, penalty, penalty_grad
from purenet.params import ravel

__all__ = [
    "activations",
    "backprop",
    "checkpoint",
    "data",
    "datasets",
    "flat_cost",
    "gradcheck",
    "layers",
    "losses",
    "metrics",
    "objective",
    "optim",
    "parallel",
    "params",
    "penalty",
    "penalty_grad",
    "ravel",
    "schedules",
    "train",
]
__version__ = "0.1.0"
