"""Every bad input we know of, the exception it raises and the message the user sees.

This list is the source of ``docs/errors.md``: ``python -m tests.test_errors``
regenerates that table from the messages the code actually raises, and the
test below fails when a message stops naming its argument.
"""

from __future__ import annotations

import re
import sys

import jax
import jax.numpy as jnp
import pytest

import purenet
from purenet import (
    checkpoint,
    data,
    datasets,
    feedback,
    losses,
    models,
    optim,
    params,
    privacy,
    schedules,
    train,
)
from purenet import layers as L
from purenet.train import fit

KEY = jax.random.key(0)
MODEL = L.serial(L.dense(3), L.relu(), L.dense(1))
PARAMS = MODEL.init(KEY, (2,))[1]
X = jnp.ones((8, 2), jnp.float32)
T = jnp.ones((8, 1), jnp.float32)
Y3 = jnp.zeros((4, 3), jnp.float32)
BN_MODEL = L.serial(L.dense(3), L.batchnorm(), L.dense(1))
BN_PARAMS = BN_MODEL.init(KEY, (2,))[1]
# a user's layer built without a per-example rule
USER_MODEL = L.serial(
    L.dense(2),
    L.make_layer(
        lambda key, in_shape, dtype=jnp.float32: (in_shape, {"s": jnp.ones((), dtype)}, ()),
        lambda params, x, **context: (params["s"] * x, x),
        lambda params, cache, dy: ({"s": jnp.sum(cache * dy)}, params["s"] * dy),
        name="my_scale",
    ),
)
USER_PARAMS = USER_MODEL.init(KEY, (2,))[1]


def _fit(**overrides):
    args = {"x": X, "t": T, "key": KEY, "epochs": 1, "batch_size": 4, **overrides}
    x, t = args.pop("x"), args.pop("t")
    return fit(MODEL, losses.sigmoid_binary_cross_entropy, optim.sgd(0.1), PARAMS, x, t, **args)


GPT = models.gpt(11, 8, 1, 2, 8)
GPT_PARAMS = GPT.init(KEY, (8,))[1]
IDS = jnp.zeros((1, 4), jnp.int32)


# a user's layer written before the context keywords: `forward(params, x)`
OLD = L.Layer(
    lambda key, in_shape, dtype=jnp.float32: (in_shape, (), ()),
    lambda params, x: (3 * x, ()),
    lambda params, cache, dy: ((), 3 * dy),
    name="scale3",
)
SEQ = jnp.ones((2, 3, 2), jnp.float32)
SEQ_MASK = jnp.ones((2, 3), bool)
CONV = L.conv1d(2, 3)


def _load_missing():
    return checkpoint.load("/nonexistent/run.npz", PARAMS)


