"""Layers: `Layer = (init, forward, backward, update_state)`, one module per family.

The contract is stated once, in [`purenet.layers.core`][purenet.layers.core]. Every factory is
re-exported here, so `purenet.layers.dense` and
`purenet.layers.core.dense` are the same function.

| module | what it holds |
| --- | --- |
| core | the contract (`Layer`, `call_forward`), `dense`, activations, `flatten`, combinators |
| checking | params checked against the model (`check_params`), errors that name their layer |
| conv | `conv1d`, `conv2d` and their pieces (`im2col`, `col2im`, `conv_forward`, `conv_backward`) |
| pooling | `max_pool1d`, `max_pool2d`, `avg_pool1d`, `avg_pool2d`, `global_avg_pool` |
| normalization | `batchnorm`, `layer_norm` |
| dropout | `dropout` |
| recurrent | `rnn`, `lstm`, `gru`, `last_step`, `bidirectional`, `embedding` |
| attention | `multi_head_attention`, `transformer_block`, position encodings, attention's pieces |
| sharing | `tied` (weight sharing: one array in several slots) |
| per_example_rules | per-example rules of layers and their dispatch (`purenet.per_example`) |
"""

from purenet.layers.attention import (
    attention_backward,
    attention_forward,
    multi_head_attention,
    position_embedding,
    scaled_dot_product_attention,
    sinusoidal_positions,
    sinusoids,
    transformer_block,
)
from purenet.layers.checking import check_params, checked_call
from purenet.layers.conv import col2im, conv1d, conv2d, conv_backward, conv_forward, im2col
from purenet.layers.core import (
    Layer,
    Static,
    call_forward,
    dense,
    elementwise,
    fan_in_concat,
    fan_in_sum,
    fan_out,
    flatten,
    gelu,
    gelu_tanh,
    identity,
    leaky_relu,
    make_layer,
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
from purenet.layers.sharing import tied

__all__ = [
    "Layer",
    "Static",
    "attention_backward",
    "attention_forward",
    "avg_pool1d",
    "avg_pool2d",
    "batchnorm",
    "check_params",
    "checked_call",
    "bidirectional",
    "call_forward",
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
    "gelu",
    "gelu_tanh",
    "global_avg_pool",
    "gru",
    "identity",
    "im2col",
    "last_step",
    "layer_norm",
    "leaky_relu",
    "lstm",
    "make_layer",
    "max_pool1d",
    "max_pool2d",
    "multi_head_attention",
    "parallel",
    "position_embedding",
    "relu",
    "residual",
    "rnn",
    "scaled_dot_product_attention",
    "serial",
    "sigmoid",
    "sinusoidal_positions",
    "sinusoids",
    "tanh",
    "tied",
    "transformer_block",
]
