"""Benchmark `gflops`: how close a training step comes to the machine's matmul peak.

Work counted: `6 * m * sum(n_in * n_out)` FLOPs for forward + backward of
the dense layers (two FLOPs per multiply-add; `x W`, `x^T dy`, `dy W^T`),
for 784-1024-1024-10 at batch 512: 5.72 GFLOP per step. (The first layer's
`dx` is not needed and not computed, so the step really does 4.90 GFLOP,
14% less; the convention is kept so that numbers compare with other reports.)

Contenders, interleaved:

* `matmul n`: one jitted float32 square matmul, n x n by n x n
  (`2 n**3` FLOPs), for n = 1024 and 2048; the faster of the two (by
  median) is the practical peak of this machine for XLA:CPU;
* `gradient`: `jax.jit(purenet.backprop(model, loss))`;
* `train step`: `jax.jit(purenet.train.make_step(model, loss, sgd(1e-3)))`
  (gradient + update), params and optimizer state threaded from call to call.

Reported: GFLOP/s (FLOPs / median time, and FLOPs / fastest time) and the
fraction of the peak.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import purenet
from benchmarks.models import matmul_flops, problem
from benchmarks.registry import Config, register
from benchmarks.timing import fmt_time, interleave, summary
from purenet import optim, train

SIZES, BATCH, PEAK_SIZES = (784, 1024, 1024, 10), 512, (1024, 2048)


@register("gflops", "GFLOP/s of a 784-1024-1024-10 training step vs a large matmul")
def run(config: Config) -> dict:
    p = problem(SIZES, BATCH)
    matmul = jax.jit(jnp.matmul)
    square = {
        n: (
            jax.random.normal(jax.random.key(0), (n, n)),
            jax.random.normal(jax.random.key(1), (n, n)),
        )
        for n in PEAK_SIZES
    }
    grad = jax.jit(purenet.backprop(p.model, p.loss))
    opt = optim.sgd(1e-3)
    step = jax.jit(train.make_step(p.model, p.loss, opt))
    state = {"params": p.params, "opt": opt.init(p.params)}
    key = jax.random.key(2)
    model_state = p.model.init(key, p.x.shape[1:])[2]  # an MLP: no leaves

    def train_step():
        state["params"], state["opt"], _, J = step(
            state["params"], state["opt"], model_state, p.x, p.t, key
        )
        return J

    contenders = {f"matmul {n}": (lambda ab=ab: matmul(*ab)) for n, ab in square.items()}
    contenders["gradient"] = lambda: grad(p.params, p.x, p.t)
    contenders["train step"] = train_step
    flops = {f"matmul {n}": 2 * n**3 for n in PEAK_SIZES}
    flops["gradient"] = flops["train step"] = matmul_flops(SIZES, BATCH)
    rounds = config.repeats(15, 80)
    config.log(f"gflops: {rounds} rounds")
    samples = interleave(contenders, rounds=rounds, number=1)
    times = {name: summary(s) for name, s in samples.items()}
    rate = {name: flops[name] / times[name]["median"] / 1e9 for name in contenders}
    best = {name: flops[name] / times[name]["min"] / 1e9 for name in contenders}
    peak = max(rate[f"matmul {n}"] for n in PEAK_SIZES)
    rows = [
        [
            name,
            f"{flops[name] / 1e9:.2f}",
            fmt_time(times[name]["median"]),
            f"{rate[name]:.0f}",
            f"{best[name]:.0f}",
            f"{rate[name] / peak:.0%}",
        ]
        for name in contenders
    ]
    return {
        "description": "Achieved GFLOP/s of a 784-1024-1024-10 step at batch 512 (6 m sum "
        "n_in n_out FLOPs) against the faster of two square float32 matmuls (1024, 2048) "
        "measured in the same run.",
        "tables": [
            {
                "title": "gflops",
                "headers": [
                    "contender",
                    "GFLOP",
                    "median",
                    "GFLOP/s (median)",
                    "GFLOP/s (fastest)",
                    "of peak (medians)",
                ],
                "rows": rows,
            }
        ],
        "notes": [f"{rounds} interleaved rounds, one call per sample."],
        "data": {
            "times": times,
            "flops": flops,
            "gflops_median": rate,
            "gflops_best": best,
            "peak_gflops": peak,
        },
    }
