"""Benchmark `attention`: the hand-written backward of a transformer block
against `jax.grad` of the same objective.

Contenders, both under `jax.jit`, float32, same params and batch (as
`benchmarks.gradient`):

* `hand`: `purenet.backprop(model, loss)`: layer norm, multi-head
  attention (one fused `(d, 3d)` projection; the softmax backward
  `dS = P * (dP - rowsum(dout * out))`) and the MLP, all written by hand;
* `jax.grad`: `jax.value_and_grad(purenet.objective(model, loss))`;
* `control`: a second, separately jitted `jax.grad`; its ratio to
  `jax.grad` is the machine's noise (a `hand` ratio inside it is a tie).

Shape: `transformer_block(128, heads=4, mlp_dim=512)` (pre-layer-norm, GELU) on
`(m, T, d) = (32, 128, 128)`, followed by `dense(10)` at every step and
[`purenet.losses.sequence_softmax_cross_entropy`][purenet.losses.sequence_softmax_cross_entropy];
once without a mask and once causal. The forward cache holds the attention probabilities,
`m * heads * T^2 = 2,097,152` floats (8 MiB). Timing:
`benchmarks.timing`, interleaved rounds, medians and round-by-round
ratios.
"""

from __future__ import annotations

import jax

from benchmarks.gradient import gradient_table, time_gradients, timing_cells
from benchmarks.registry import Config, register
from purenet import layers as L
from purenet import losses

M, T, D, HEADS, MLP, CLASSES = 32, 128, 128, 4, 512, 10


def block_problem(causal: bool):
    """The block, its params and a batch of random sequences with labels."""
    k_init, k_x, k_t = jax.random.split(jax.random.key(0), 3)
    model = L.serial(L.transformer_block(D, HEADS, mlp_dim=MLP, causal=causal), L.dense(CLASSES))
    params = model.init(k_init, (T, D))[1]
    x = jax.random.normal(k_x, (M, T, D))
    t = jax.random.randint(k_t, (M, T), 0, CLASSES)
    name = f"block d={D}, {HEADS} heads, T={T}, m={M}" + (", causal" if causal else "")
    return name, model, losses.sequence_softmax_cross_entropy, params, x, t


def gradient_timing(problem, rounds: int) -> dict:
    _, model, loss, params, x, t = problem
    return time_gradients(model, loss, params, x, t, rounds, sample_s=0.02)


@register("attention", "transformer block: hand-written backward vs jax.grad, jitted, float32")
def run(config: Config) -> dict:
    rows, data = [], {}
    for causal in (False, True):
        problem = block_problem(causal)
        config.log(f"attention: {problem[0]}")
        timing = gradient_timing(problem, config.repeats(20, 100))
        data[problem[0]] = timing
        rows.append([problem[0], *timing_cells(timing)])
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [gradient_table(rows)],
        "notes": [
            "jax.grad is jax.value_and_grad(purenet.objective(model, loss)); both return "
            "(J, grads). Ratios are per-round (interleaved) ratios, median [quartiles]; "
            "'control' is a second jitted jax.grad, the noise floor. Cache of the hand-written "
            f"pass: P of m * heads * T^2 = {M * HEADS * T * T:,} floats per block."
        ],
        "data": data,
    }
