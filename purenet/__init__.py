"""purenet: neural-network training from first principles, as pure JAX functions.

Every gradient used for training comes from a backward pass written by hand,
layer by layer, and is verified against `jax.grad` and finite differences
(`purenet.gradcheck`). Read the modules in this order; each imports only
modules above it:

    params       ravel / unravel ("unrolled theta"), initialisers
    activations  f and f' by hand
    metrics      accuracy for binary, multi-class, multi-label and sequence heads
    losses       value and dJ/dy by hand (fused softmax / sigmoid + cross-entropy)
    layers/      Layer = (init, forward, backward, update_state), one module per family
    models       reference architectures: gpt (+ Hugging Face GPT-2 weights), generate
    cost         backprop(model, loss, penalty), objective, flat_cost, penalties
    per_example  per-example gradients, their norms, the gradient noise scale
    feedback     learning rules beyond backprop: feedback alignment, sign symmetry, DFA
    gradcheck    check_vjp (one engine), finite differences, directional checks, reports
    testing      assert_gradients, assert_layer, assert_vjp, strategies, pytest plugin
    interop      custom_vjp: the hand-written backward inside any JAX program
    schedules    learning-rate schedules
    clipping     gradient clipping by value and by global norm
    optim        SGD, momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW
    data         one-hot, standardisation, splits, shuffled batches
    datasets     synthetic tasks, bundled real data, the IDX (MNIST) reader
    parallel     data parallelism: a device mesh, sharded batches, replicated params
    train        make_step, make_epoch, make_train (one jitted scan), fit, lbfgs,
                 accumulate_gradients (micro-batches)
    checkpoint   atomic .npz checkpoints of (params, opt_state, state), strict loading
"""

from importlib import metadata as _metadata

from purenet import (
    activations,
    checkpoint,
    clipping,
    cost,
    data,
    datasets,
    feedback,
    gradcheck,
    interop,
    layers,
    losses,
    metrics,
    models,
    optim,
    parallel,
    params,
    per_example,
    schedules,
    testing,
    train,
)
from purenet.cost import backprop, flat_cost, objective, penalty
from purenet.interop import custom_vjp
from purenet.params import ravel

__all__ = [
    "activations",
    "backprop",
    "checkpoint",
    "clipping",
    "cost",
    "custom_vjp",
    "data",
    "datasets",
    "feedback",
    "flat_cost",
    "gradcheck",
    "interop",
    "layers",
    "losses",
    "metrics",
    "models",
    "objective",
    "optim",
    "params",
    "parallel",
    "penalty",
    "per_example",
    "ravel",
    "schedules",
    "testing",
    "train",
]
try:
    # One version string: pyproject.toml's, as installed (pip install -e .).
    __version__ = _metadata.version("purenet")
except _metadata.PackageNotFoundError:  # pragma: no cover - run from a bare source tree
    __version__ = "0+unknown"
