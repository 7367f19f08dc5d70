"""Benchmark `per_example`: per-example gradient norms from the hand-written
backward, against one backprop and against autodiff per example.

Contenders, all under `jax.jit`, float32, same params and batch, each
returning the loss(es) and the gradient(s) or their squared norms:

* `backprop`: `purenet.backprop(model, loss)`, the batch's gradient (the
  unit: what one training step costs);
* `norms`: `purenet.per_example.norms(model, loss)`: each example's squared
  norm per leaf (dense layers on rows: `|x_i|^2 |dy_i|^2`, Goodfellow 2015);
* `grads`: `purenet.per_example.grads(model, loss)`: each example's gradient
  (`m` times the params' memory);
* `vmap(jax.grad)`: `jax.vmap` of `jax.value_and_grad(objective)` on batches
  of one, then the squared norms (what a user of autodiff would write);
* `vmap(backprop)`: the same with purenet's backprop on batches of one.

Timing (`benchmarks.timing.compare`): interleaved in one process, rotating
order, ratios per round to `backprop`; median [quartiles].

Run alone: `python -m benchmarks.per_example [--rounds N]`.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import purenet
from benchmarks.models import problem
from benchmarks.registry import Config, register
from benchmarks.timing import compare, fmt_ratio, fmt_spread
from purenet import per_example

SHAPES = (((784, 512, 512, 10), 256),)
ROUNDS = (20, 100)  # quick, full


def _sq(grads):
    return per_example.sq_norms_of(grads)


def contenders(model, loss) -> dict:
    """name -> jitted `f(params, x, t)`."""
    objective = purenet.objective(model, loss)
    backprop = purenet.backprop(model, loss)

    def one(f):
        def per_row(params, x, t):
            return jax.vmap(lambda xi, ti: f(params, xi[None], ti[None]))(x, t)

        return per_row

    def autodiff(params, x, t):
        losses, grads = one(jax.value_and_grad(objective))(params, x, t)
        return losses, _sq(grads)

    def by_backprop(params, x, t):
        losses, grads = one(backprop)(params, x, t)
        return losses, _sq(grads)

    return {
        "backprop": jax.jit(backprop),
        "norms": jax.jit(per_example.norms(model, loss)),
        "grads": jax.jit(per_example.grads(model, loss)),
        "vmap(jax.grad)": jax.jit(autodiff),
        "vmap(backprop)": jax.jit(by_backprop),
    }


def check(model, loss, params, x, t) -> float:
    """The largest relative difference between `norms` and `vmap(jax.grad)`'s
    global squared norms (the contenders compute the same thing)."""
    fns = contenders(model, loss)
    ours = sum(jax.tree.leaves(fns["norms"](params, x, t)[1]))
    theirs = sum(jax.tree.leaves(fns["vmap(jax.grad)"](params, x, t)[1]))
    return float(jnp.max(jnp.abs(ours - theirs) / jnp.abs(theirs)))


@register("per_example", "per-example gradient norms vs backprop vs vmap(jax.grad), float32")
def run(config: Config) -> dict:
    rows, data = [], {}
    for sizes, batch in SHAPES:
        p = problem(sizes, batch)
        config.log(f"per_example: {p.name}")
        fns = contenders(p.model, p.loss)
        thunks = {name: (lambda f=f, p=p: f(p.params, p.x, p.t)) for name, f in fns.items()}
        timing = compare(thunks, baseline="backprop", rounds=config.repeats(*ROUNDS))
        timing.pop("samples")
        timing["max_rel_diff_norms_vs_autodiff"] = check(p.model, p.loss, p.params, p.x, p.t)
        data[p.name] = timing
        for name in fns:
            rows.append(
                [
                    p.name,
                    name,
                    fmt_spread(timing["times"][name]),
                    fmt_ratio(timing["ratios"][name]) if name in timing["ratios"] else "1",
                ]
            )
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            {
                "title": "Per-example gradient norms: time per call, median [quartiles]",
                "headers": ["shape @ batch", "contender", "time", "/ backprop"],
                "rows": rows,
            }
        ],
        "notes": [
            "Interleaved in one process; ratios per round to backprop, median [quartiles]. "
            "norms and vmap(jax.grad) agree to float32 rounding (data: "
            "max_rel_diff_norms_vs_autodiff)."
        ],
        "data": data,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.per_example", description=__doc__)
    parser.add_argument("--full", action="store_true", help="more rounds")
    args = parser.parse_args(argv)
    result = run(Config(full=args.full))
    for table in result["tables"]:
        print(table["title"])
        print(" | ".join(table["headers"]))
        for row in table["rows"]:
            print(" | ".join(row))
    for name, timing in result["data"].items():
        print(
            f"{name}: norms vs vmap(jax.grad), max relative difference "
            f"{timing['max_rel_diff_norms_vs_autodiff']:.2e}"
        )


if __name__ == "__main__":
    main()
