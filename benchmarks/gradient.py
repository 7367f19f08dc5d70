"""Benchmark `gradient`: hand-written backprop against `jax.grad`.

Contenders, both under `jax.jit`, float32, same params and batch:

* `hand`: `purenet.backprop(model, loss)`, which returns `(J, grads)`;
* `jax.grad`: `jax.value_and_grad(purenet.objective(model, loss))`, which
  returns `(J, grads)` too, so both compute the loss and the gradient;
* `control`: a second, separately jitted copy of `jax.grad`. Its ratio to
  `jax.grad` measures nothing but the noise of the machine: a ratio of
  `hand` inside the control's spread is a tie.

Shapes (relu hidden layers, logits out): 784-256-10 at batch 128 and
784-1024-1024-10 at batch 512 with softmax cross-entropy on integer labels;
2-8-1 at batch 4 with sigmoid binary cross-entropy.

Timing (`benchmarks.timing`): the three are interleaved in one process,
samples of about 2 ms (one call for the wide net), `block_until_ready` at
the end of each sample; reported are median [quartiles] per call, and the
median [quartiles] of the round-by-round ratios. Each shape also records a
summary of both optimized HLO programs (`benchmarks.hlo`).
"""

from __future__ import annotations

import jax

import purenet
from benchmarks import hlo
from benchmarks.models import problem
from benchmarks.registry import Config, register
from benchmarks.timing import compare, fmt_ratio, fmt_spread

# (layer sizes, batch, loss), and quick/full round counts for each.
SHAPES = (
    ((784, 256, 10), 128, "softmax"),
    ((784, 1024, 1024, 10), 512, "softmax"),
    ((2, 8, 1), 4, "bce"),
)
ROUNDS = {
    (784, 256, 10): (300, 1500),
    (784, 1024, 1024, 10): (30, 150),
    (2, 8, 1): (1000, 5000),
}


def gradient_contenders(model, loss) -> dict:
    """The jitted functions compared, each taking `(params, x, t)`: the
    hand-written backprop, `jax.value_and_grad` of the same objective, and
    a second, identical copy of the latter (the control, whose ratio to the
    first shows the noise of the run)."""
    objective = purenet.objective(model, loss)
    return {
        "hand": jax.jit(purenet.backprop(model, loss)),
        "jax.grad": jax.jit(jax.value_and_grad(objective)),
        "control": jax.jit(jax.value_and_grad(objective)),
    }


def time_gradients(model, loss, params, x, t, rounds: int, sample_s: float = 0.002) -> dict:
    """Interleaved timing of `gradient_contenders` at `(params, x, t)`."""
    fns = gradient_contenders(model, loss)
    thunks = {name: (lambda f=f: f(params, x, t)) for name, f in fns.items()}
    result = compare(thunks, baseline="jax.grad", rounds=rounds, sample_s=sample_s)
    result.pop("samples")
    return result


TIMING_HEADERS = ["hand", "jax.grad", "hand / jax.grad", "control / jax.grad"]


def gradient_table(rows: list[list[str]]) -> dict:
    """The per-model table of the recurrent and attention benchmarks:
    a model name, then `timing_cells`."""
    return {
        "title": "gradient of one batch, jitted, float32 (median [quartiles] per call)",
        "headers": ["model", *TIMING_HEADERS],
        "rows": rows,
    }


def timing_cells(timing: dict) -> list[str]:
    """The four cells every gradient table shows for one timing: hand,
    jax.grad, hand / jax.grad (bold) and control / jax.grad."""
    times, ratios = timing["times"], timing["ratios"]
    return [
        fmt_spread(times["hand"]),
        fmt_spread(times["jax.grad"]),
        f"**{fmt_ratio(ratios['hand'])}**",
        fmt_ratio(ratios["control"]),
    ]


def measure(p, rounds: int) -> dict:
    """Interleaved timing of `gradient_contenders` on problem `p`."""
    return time_gradients(p.model, p.loss, p.params, p.x, p.t, rounds)


@register("gradient", "hand-written backprop vs jax.value_and_grad, jitted, float32")
def run(config: Config) -> dict:
    rows, data = [], {}
    for sizes, batch, loss in SHAPES:
        p = problem(sizes, batch, loss=loss)
        quick, full = ROUNDS[sizes]
        config.log(f"gradient: {p.name}")
        timing = measure(p, config.repeats(quick, full))
        summary = hlo.compare_gradients(p)
        data[p.name] = {"loss": loss, **timing, "hlo": summary}
        h, a = summary["hand"], summary["jax_grad"]
        rows.append(
            [
                p.name,
                loss,
                *timing_cells(timing),
                f"{h['kernels']} / {a['kernels']}",
                f"{h['dots_ynn']}+{h['dots_xla']} / {a['dots_ynn']}+{a['dots_xla']}",
                f"{timing['rounds']} x {timing['calls_per_sample']}",
            ]
        )
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            {
                "title": "Gradient: time per call, median [quartiles]",
                "headers": [
                    "shape @ batch",
                    "loss",
                    *TIMING_HEADERS,
                    "kernels (hand / jax.grad)",
                    "dots ynn+xla (hand / jax.grad)",
                    "rounds x calls",
                ],
                "rows": rows,
            }
        ],
        "notes": [
            "jax.grad is jax.value_and_grad(purenet.objective(model, loss)): both contenders "
            "return (J, grads). 'control' is a second jitted copy of jax.grad: its ratio is "
            "the noise floor. Ratios are per-round (interleaved) ratios, median [quartiles]. "
            "Kernels: instructions of the optimized entry computation (XLA:CPU thunks); "
            "dots: matrix products run by YNNPACK (ynn) / by XLA itself (xla: an Eigen "
            "call, or a small dot fused into a loop with elementwise work)."
        ],
        "data": data,
    }
