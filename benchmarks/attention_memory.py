"""Temporary memory of a compiled training step of multi-head attention: the
default cache (P, m * heads * T^2 entries), the FlashAttention-style cache
(`flash=True`: row log-sum-exps, P recomputed in the backward; Dao et al.
2022) and `jax.grad` of the forward-only objective.

Measured without running anything: `jax.jit(step).lower(...).compile()
.memory_analysis().temp_size_in_bytes`, XLA's figure for the buffers a step
allocates beyond its inputs and outputs. Shape: `multi_head_attention(4,
causal=True)` then `dense(16)` on `(m=4, T, d=64)`, float32, the
sequence cross-entropy, T = 256, 512, 1024.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import purenet
from benchmarks.registry import Config, register
from purenet import layers as L
from purenet import losses

M, D, HEADS, CLASSES = 4, 64, 4, 16
LENGTHS = (256, 512, 1024)


def _model(flash: bool):
    return L.serial(L.multi_head_attention(HEADS, causal=True, flash=flash), L.dense(CLASSES))


def temp_bytes(T: int) -> dict:
    """The compiled step's temporary bytes for each way of taking the gradient."""
    loss = losses.sequence_softmax_cross_entropy
    params = _model(False).init(jax.random.key(0), (T, D))[1]
    x = jax.ShapeDtypeStruct((M, T, D), jnp.float32)
    t = jax.ShapeDtypeStruct((M, T), jnp.int32)
    steps = {
        "hand-written (P kept)": purenet.backprop(_model(False), loss),
        "hand-written, flash=True": purenet.backprop(_model(True), loss),
        "jax.grad": jax.value_and_grad(purenet.objective(_model(False), loss)),
    }
    out = {}
    for name, step in steps.items():
        compiled = jax.jit(step).lower(params, x, t).compile()
        out[name] = int(compiled.memory_analysis().temp_size_in_bytes)
    for flash in (False, True):  # what a forward hands to a separate backward
        model = _model(flash)
        forward = jax.jit(lambda p, x, model=model: model.forward(p, x))
        analysis = forward.lower(params, x).compile().memory_analysis()
        out[f"forward's output + cache{', flash' if flash else ''}"] = int(
            analysis.output_size_in_bytes
        )
    return out


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@register("attention_memory", "attention step's temporary memory: P kept, flash, jax.grad")
def run(config: Config) -> dict:
    data, rows = {}, []
    for T in LENGTHS:
        config.log(f"attention_memory: T = {T}")
        data[T] = temp_bytes(T)
        P = M * HEADS * T * T * 4
        rows.append([str(T), _mib(P), *(_mib(v) for v in data[T].values())])
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            {
                "title": f"training step's temp_size_in_bytes (three gradient columns), then a "
                f"jitted forward's output_size_in_bytes (m={M}, d={D}, {HEADS} heads, "
                "causal, float32)",
                "headers": ["T", "size of P", *next(iter(data.values()))],
                "rows": rows,
            }
        ],
        "notes": [
            "From XLA's memory_analysis() of jax.jit(step).lower(...).compile(); nothing is "
            "executed. In one fused step the three are equal: the flash option still forms "
            "(T, T) blocks inside the forward and the backward (P, dP, dS: it is not tiled "
            "as FlashAttention's kernel is), and those transients set the peak. What it "
            "saves is the cache: the output of a jitted forward (y and the cache handed to "
            "a separate backward, e.g. across a pipeline stage or a custom_vjp residual) "
            "drops from O(m heads T^2) to O(m heads T)."
        ],
        "data": {str(k): v for k, v in data.items()},
    }