# (area, bad input, call, exception, pattern the message must match)
CASES = [
    (
        "model",
        "input with the wrong number of features",
        lambda: MODEL.forward(PARAMS, jnp.ones((8, 5))),
        ValueError,
        r"x: expected a batch of shape \(m, \.\.\., 2\)",
    ),
    (
        "model",
        "params that do not match the layers",
        lambda: MODEL.forward(PARAMS[:2], X),
        ValueError,
        r"params \(serial\): expected a tuple of length 3, got a tuple of length 2",
    ),
    (
        "model",
        "params of a wider instance, which the layer takes as a wrong x",
        lambda: L.multi_head_attention(2).forward(
            L.multi_head_attention(2).init(KEY, (3, 6))[1], jnp.ones((2, 3, 4))
        ),
        ValueError,
        r"x: expected a batch of shape \(m, T, 6\) .*; or, if x is right, params that do not "
        r"fit it: params\['Wk'\] \(multi_head_attention\(2\)\): expected shape \(4, 4\)",
    ),
    (
        "layers",
        "layer size 0",
        lambda: L.dense(0),
        ValueError,
        r"n: expected a positive integer, got 0",
    ),
    (
        "layers",
        "layer size 2.5",
        lambda: L.dense(2.5),
        ValueError,
        r"n: expected a positive integer, got 2.5",
    ),
    (
        "layers",
        "dropout rate 1.0",
        lambda: L.dropout(1.0),
        ValueError,
        r"rate: expected a number in \[0.0, 1.0\)",
    ),
    (
        "layers",
        "dropout in training mode without a key",
        lambda: L.dropout(0.5).forward((), X, train=True),
        ValueError,
        r"key: expected a jax.random key for dropout in training mode",
    ),
    (
        "layers",
        "negative leaky ReLU slope",
        lambda: L.leaky_relu(-0.1),
        ValueError,
        r"slope: expected a number in \[0.0, 1.0\]",
    ),
    (
        "layers",
        "something that is not a layer in serial",
        lambda: L.serial(L.dense(2), jnp.tanh),
        TypeError,
        r"layers\[1\]: expected a purenet Layer",
    ),
    (
        "layers",
        "a padding mask for a layer whose forward has no `mask` keyword",
        lambda: L.serial(L.dense(2), OLD).forward(
            L.serial(L.dense(2), OLD).init(KEY, (3, 2))[1], SEQ, mask=SEQ_MASK
        ),
        TypeError,
        r"serial\[1\] \(scale3\): mask: scale3 cannot take a padding mask: its forward has no "
        r"`mask` keyword",
    ),
    (
        "layers",
        "a padding mask for a layer that mixes positions without honouring it (conv1d)",
        lambda: L.call_forward(CONV, CONV.init(KEY, (3, 2))[1], SEQ, mask=SEQ_MASK),
        TypeError,
        r"mask: conv1d\(2\) cannot take a padding mask: its forward has no `mask` keyword",
    ),
    (
        "layers",
        "a state for a layer whose forward has no `state` keyword",
        lambda: L.call_forward(OLD, (), X, state={"mean": X}),
        TypeError,
        r"state: scale3 cannot take state: its forward has no `state` keyword",
    ),
    (
        "layers",
        "a context keyword a layer's forward does not name, not None",
        lambda: L.call_forward(OLD, (), X, segment_ids=jnp.zeros(8, jnp.int32)),
        TypeError,
        r"segment_ids: scale3 cannot take `segment_ids`: its forward has no `segment_ids` keyword",
    ),
    (
        "layers",
        "unknown initialiser name",
        lambda: L.dense(3, W_init="glorot"),
        ValueError,
        r"init: expected a callable or one of",
    ),
    (
        "losses",
        "target (m,) against output (m, 1)",
        lambda: losses.mse.value(jnp.zeros((8, 1)), jnp.zeros(8)),
        ValueError,
        r"t: expected a target of the output's shape \(8, 1\).*t\[:, None\]",
    ),
    (
        "losses",
        "one-hot targets of the wrong width",
        lambda: losses.softmax_cross_entropy.value(Y3, jnp.zeros((4, 4))),
        ValueError,
        r"t: expected a target of the output's shape \(4, 3\)",
    ),
    (
        "losses",
        "labels out of range",
        lambda: losses.softmax_cross_entropy.value(Y3, jnp.array([0, 1, 2, 3])),
        ValueError,
        r"t: expected labels in \[0, 3\), got label 3",
    ),
    (
        "losses",
        "float labels",
        lambda: losses.softmax_cross_entropy.value(Y3, jnp.array([0.0, 1.0, 2.0, 1.0])),
        ValueError,
        r"t: expected integer class labels",
    ),
    (
        "losses",
        "binary cross-entropy on 3 output units",
        lambda: losses.sigmoid_binary_cross_entropy.value(Y3, Y3),
        ValueError,
        r"y: expected one output unit",
    ),
    (
        "losses",
        "float16 outputs",
        lambda: losses.mse.value(Y3.astype(jnp.float16), Y3.astype(jnp.float16)),
        ValueError,
        r"y: expected float32 or float64 data",
    ),
    (
        "losses",
        "unknown loss name",
        lambda: losses.get("hinge"),
        ValueError,
        r"loss: expected one of",
    ),
    (
        "layers",
        "batch norm in evaluation mode without its state",
        lambda: L.batchnorm().forward(L.batchnorm().init(KEY, (2,))[1], X),
        ValueError,
        r"state: expected batchnorm's running statistics",
    ),
    (
        "combinators",
        "fan_in_sum of inputs of different shapes",
        lambda: L.fan_in_sum().init(KEY, ((2,), (3,))),
        ValueError,
        r"in_shape: expected input shapes that are all equal",
    ),
    (
        "combinators",
        "fan_in_concat along the batch axis",
        lambda: L.fan_in_concat(axis=0),
        ValueError,
        r"axis: expected a non-zero int",
    ),
    (
        "combinators",
        "residual around a layer that changes the shape",
        lambda: L.residual(L.dense(3)).init(KEY, (2,)),
        ValueError,
        r"layer: expected a layer that keeps the shape \(2,\)",
    ),
    (
        "combinators",
        "one array into parallel",
        lambda: L.parallel(L.dense(1), L.dense(1)).forward(
            L.parallel(L.dense(1), L.dense(1)).init(KEY, ((2,), (2,)))[1], X
        ),
        ValueError,
        r"x: expected a tuple of 2 arrays for parallel",
    ),
    (
        "cost",
        "a penalty given as a dict",
        lambda: purenet.backprop(MODEL, losses.mse, {"l2": 0.1}),
        TypeError,
        r"penalty: expected None or a purenet Penalty",
    ),
    (
        "cost",
        "negative L2 strength",
        lambda: purenet.penalty(l2=-1.0),
        ValueError,
        r"l2: expected a number in \[0.0, inf\)",
    ),
    (
        "cost",
        "a loss given by name",
        lambda: purenet.backprop(MODEL, "mse"),
        TypeError,
        r"loss: expected a purenet Loss",
    ),
    (
        "per_example",
        "a model that is not a Layer",
        lambda: purenet.per_example.grads(lambda x: x, losses.mse),
        TypeError,
        r"model: expected a purenet Layer",
    ),
    (
        "per_example",
        "batch norm in training mode (examples interact)",
        lambda: purenet.per_example.norms(BN_MODEL, losses.mse)(BN_PARAMS, X, T, train=True),
        ValueError,
        r"serial\[1\] \(batchnorm\): per-example gradients: batch norm in training mode "
        r"couples the examples",
    ),
    (
        "per_example",
        "a layer with params and no per-example rule",
        lambda: purenet.per_example.grads(USER_MODEL, losses.mse)(USER_PARAMS, X, X),
        ValueError,
        r"serial\[1\] \(my_scale\): per-example gradients: my_scale has params but no "
        r"per-example rule",
    ),
    (
        "per_example",
        "a gradient noise estimate from one example",
        lambda: purenet.per_example.gradient_noise(jnp.ones(1), PARAMS),
        ValueError,
        r"sq_norms: expected leaves of one length B >= 2",
    ),
    (
        "params",
        "theta of the wrong length for unravel",
        lambda: purenet.ravel(PARAMS)[1](jnp.ones(3)),
        ValueError,
        r"theta: expected a 1-D array of length 13",
    ),
    ("optim", "negative learning rate", lambda: optim.sgd(-0.1), ValueError, r"learning_rate"),
    ("optim", "momentum mass 1.0", lambda: optim.momentum(0.1, 1.0), ValueError, r"mass"),
    ("optim", "Adam b1 = 1", lambda: optim.adam(1e-3, b1=1.0), ValueError, r"b1"),
    ("optim", "Adam b2 = -0.1", lambda: optim.adam(1e-3, b2=-0.1), ValueError, r"b2"),
    ("optim", "RMSprop decay 1.5", lambda: optim.rmsprop(1e-3, decay=1.5), ValueError, r"decay"),
    ("optim", "AdaGrad eps 0", lambda: optim.adagrad(1e-2, eps=0.0), ValueError, r"eps"),
    (
        "optim",
        "AdamW negative weight decay",
        lambda: optim.adamw(1e-3, weight_decay=-1.0),
        ValueError,
        r"weight_decay",
    ),
    ("optim", "learning rate inf", lambda: optim.sgd(float("inf")), ValueError, r"learning_rate"),
    (
        "optim",
        "gradients that do not match the params",
        lambda: optim.sgd(0.1).step(
            {"a": jnp.ones(2)}, {"a": jnp.ones(3)}, optim.sgd(0.1).init({"a": jnp.ones(2)})
        ),
        ValueError,
        r"grads",
    ),
    (
        "optim",
        "a chain of things that are not transforms",
        lambda: optim.chain(optim.clip_by_global_norm(1.0), "adam"),
        TypeError,
        r"transforms\[1\]: expected a gradient transformation \(an object with init and update\)",
    ),
    (
        "optim",
        "a state that is not the optimizer's own",
        lambda: optim.adam().update(jnp.ones(2), optim.sgd(0.1).init(jnp.ones(2))),
        TypeError,
        r"state: expected the AdamState that this optimizer's init gives, got SgdState",
    ),
    (
        "optim",
        "momentum's trace with decay 1",
        lambda: optim.trace(1.0),
        ValueError,
        r"decay: expected a number in \[0.0, 1.0\)",
    ),
    (
        "optim",
        "clip_by_global_norm with max_norm 0",
        lambda: optim.clip_by_global_norm(0.0),
        ValueError,
        r"max_norm: expected a number in \(0.0, inf\), got 0.0",
    ),
    (
        "optim",
        "elementwise clip with a negative limit",
        lambda: optim.clip(-1.0),
        ValueError,
        r"limit: expected a number in \(0.0, inf\)",
    ),
    (
        "optim",
        "negative weight-decay rate",
        lambda: optim.add_decayed_weights(-0.1),
        ValueError,
        r"rate: expected a number in \[0.0, inf\)",
    ),
    (
        "optim",
        "a weight-decay mask whose structure differs from params",
        lambda: optim.adamw(mask={"W": True}).init({"W": jnp.ones((2, 2)), "b": jnp.ones(2)}),
        ValueError,
        r"mask: expected a pytree of bools with the structure of params",
    ),
    (
        "optim",
        "a weight-decay mask of numbers",
        lambda: optim.add_decayed_weights(0.1, mask={"W": 1.0}),
        TypeError,
        r"mask: expected a pytree of bools or a function of params, got float",
    ),
    (
        "optim",
        "negative learning rate for scale_by_learning_rate",
        lambda: optim.scale_by_learning_rate(-1e-3),
        ValueError,
        r"learning_rate: expected a number in \[0.0, inf\)",
    ),
    (
        "schedules",
        "step decay every 0 steps",
        lambda: schedules.step_decay(0.1, 0),
        ValueError,
        r"every: expected a positive integer",
    ),
    (
        "schedules",
        "exponential decay rate 0",
        lambda: schedules.exponential_decay(0.1, 0.0),
        ValueError,
        r"decay_rate: expected a number in \(0.0, 1.0\]",
    ),
    (
        "schedules",
        "cosine decay over 0 steps",
        lambda: schedules.cosine_decay(0.1, 0),
        ValueError,
        r"decay_steps: expected a positive integer",
    ),
    (
        "optim",
        "a learning rate given as a string",
        lambda: optim.sgd("0.1"),
        TypeError,
        r"learning_rate: expected a real number, got str '0.1'",
    ),
    (
        "clipping",
        "clipping threshold 0",
        lambda: purenet.clipping.clip_grads_by_global_norm(PARAMS, 0.0),
        ValueError,
        r"max_norm: expected a number in \(0.0, inf\), got 0.0",
    ),
    (
        "metrics",
        "multi-label targets that would broadcast",
        lambda: purenet.metrics.multilabel_accuracy(Y3, jnp.zeros((4, 1))),
        ValueError,
        r"t: expected a target of the output's shape \(4, 3\), got shape \(4, 1\)",
    ),
    (
        "metrics",
        "a column of integer labels for multi-class accuracy",
        lambda: purenet.metrics.multiclass_accuracy(Y3, jnp.zeros((4, 1), jnp.int32)),
        ValueError,
        r"t: expected integer labels of shape \(4,\) or one-hot .* pass t\[:, 0\]",
    ),
    (
        "checkpoint",
        "a raw uint32 key (jax.random.PRNGKey) to save",
        lambda: checkpoint.save("/nonexistent/run.npz", PARAMS, key=jnp.zeros(2, jnp.uint32)),
        TypeError,
        r"key: expected a typed key from jax.random.key, got dtype uint32",
    ),
    (
        "train",
        "batch size 0",
        lambda: _fit(batch_size=0),
        ValueError,
        r"batch_size: expected a positive integer",
    ),
    (
        "train",
        "batch size larger than the data",
        lambda: _fit(batch_size=9),
        ValueError,
        r"batch_size: expected at most the number of examples \(8\)",
    ),
    (
        "train",
        "zero epochs",
        lambda: _fit(epochs=0),
        ValueError,
        r"epochs: expected a positive integer",
    ),
    (
        "train",
        "NaN in the inputs",
        lambda: _fit(x=X.at[0, 0].set(jnp.nan)),
        ValueError,
        r"x: expected finite values, got 1 NaN or inf entries",
    ),
    (
        "train",
        "inf in the targets",
        lambda: _fit(t=T.at[3, 0].set(jnp.inf)),
        ValueError,
        r"t: expected finite values",
    ),
    (
        "train",
        "targets with fewer rows than the inputs",
        lambda: _fit(t=T[:7]),
        ValueError,
        r"t: expected 8 rows",
    ),
    (
        "train",
        "an optimizer given by name",
        lambda: fit(MODEL, losses.mse, "adam", PARAMS, X, T, key=KEY, epochs=1, batch_size=4),
        TypeError,
        r"optimizer: expected a purenet.optim optimizer",
    ),
    (
        "data",
        "labels out of range for one_hot",
        lambda: data.one_hot(jnp.array([0, 3]), 3),
        ValueError,
        r"labels: expected integers in \[0, 3\)",
    ),
    (
        "data",
        "batch size larger than the data",
        lambda: data.batches(KEY, X, T, 9),
        ValueError,
        r"batch_size",
    ),
    (
        "data",
        "split fractions that do not sum to 1",
        lambda: data.split(KEY, X, T, (0.5, 0.2)),
        ValueError,
        r"fractions",
    ),
    (
        "data",
        "NaN in data to split",
        lambda: data.split(KEY, X.at[1, 1].set(jnp.nan), T),
        ValueError,
        r"finite",
    ),
    ("datasets", "unknown data set name", lambda: datasets.load("imagenet"), ValueError, r"name"),
    (
        "datasets",
        "missing IDX file",
        lambda: datasets.read_idx("/nonexistent/train-images-idx3-ubyte"),
        FileNotFoundError,
        r"nonexistent",
    ),
    (
        "checkpoint",
        "missing checkpoint file",
        _load_missing,
        FileNotFoundError,
        r"no checkpoint at",
    ),
    (
        "gradcheck",
        "chunk size 0",
        lambda: purenet.gradcheck.numerical_gradient(
            lambda p: jnp.sum(p), jnp.ones(3), chunk_size=0
        ),
        ValueError,
        r"chunk_size: expected a positive integer",
    ),
    (
        "gradcheck",
        "a NaN in the input of a gradient check",
        lambda: purenet.testing.assert_layer(L.tanh(), (), jnp.array([[jnp.nan, 1.0]])),
        AssertionError,
        r"^layer: non-finite values \(NaN or inf\) entered at the input x \(1 of 2 entries\)",
    ),
    (
        "gradcheck",
        "a NaN in the params of a gradient check",
        lambda: purenet.testing.assert_gradients(
            MODEL, losses.mse, (PARAMS[0], (), {**PARAMS[2], "b": PARAMS[2]["b"] * jnp.nan}), X, T
        ),
        AssertionError,
        r"^model: non-finite values \(NaN or inf\) entered at the params \(1 of 13 entries\)",
    ),
    (
        "gradcheck",
        "a wrong gradient checked in float32",
        lambda: purenet.testing.assert_vjp(
            jnp.sin, lambda x, ct: (ct,), jnp.linspace(0.1, 1.0, 3, dtype=jnp.float32)
        ),
        AssertionError,
        r"^sin: hand-written gradient is wrong \(checked in float32, .*the x64 fixture",
    ),
    (
        "gradcheck",
        "check_vjp with a vjp that is not a function",
        lambda: purenet.gradcheck.check_vjp(jnp.sin, "cos", jnp.ones(2)),
        TypeError,
        r"^vjp: expected a function, got str",
    ),
    (
        "gradcheck",
        "check_vjp without a point",
        lambda: purenet.gradcheck.check_vjp(jnp.sin, lambda x, ct: (ct,)),
        ValueError,
        r"^primals: expected at least one primal \(the point to check at\), got none",
    ),
    (
        "gradcheck",
        "check_vjp with a seed where a key is expected",
        lambda: purenet.gradcheck.check_vjp(jnp.sin, lambda x, ct: (ct,), jnp.ones(2), key=0),
        TypeError,
        r"^key: expected a jax.random key \(jax.random.key\(seed\)\), got int 0",
    ),
    (
        "gradcheck",
        "check_vjp at integer primals only",
        lambda: purenet.gradcheck.check_vjp(
            lambda i: 1.0 * i, lambda i, ct: (None,), jnp.arange(3)
        ),
        ValueError,
        r"^primals: expected at least one floating-point array to differentiate",
    ),
    (
        "gradcheck",
        "a tolerance that does not name both referees",
        lambda: purenet.gradcheck.check_vjp(
            jnp.sin, lambda x, ct: (ct * jnp.cos(x),), jnp.ones(2), tolerance=1e-6
        ),
        ValueError,
        r'^tolerance: expected None or a dict \{"autodiff": \.\.\., "numerical": \.\.\.\}',
    ),
    (
        "metrics",
        "for_loss of something that is not a Loss",
        lambda: purenet.metrics.for_loss("mse"),
        TypeError,
        r"^loss: expected a purenet Loss \(with a metric field\), got str",
    ),
    (
        "metrics",
        "sequence labels of the wrong shape for sequence_accuracy",
        lambda: purenet.metrics.sequence_accuracy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), int)),
        ValueError,
        r"^t: expected integer labels of shape \(2, 3\)",
    ),
    (
        "params",
        "non-positive std for normal init",
        lambda: params.normal(0.0),
        ValueError,
        r"std: expected a number in \(0.0, inf\)",
    ),
    (
        "conv",
        "kernel larger than the padded input",
        lambda: L.conv2d(4, 5, padding=0).init(KEY, (4, 4, 1)),
        ValueError,
        r"kernel_size: expected a window no larger than the padded input",
    ),
    (
        "conv",
        "stride 0",
        lambda: L.conv2d(4, 3, stride=0),
        ValueError,
        r"stride: expected a positive integer, got 0",
    ),
    (
        "conv",
        "pooling window 0",
        lambda: L.max_pool2d(0),
        ValueError,
        r"window: expected a positive integer, got 0",
    ),
    (
        "conv",
        "negative padding",
        lambda: L.conv1d(4, 3, padding=(-1, 1)),
        ValueError,
        r"padding\[0\]: expected a non-negative integer, got -1",
    ),
    (
        "conv",
        "input channels that do not match the kernel",
        lambda: L.conv2d(4, 3).forward(
            {"W": jnp.ones((3, 3, 2, 4)), "b": jnp.zeros(4)}, jnp.ones((1, 5, 5, 3))
        ),
        ValueError,
        r"x: expected 2 input channels",
    ),
    (
        "conv",
        "a 2-D x into conv2d",
        lambda: L.conv2d(4, 3).forward(
            {"W": jnp.ones((3, 3, 1, 4)), "b": jnp.zeros(4)}, jnp.ones((5, 5))
        ),
        ValueError,
        r"x: expected a batch of shape \(m, H, W, C\)",
    ),
    (
        "conv",
        "non-integer kernel size",
        lambda: L.conv1d(4, 2.5),
        ValueError,
        r"kernel_size: expected a positive integer, got 2.5",
    ),
    (
        "interop",
        "custom_vjp of something that is neither a Layer nor a Loss",
        lambda: purenet.custom_vjp(lambda x: x),
        TypeError,
        r"model_or_loss: expected a purenet Layer",
    ),
    (
        "testing",
        "assert_vjp with a vjp that returns one cotangent for two primals",
        lambda: purenet.testing.assert_vjp(
            lambda w, x: x @ w, lambda w, x, ct: x.T @ ct, jnp.ones((2, 1)), jnp.ones((3, 2))
        ),
        ValueError,
        r"vjp: expected a tuple of 2 cotangents, one per primal",
    ),
    (
        "recurrent",
        "a batch of vectors (m, d) into a recurrent layer",
        lambda: L.lstm(3).forward(L.lstm(3).init(KEY, (4, 2))[1], jnp.ones((8, 2))),
        ValueError,
        r"x: expected a batch of shape \(m, T, d\) \(3 axes\) for lstm",
    ),
    (
        "recurrent",
        "hidden size 0",
        lambda: L.gru(0),
        ValueError,
        r"hidden_size: expected a positive integer, got 0",
    ),
    (
        "recurrent",
        "an initial state of the wrong shape",
        lambda: L.rnn(3).forward(
            L.rnn(3).init(KEY, (4, 2))[1], (jnp.ones((8, 4, 2)), jnp.ones((8, 2)))
        ),
        ValueError,
        r"h0: expected an initial state of shape \(8, 3\) for rnn",
    ),
    (
        "recurrent",
        "a padding mask of the wrong shape for a recurrent layer",
        lambda: L.gru(3).forward(
            L.gru(3).init(KEY, (4, 2))[1], jnp.ones((8, 4, 2)), mask=jnp.ones((8, 5), bool)
        ),
        ValueError,
        r"mask: expected a boolean padding mask of shape \(m, T\) = \(8, 4\) for gru, got shape",
    ),
    (
        "recurrent",
        "a padding mask that is not boolean for last_step",
        lambda: L.last_step().forward((), jnp.ones((8, 4, 2)), mask=jnp.ones((8, 4))),
        ValueError,
        r"mask: expected a boolean padding mask of shape \(m, T\) = \(8, 4\) for last_step "
        r"\(True at valid steps\), got dtype float",
    ),
    (
        "recurrent",
        "embedding ids out of range",
        lambda: L.embedding(5, 2).forward({"W": jnp.ones((5, 2))}, jnp.array([[0, 5]])),
        ValueError,
        r"x: expected ids in \[0, 5\) for embedding, got id 5",
    ),
    (
        "recurrent",
        "embedding ids that are not integers",
        lambda: L.embedding(5, 2).forward({"W": jnp.ones((5, 2))}, jnp.ones((2, 3))),
        ValueError,
        r"x: expected integer ids for embedding, got dtype float",
    ),
    (
        "attention",
        "a model width not divisible by the number of heads",
        lambda: L.multi_head_attention(3).init(KEY, (5, 8)),
        ValueError,
        r"heads: expected a number of heads that divides the model width d = 8",
    ),
    (
        "attention",
        "a padding mask of the wrong shape",
        lambda: L.multi_head_attention(2).forward(
            L.multi_head_attention(2).init(KEY, (5, 4))[1],
            jnp.ones((3, 5, 4)),
            mask=jnp.ones((3, 4), bool),
        ),
        ValueError,
        r"mask: expected a boolean padding mask of shape \(m, T\) = \(3, 5\)",
    ),
    (
        "attention",
        "a padding mask that is not boolean",
        lambda: L.multi_head_attention(2).forward(
            L.multi_head_attention(2).init(KEY, (5, 4))[1],
            jnp.ones((3, 5, 4)),
            mask=jnp.ones((3, 5), jnp.int32),
        ),
        ValueError,
        r"mask: expected a boolean mask \(True where a position may be attended to\), got dtype",
    ),
    (
        "attention",
        "a padding mask of the wrong shape inside a transformer block",
        lambda: L.transformer_block(4, 2).forward(
            L.transformer_block(4, 2).init(KEY, (5, 4))[1],
            jnp.ones((3, 5, 4)),
            mask=jnp.ones((5,), bool),
        ),
        ValueError,
        r"transformer_block\(4, 2\), serial\[0\], residual, serial\[1\] "
        r"\(multi_head_attention\(2\)\): mask: expected a "
        r"boolean padding mask of shape \(m, T\) = \(3, 5\)",
    ),
    (
        "attention",
        "the mask inside x for scaled_dot_product_attention",
        lambda: L.scaled_dot_product_attention().forward(
            (), (jnp.ones((3, 5, 4)),) * 3 + (jnp.ones((3, 5), bool),)
        ),
        ValueError,
        r"x: expected a tuple \(q, k, v\) for scaled_dot_product_attention",
    ),
    (
        "attention",
        "a transformer block on an input of another width",
        lambda: L.transformer_block(8, 2).init(KEY, (5, 4)),
        ValueError,
        r"in_shape: expected a sequence shape \(T, 8\) for transformer_block\(8, 2\)",
    ),
    (
        "recurrent",
        "another layer's params for an LSTM with an initial state",
        lambda: L.lstm(3).forward(
            {"W": jnp.ones((2, 3)), "b": jnp.zeros(3)},
            (jnp.ones((2, 4, 2)), (jnp.zeros((2, 3)), jnp.zeros((2, 3)))),
        ),
        ValueError,
        r"params \(lstm\(3\)\): expected keys \['Wh', 'Wx', 'b'\]",
    ),
    (
        "attention",
        "a sequence longer than the learned position table",
        lambda: L.position_embedding(4).forward({"W": jnp.zeros((4, 2))}, jnp.ones((1, 5, 2))),
        ValueError,
        r"x: expected a sequence of at most max_len = 4 positions for position_embedding",
    ),
    (
        "losses",
        "a sequence-loss mask of the wrong shape",
        lambda: losses.sequence_softmax_cross_entropy.value(
            jnp.zeros((2, 3, 4)), (jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 4)))
        ),
        ValueError,
        r"mask: expected a mask of the targets' shape \(2, 3\)",
    ),
    (
        "losses",
        "sequence labels out of range",
        lambda: losses.sequence_softmax_cross_entropy.value(
            jnp.zeros((2, 3, 4)), jnp.full((2, 3), 4)
        ),
        ValueError,
        r"t: expected labels in \[0, 4\) or -1 \(masked\), got label 4",
    ),
    # --- models: gpt, its Hugging Face mapping, generation ---------------------------
    (
        "models",
        "gpt with heads that do not divide the width",
        lambda: models.gpt(11, 8, 1, 3, 8),
        ValueError,
        r"heads: expected a number of heads that divides width = 8, got heads = 3",
    ),
    (
        "models",
        "more token positions than the context",
        lambda: GPT.forward(GPT_PARAMS, jnp.zeros((1, 9), jnp.int32)),
        ValueError,
        r"x: expected at most context = 8 positions \(T <= context\), got T = 9",
    ),
    (
        "models",
        "float inputs for a gpt (token ids expected)",
        lambda: GPT.forward(GPT_PARAMS, jnp.zeros((1, 4), jnp.float32)),
        ValueError,
        r"x: expected integer token ids, got dtype float32",
    ),
    (
        "models",
        "a token id outside the vocabulary",
        lambda: GPT.forward(GPT_PARAMS, jnp.full((1, 4), 11)),
        ValueError,
        r"x: expected token ids in \[0, vocab_size\) = \[0, 11\), got id 11",
    ),
    (
        "models",
        "the params of a wider gpt",
        lambda: GPT.forward(models.gpt(11, 8, 1, 2, 16).init(KEY, (8,))[1], IDS),
        ValueError,
        r"params\[0\]\['W'\] \(gpt\(11, 8, 1, 2, 8\), tied\(serial\), serial\[0\], "
        r"embedding\(11, 8\)\): expected shape \(11, 8\), got \(11, 16\)",
    ),
    (
        "models",
        "a Hugging Face state dict with a tensor missing",
        lambda: models.gpt_params_from_hf({"transformer.wte.weight": jnp.zeros((11, 8))}),
        ValueError,
        r"state_dict: expected the tensor 'transformer.wpe.weight' of a GPT2LMHeadModel",
    ),
    (
        "models",
        "a list for a state dict",
        lambda: models.gpt_params_from_hf([1, 2]),
        TypeError,
        r"state_dict: expected a mapping from Hugging Face names to arrays, got list",
    ),
    (
        "models",
        "generating past the context",
        lambda: models.generate(GPT, GPT_PARAMS, jnp.zeros((3,), jnp.int32), 6, key=KEY),
        ValueError,
        r"steps: expected at most context - len\(prompt\) = 5",
    ),
    (
        "models",
        "top_k = 0",
        lambda: models.generate(GPT, GPT_PARAMS, IDS[0], 2, key=KEY, top_k=0),
        ValueError,
        r"top_k: expected None or an int in \[1, vocab_size = 11\], got 0",
    ),
    (
        "models",
        "an empty prompt",
        lambda: models.generate(GPT, GPT_PARAMS, jnp.zeros((0,), jnp.int32), 2, key=KEY),
        ValueError,
        r"prompt: expected at least one token",
    ),
    (
        "models",
        "the config of a model that is not a gpt",
        lambda: models.gpt_config(L.dense(3)),
        TypeError,
        r"model: expected a model made by purenet.models.gpt, got dense\(3\)",
    ),
    (
        "train",
        "a batch that micro-batches do not divide",
        lambda: train.accumulate_gradients(lambda p, x, t: (0.0, p), 3)(GPT_PARAMS, IDS, IDS),
        ValueError,
        r"x: expected a batch whose size is a multiple of micro_batches = 3, got batch sizes \[1\]",
    ),
    (
        "layers",
        "weight sharing on something that is not a layer",
        lambda: L.tied("net", ()),
        TypeError,
        r"model: expected a purenet Layer, got str",
    ),
    # --- training loops: the padding mask, checkpoints against the model ------------
    (
        "train",
        "an integer padding mask for fit",
        lambda: _fit(mask=jnp.ones((8, 2), jnp.int32)),
        ValueError,
        r"mask: expected a bool array \(True at valid positions\), got dtype int32",
    ),
    (
        "train",
        "a mask without a masked validation set",
        lambda: _fit(mask=jnp.ones((8, 2), bool), validation=(X, T)),
        ValueError,
        r"validation: expected \(x_val, t_val, mask_val\) when mask is given",
    ),
    (
        "checkpoint",
        "a template that does not fit the model",
        lambda: checkpoint.load(
            "/nonexistent/run.npz", PARAMS, model=L.serial(L.dense(4), L.relu(), L.dense(1)), x=X
        ),
        ValueError,
        r"params_like\[0\]\['W'\] \(serial\[0\], dense\(4\)\): expected shape \(2, 4\)",
    ),
    (
        "feedback",
        "a learning rule over a layer it is not defined for (params, no weight transport)",
        lambda: feedback.feedback_alignment(L.serial(L.lstm(3), L.last_step(), L.dense(1))).init(
            KEY, (4, 2)
        ),
        ValueError,
        r"model: expected dense or convolutional layers .* got lstm\(3\) at serial\[0\], "
        r"which has params but no weight transport, so feedback_alignment is not defined for it",
    ),
    (
        "feedback",
        "a learning rule over a combinator it does not know",
        lambda: feedback.sign_symmetry(L.serial(L.transformer_block(4, 2), L.dense(1))),
        ValueError,
        r"model: expected layers combined by serial, parallel, residual for sign_symmetry, "
        r"got transformer_block\(4, 2\) at serial\[0\]",
    ),
    (
        "feedback",
        "direct feedback alignment over a residual block",
        lambda: feedback.direct_feedback_alignment(L.serial(L.dense(2), L.residual(L.dense(2)))),
        ValueError,
        r"model: expected layers combined by serial for direct_feedback_alignment, "
        r"got residual at serial\[1\]",
    ),
    (
        "feedback",
        "a learning rule's model used without the state holding its feedback matrices",
        lambda: purenet.backprop(feedback.feedback_alignment(MODEL), losses.mse)(PARAMS, X, T),
        ValueError,
        r"state: expected the state from feedback_alignment\(model\)\.init "
        r"\(its feedback matrices; pass state=\.\.\.\), got \(\)",
    ),
    (
        "feedback",
        "an unknown sign-symmetry variant",
        lambda: feedback.sign_symmetry(MODEL, "SF"),
        ValueError,
        r"variant: expected one of \['brSF', 'frSF', 'uSF'\], got 'SF'",
    ),
    (
        "privacy",
        "a clipping norm of zero",
        lambda: privacy.dp_gradient(MODEL, losses.mse, l2_clip=0.0, noise_multiplier=1.0),
        ValueError,
        r"l2_clip: expected a number in \(0\.0, inf\), got 0\.0",
    ),
    (
        "privacy",
        "a negative noise multiplier",
        lambda: privacy.dp_gradient(MODEL, losses.mse, l2_clip=1.0, noise_multiplier=-1.0),
        ValueError,
        r"noise_multiplier: expected a number in \[0\.0, inf\), got -1\.0",
    ),
    (
        "privacy",
        "noise without a key",
        lambda: privacy.dp_gradient(MODEL, losses.mse, l2_clip=1.0, noise_multiplier=1.0)(
            PARAMS, X, T
        ),
        ValueError,
        r"key: expected a jax\.random key to draw the Gaussian noise",
    ),
    (
        "privacy",
        "a sample rate above one",
        lambda: privacy.epsilon(1.0, 1.5, 100, 1e-5),
        ValueError,
        r"sample_rate: expected a number in \(0\.0, 1\.0\], got 1\.5",
    ),
    (
        "privacy",
        "a sample rate of zero",
        lambda: privacy.epsilon(1.0, 0.0, 100, 1e-5),
        ValueError,
        r"sample_rate: expected a number in \(0\.0, 1\.0\], got 0\.0",
    ),
    (
        "privacy",
        "a delta of one",
        lambda: privacy.epsilon(1.0, 0.01, 100, 1.0),
        ValueError,
        r"delta: expected a number in \(0\.0, 1\.0\), got 1\.0",
    ),
    (
        "privacy",
        "DP-SGD through batch norm in training mode (examples interact)",
        lambda: privacy.dp_gradient(BN_MODEL, losses.mse, l2_clip=1.0, noise_multiplier=0.0)(
            BN_PARAMS, X, T, state=BN_MODEL.init(KEY, (2,))[2], train=True
        ),
        ValueError,
        r"batch",
    ),
    (
        "privacy",
        "privacy settings that are not dp_sgd's",
        lambda: _fit(privacy={"l2_clip": 1.0}),
        TypeError,
        r"privacy: expected None or DP-SGD settings",
    ),
]


