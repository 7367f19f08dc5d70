"""Layers: ``Layer = (init, forward, backward, update_state)``, one module per family.

The contract is stated once, in :mod:`purenet.layers.core`. Every factory is
re-exported here, so ``purenet.layers.dense`` and
``purenet.layers.core.dense`` are the same function.

=================  ==========================================================
core               Layer, dense, activations, flatten, serial, parallel,
                   fan_out, fan_in_sum, fan_in_concat, residual
conv               conv1d, conv2d (im2col, col2im, conv_forward, conv_backward)
pooling            max_pool1d, max_pool2d, avg_pool1d, avg_pool2d, global_avg_pool
normalization      batchnorm, layer_norm
dropout            dropout
recurrent          rnn, lstm, gru, last_step, bidirectional, embedding
=================  ==========================================================
"""

from purenet.layers.conv import col2im, conv1d, conv2d, conv_backward, conv_forward, im2col
from purenet.layers.core import (
    Layer,
    dense,
    elementwise,
    fan_in_concat,
    fan_in_sum,
    fan_out,
    flatten,
    identity,
    leaky_relu,
    parallel,
    relu,
    residual,
    serial,
    sigmoid,
    tanh,
)
from purenet.layers.dropout import dropout
from purenet.layers.normalization import batchnorm, layer_norm
from purenet.layers.pooling import avg_pool1d, avg_pool2d, global_avg_pool, max_pool1d, max_pool2d
from purenet.layers.recurrent import bidirectional, embedding, gru, last_step, lstm, rnn

__all__ = [
    "Layer",
    "avg_pool1d",
    "avg_pool2d",
    "batchnorm",
    "bidirectional",
    "col2im",
    "conv1d",
    "conv2d",
    "conv_backward",
    "conv_forward",
    "dense",
    "dropout",
    "elementwise",
    "embedding",
    "fan_in_concat",
    "fan_in_sum",
    "fan_out",
    "flatten",
    "global_avg_pool",
    "gru",
    "identity",
    "im2col",
    "last_step",
    "layer_norm",
    "leaky_relu",
    "lstm",
    "max_pool1d",
    "max_pool2d",
    "parallel",
    "relu",
    "residual",
    "rnn",
    "serial",
    "sigmoid",
    "tanh",
]
