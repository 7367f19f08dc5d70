"""Investigation `donation`: buffer donation on a full training step.

`python -m benchmarks.investigations.donation [--full] [--scale S]` prints the table.

One training step is the gradient plus a plain SGD update written inline,
`params - lr * grads`, jitted as one program `step(params, x, t) ->
(params, J)`. Four contenders, interleaved, each carrying its own params from
call to call (a donated buffer cannot be reused by the caller):

* `hand` / `jax.grad`: the gradient by `purenet.backprop` or by
  `jax.value_and_grad(purenet.objective(...))`;
* `+ donate`: the same step under `jax.jit(step, donate_argnums=0)`, so
  XLA may write the new params into the old params' buffers instead of
  allocating new ones.

The HLO of a donated step is checked for `input_output_alias` (whether
XLA:CPU actually aliased the buffers). Reported: median [quartiles] per step
and the per-round ratios donate / no donate and hand / jax.grad.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import purenet
from benchmarks import investigations
from benchmarks.models import problem
from benchmarks.registry import Config
from benchmarks.timing import compare, fmt_ratio, fmt_spread, ratio_summary

SHAPES = (
    ((784, 1024, 1024, 10), 512, (30, 150)),
    ((784, 256, 10), 128, (300, 1500)),
)
LEARNING_RATE = 1e-3


def sgd_step(grad_fn, lr: float = LEARNING_RATE):
    """`step(params, x, t) -> (params - lr * grads, J)`."""

    def step(params, x, t):
        J, grads = grad_fn(params, x, t)
        return jax.tree.map(lambda w, g: w - lr * g, params, grads), J

    return step


def steps(p) -> dict:
    """Name -> jitted step (with and without donation of `params`)."""
    grad_fns = {
        "hand": purenet.backprop(p.model, p.loss),
        "jax.grad": jax.value_and_grad(purenet.objective(p.model, p.loss)),
    }
    out = {}
    for name, g in grad_fns.items():
        out[name] = jax.jit(sgd_step(g))
        out[f"{name} + donate"] = jax.jit(sgd_step(g), donate_argnums=0)
    return out


def aliased(step, p) -> bool:
    """Whether the compiled step aliases some input buffer to an output."""
    return "input_output_alias" in step.lower(p.params, p.x, p.t).compile().as_text()


def measure(p, rounds: int) -> dict:
    fns = steps(p)
    state = {name: jax.tree.map(jnp.copy, p.params) for name in fns}

    def thunk(name):
        def call():
            state[name], J = fns[name](state[name], p.x, p.t)
            return state[name], J

        return call

    result = compare(
        {name: thunk(name) for name in fns}, baseline="jax.grad", rounds=rounds, sample_s=0.002
    )
    samples = result.pop("samples")
    result["donate_ratios"] = {
        who: ratio_summary(samples[f"{who} + donate"], samples[who]) for who in ("hand", "jax.grad")
    }
    result["hand_vs_jax_grad_donated"] = ratio_summary(
        samples["hand + donate"], samples["jax.grad + donate"]
    )
    result["aliased"] = {name: aliased(f, p) for name, f in fns.items()}
    return result


def run(config: Config) -> dict:
    rows, data = [], {}
    for sizes, batch, (quick, full) in SHAPES:
        p = problem(sizes, batch)
        config.log(p.name)
        m = measure(p, config.repeats(quick, full))
        data[p.name] = m
        t = m["times"]
        for who in ("hand", "jax.grad"):
            vs = m["ratios"]["hand"] if who == "hand" else None
            vs_d = m["hand_vs_jax_grad_donated"] if who == "hand" else None
            rows.append(
                [
                    p.name,
                    who,
                    fmt_spread(t[who]),
                    fmt_spread(t[f"{who} + donate"]),
                    f"**{fmt_ratio(m['donate_ratios'][who])}**",
                    "yes" if m["aliased"][f"{who} + donate"] else "no",
                    fmt_ratio(vs) if vs else "",
                    fmt_ratio(vs_d) if vs_d else "",
                ]
            )
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            {
                "title": "Donation: time per SGD step, median [quartiles]",
                "headers": [
                    "shape @ batch",
                    "gradient",
                    "no donation",
                    "donate_argnums=0",
                    "donate / no donate",
                    "aliased in HLO",
                    "hand / jax.grad",
                    "hand / jax.grad (both donated)",
                ],
                "rows": rows,
            }
        ],
        "notes": [
            "Step = value_and_grad + params - 1e-3 * grads, jitted as one program; each "
            "contender threads its own params. Ratios are per-round, median [quartiles]."
        ],
        "data": data,
    }


if __name__ == "__main__":
    investigations.main(run, "python -m benchmarks.investigations.donation")