@pytest.mark.parametrize("area, what, call, exception, pattern", CASES, ids=[c[1] for c in CASES])
def test_bad_input_raises_a_clear_error(area, what, call, exception, pattern):
    with pytest.raises(exception, match=pattern):
        call()


def message_of(call) -> tuple[str, str]:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - we report whatever is raised
        return type(error).__name__, str(error).splitlines()[0]
    return "(no error)", ""


def _as_markdown_text(message: str) -> str:
    """A message shown as written in a Markdown table cell: outside its code
    spans (`mask`, shown as code), the characters that Markdown would read as
    markup (`params[0]['W']` as a link, `*, 'b': *` as emphasis) or as the
    cell's end are backslash-escaped."""
    pieces = re.split(r"(`[^`]*`)", message)
    return "".join(p if p.startswith("`") else re.sub(r"([\\*_\[\]|])", r"\\\1", p) for p in pieces)


def markdown() -> str:
    lines = [
        "# Bad input and the message you see",
        "",
        "Generated by `python -m tests.test_errors > docs/errors.md` from the cases in",
        "`tests/test_errors.py`, which the test suite checks. Value checks (finiteness,",
        "label ranges) run in the eager entry points (`fit`, the loaders and splitters,",
        "losses called eagerly); under `jit` only shapes and dtypes can be checked.",
        "",
        "| area | bad input | exception | message |",
        "| --- | --- | --- | --- |",
    ]
    for area, what, call, _, _ in CASES:
        kind, message = message_of(call)
        message = _as_markdown_text(message)
        lines.append(f"| {area} | {what} | `{kind}` | {message} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
