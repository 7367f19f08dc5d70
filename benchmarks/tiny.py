"""Benchmark ``tiny``: training 2-2-1 XOR networks, where overhead is everything.

The network is 2-2-1 (sigmoid hidden units, sigmoid binary cross-entropy on
the logit), the data the four XOR patterns, the optimizer plain SGD (lr 0.5),
every step one ``purenet.train.make_step`` on the whole batch of 4.

One network, ``STEPS`` steps, interleaved:

* ``Python loop``: ``jax.jit(step)`` called ``STEPS`` times from Python;
* ``lax.scan``: one jitted ``lax.scan`` over the ``STEPS`` steps.

1,000 networks (different initial weights), ``STEPS`` steps each, interleaved:

* ``vmap``: ``jax.jit(jax.vmap(scan_training))``: all networks at once;
* ``scan per network``: the jitted scan called once per network;
* ``Python loop per network``: the jitted step, ``STEPS`` calls per network.

Quick mode times the two "one after another" contenders on a subset of the
networks and **extrapolates** linearly to 1,000 (said so in the table);
``--full`` runs all 1,000. Reported: median wall time and network-steps per
second; the fraction of the vmapped networks that solve XOR is a sanity check.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.registry import Config, register
from benchmarks.timing import fmt_time, interleave, summary
from purenet import layers as L
from purenet import losses, optim, train

STEPS, NETWORKS, LR = 1000, 1000, 0.5
X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
T = jnp.array([[0.0], [1.0], [1.0], [0.0]])


def setup(dense=L.dense):
    """The XOR training pieces; ``dense`` is the layer factory (variants swap it)."""
    model = L.serial(dense(2), L.sigmoid(), dense(1))
    loss = losses.sigmoid_binary_cross_entropy
    opt = optim.sgd(LR)
    step = train.make_step(model, loss, opt)
    key = jax.random.key(0)  # no dropout: the step's key is unused

    _, _, state = model.init(key, (2,))  # no batch norm: a state without leaves

    def init(k):
        params = model.init(k, (2,))[1]
        return params, opt.init(params)

    # A scan of make_step rather than make_train: every step is full batch, and
    # make_train would add a permutation of the 4 rows per step to what is timed.
    def scan_training(params, opt_state):
        def body(carry, _):
            params, opt_state, _, _ = step(*carry, state, X, T, key)
            return (params, opt_state), None

        (params, opt_state), _ = jax.lax.scan(body, (params, opt_state), None, length=STEPS)
        return params, opt_state

    def solved(params):
        y, _ = model.forward(params, X)
        return jnp.all((y > 0) == (T > 0.5))

    return init, jax.jit(step), jax.jit(scan_training), scan_training, solved, (state, key)


@register("tiny", "XOR 2-2-1: Python loop vs lax.scan; 1,000 nets by vmap vs one after another")
def run(config: Config) -> dict:
    init, step, scan_train, scan_fn, solved, (model_state, key) = setup()
    keys = jax.random.split(jax.random.key(1), NETWORKS)
    one = init(keys[0])
    many = jax.vmap(init)(keys)
    each = [jax.tree.map(lambda a, i=i: a[i], many) for i in range(NETWORKS)]
    vmapped = jax.jit(jax.vmap(scan_fn))

    def python_loop(state):
        params, opt_state = state
        for _ in range(STEPS):
            params, opt_state, _, _ = step(params, opt_state, model_state, X, T, key)
        return params

    # One network.
    rounds = config.repeats(7, 30)
    config.log(f"tiny: one network, {rounds} rounds")
    single = interleave(
        {"Python loop": lambda: python_loop(one), "lax.scan": lambda: scan_train(*one)},
        rounds=rounds,
        number=1,
    )
    single = {name: summary(s) for name, s in single.items()}

    # Many networks.
    n_loop = NETWORKS if config.full else max(2, int(10 * config.scale))
    n_scan = NETWORKS if config.full else max(2, int(100 * config.scale))
    rounds_many = config.repeats(2, 3, minimum=1)
    config.log(
        f"tiny: {NETWORKS} networks ({n_scan} / {n_loop} one after another), {rounds_many} rounds"
    )
    many_samples = interleave(
        {
            "vmap": lambda: vmapped(*many),
            "scan per network": lambda: [scan_train(*s) for s in each[:n_scan]],
            "Python loop per network": lambda: [python_loop(s) for s in each[:n_loop]],
        },
        rounds=rounds_many,
        number=1,
        warmup=1,
    )
    scale = {
        "vmap": 1,
        "scan per network": NETWORKS / n_scan,
        "Python loop per network": NETWORKS / n_loop,
    }
    many_times = {name: summary(np.asarray(s) * scale[name]) for name, s in many_samples.items()}
    fraction_solved = float(jnp.mean(jax.vmap(solved)(vmapped(*many)[0])))

    rows_one = [
        [
            name,
            fmt_time(s["median"]),
            f"{fmt_time(s['min'])} - {fmt_time(s['max'])}",
            f"{STEPS / s['median']:,.0f}",
        ]
        for name, s in single.items()
    ]
    ratio_one = single["Python loop"]["median"] / single["lax.scan"]["median"]
    rows_many = []
    for name, s in many_times.items():
        n = {"vmap": NETWORKS, "scan per network": n_scan, "Python loop per network": n_loop}[name]
        how = "measured" if n == NETWORKS else f"extrapolated from {n} networks"
        rows_many.append(
            [
                name,
                fmt_time(s["median"]),
                f"{fmt_time(s['min'])} - {fmt_time(s['max'])}",
                f"{NETWORKS * STEPS / s['median']:,.0f}",
                f"{s['median'] / many_times['vmap']['median']:.0f}x",
                how,
            ]
        )
    return {
        "description": f"2-2-1 XOR networks, {STEPS} full-batch SGD steps each: a Python loop "
        "of jitted steps vs one lax.scan; 1,000 networks with vmap vs one after another.",
        "tables": [
            {
                "title": f"tiny: one network, {STEPS} steps",
                "headers": ["contender", "median", "min - max", "steps/s"],
                "rows": rows_one,
            },
            {
                "title": f"tiny: {NETWORKS} networks x {STEPS} steps",
                "headers": ["contender", "median", "min - max", "network-steps/s", "/ vmap", "how"],
                "rows": rows_many,
            },
        ],
        "notes": [
            f"lax.scan is {ratio_one:.0f}x faster than the Python loop for one network. "
            f"{fraction_solved:.0%} of the vmapped networks solve XOR after {STEPS} steps "
            "(the rest sit in the known local minima / plateaus of 2-2-1 XOR)."
        ],
        "data": {
            "single": single,
            "many": many_times,
            "n_loop": n_loop,
            "n_scan": n_scan,
            "fraction_solved": fraction_solved,
        },
    }
