"""Investigation `variants`: ways of writing the hand-written gradient, each
against `jax.grad`.

`python -m benchmarks.investigations.variants [--full] [--scale S]` prints the tables.

The questions behind a hand-written step that is slower than `jax.grad`,
each answered by a variant of `purenet.backprop` (same model, same loss):

* `as is`: `purenet.backprop` as shipped;
* `dot_general`: dense backward with `lax.dot_general` and explicit
  contracting dimensions instead of `x.T @ dy` and `dy @ W.T`
  (does `.T` materialise a transpose?);
* `transpose + barrier`: `dW = optimization_barrier(x.T) @ dy`, a
  transpose XLA cannot fold into the dot, so that the product has the
  standard contracting dimensions that YNNPACK accepts (XLA:CPU hands
  `dot`s contracting dimension 0 of both operands to Eigen);
* `first dx kept`: also returns the first layer's `dx` (what the shipped
  backprop costs if XLA did not remove it as dead code);
* `value, grad apart`: calls `loss.value` and `loss.grad` separately
  instead of the fused `loss.value_and_grad` (is the softmax computed twice?);
* `penalty always`: `purenet.backprop(model, loss, purenet.penalty())`,
  a penalty value whose strengths are 0 (what a `vmap` over strengths runs;
  `backprop` without a penalty skips it in Python).

All are interleaved with `jax.grad` (`jax.value_and_grad` of the
objective) and with a second copy of it (`control`), as in `gradient`.

A second table checks the one variant that wins somewhere (`transpose +
barrier`, on the 2-8-1 net) where tiny networks are trained in practice:
the `tiny` benchmark's 1,000 XOR networks trained at once under
`jax.vmap` (1,000 steps of `purenet.train.make_step` in a `lax.scan`),
with the shipped `dense` and with the barrier one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

import purenet
from benchmarks import hlo, investigations
from benchmarks.gradient import SHAPES
from benchmarks.models import problem
from benchmarks.registry import Config
from benchmarks.timing import compare, fmt_ratio, fmt_time
from purenet import layers as L

ROUNDS = {
    (784, 256, 10): (200, 1000),
    (784, 1024, 1024, 10): (20, 100),
    (2, 8, 1): (600, 3000),
}


def _dense_with(backward_dW):
    """`dense(n)` whose backward computes `dW = backward_dW(x, dy)` and
    `dx = dy W^T` with explicit contracting dimensions."""

    def factory(n):
        base = L.dense(n)

        def backward(params, x, dy):
            dx = lax.dot_general(dy, params["W"], (((1,), (1,)), ((), ())))
            return {"W": backward_dW(x, dy), "b": jnp.sum(dy, axis=0)}, dx

        return L.Layer(base.init, base.forward, backward)

    return factory


dense_dot_general = _dense_with(lambda x, dy: lax.dot_general(x, dy, (((0,), (0,)), ((), ()))))
dense_barrier = _dense_with(lambda x, dy: lax.optimization_barrier(x.T) @ dy)


def _mlp(dense, sizes):
    layers = []
    for n in sizes[1:-1]:
        layers += [dense(n), L.relu()]
    return L.serial(*layers, dense(sizes[-1]))


def _first_dx_kept(p):
    def f(params, x, t):
        y, cache = p.model.forward(params, x)
        J, dy = p.loss.value_and_grad(y, t)
        grads, dx = p.model.backward(params, cache, dy)
        return J, grads, dx

    return f


def _value_grad_apart(p):
    def f(params, x, t):
        y, cache = p.model.forward(params, x)
        J, dy = p.loss.value(y, t), p.loss.grad(y, t)
        grads, _ = p.model.backward(params, cache, dy)
        return J, grads

    return f


def variants(p) -> dict:
    """Name -> un-jitted function of `(params, x, t)`."""
    return {
        "as is": purenet.backprop(p.model, p.loss),
        "dot_general": purenet.backprop(_mlp(dense_dot_general, p.sizes), p.loss),
        "transpose + barrier": purenet.backprop(_mlp(dense_barrier, p.sizes), p.loss),
        "first dx kept": _first_dx_kept(p),
        "value, grad apart": _value_grad_apart(p),
        "penalty always": purenet.backprop(p.model, p.loss, purenet.penalty(l2=0.0, l1=0.0)),
    }


def _xor_vmapped(dense):
    """`(train, state)`: vmapped scan training of 1,000 2-2-1 XOR nets."""
    from benchmarks.tiny import NETWORKS, setup

    init, _, _, scan_training, _, _ = setup(dense)
    state = jax.vmap(init)(jax.random.split(jax.random.key(1), NETWORKS))
    return jax.jit(jax.vmap(scan_training)), state


def xor_vmapped_rows(config: Config) -> tuple[list, dict]:
    fns = {"as is": _xor_vmapped(L.dense), "transpose + barrier": _xor_vmapped(dense_barrier)}
    thunks = {name: (lambda f=f, s=s: f(*s)) for name, (f, s) in fns.items()}
    m = compare(thunks, baseline="as is", rounds=config.repeats(30, 150), sample_s=0.0)
    m.pop("samples")
    rows = [
        [
            name,
            fmt_time(m["times"][name]["median"]),
            fmt_time(m["times"][name]["min"]),
            "1" if name == "as is" else f"**{fmt_ratio(m['ratios'][name])}**",
        ]
        for name in fns
    ]
    return rows, m


def run(config: Config) -> dict:
    rows, data = [], {}
    for sizes, batch, loss in SHAPES:
        p = problem(sizes, batch, loss=loss)
        config.log(p.name)
        objective = purenet.objective(p.model, p.loss)
        fns = variants(p)
        args = (p.params, p.x, p.t)
        summaries = {name: hlo.summarize(f, *args) for name, f in fns.items()}
        jitted = {name: jax.jit(f) for name, f in fns.items()}
        jitted["jax.grad"] = jax.jit(jax.value_and_grad(objective))
        jitted["control"] = jax.jit(jax.value_and_grad(objective))
        thunks = {name: (lambda f=f, a=args: f(*a)) for name, f in jitted.items()}
        quick, full = ROUNDS[sizes]
        m = compare(thunks, baseline="jax.grad", rounds=config.repeats(quick, full))
        m.pop("samples")
        data[p.name] = {**m, "hlo": summaries}
        for name in [*fns, "control"]:
            s = summaries.get(name)
            rows.append(
                [
                    p.name,
                    name,
                    fmt_time(m["times"][name]["median"]),
                    fmt_time(m["times"][name]["min"]),
                    f"**{fmt_ratio(m['ratios'][name])}**",
                    "" if s is None else f"{s['kernels']}",
                    "" if s is None else f"{s['dots_ynn']}+{s['dots_xla']}",
                    "" if s is None else f"{s['transposes']}+{s['copies']}",
                ]
            )
    config.log("1,000 XOR nets under vmap")
    xor_rows, xor_data = xor_vmapped_rows(config)
    data["xor_vmapped"] = xor_data
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            {
                "title": "Variants of the hand-written gradient vs jax.grad",
                "headers": [
                    "shape @ batch",
                    "variant",
                    "median",
                    "min",
                    "/ jax.grad, median [quartiles]",
                    "kernels",
                    "dots ynn+xla",
                    "transposes+copies",
                ],
                "rows": rows,
            },
            {
                "title": "1,000 XOR nets x 1,000 steps under jax.vmap (the tiny benchmark's "
                "vmap contender), by dense backward",
                "headers": ["dense", "median", "min", "/ as is, median [quartiles]"],
                "rows": xor_rows,
            },
        ],
        "notes": [
            "Variants are defined in benchmarks/investigations/variants.py. 'control' is a "
            "second jitted copy of jax.grad (the noise floor)."
        ],
        "data": data,
    }


if __name__ == "__main__":
    investigations.main(run, "python -m benchmarks.investigations.variants")
