"""Benchmark `tiny`: training 2-2-1 XOR networks, where overhead is everything.

The network is 2-2-1 (sigmoid hidden units, sigmoid binary cross-entropy on
the logit), the data the four XOR patterns, the optimizer plain SGD (lr 0.5),
every step one `purenet.train.make_step` on the whole batch of 4.

One network, `STEPS` steps, interleaved:

* `Python loop`: `jax.jit(step)` called `STEPS` times from Python;
* `lax.scan`: one jitted `lax.scan` over the `STEPS` steps.

1,000 networks (different initial weights), `STEPS` steps each, interleaved:

* `vmap`: `jax.jit(jax.vmap(scan_training))`: all networks at once;
* `scan per network`: the jitted scan called once per network;
* `Python loop per network`: the jitted step, `STEPS` calls per network.

* `seed-minor by hand (bound)`: not purenet code. The same XOR step written
  out by hand on arrays whose *last* axis is the seed (`W1` of shape
  `(2, 2, 1000)`), only elementwise ops and sums over the 4 rows, the
  sigmoid as `1 / (1 + exp(-x))`, compiled without YNNPACK fusions
  (`compiler_options`). Every op is then a contiguous loop over 1,000
  seeds that vectorises; it is the best this formulation gets from XLA:CPU
  here, an upper bound for what any rewrite of purenet's layers could reach
  under `vmap` (which puts the seed axis *first*: `lax.scan`'s batching
  rule moves a batched carry to axis 0).

Quick mode times the two "one after another" contenders on a subset of the
networks and **extrapolates** linearly to 1,000 (said so in the table);
`--full` runs all 1,000. Each sample records wall time and the process's
CPU time (`time.process_time`, all threads): on a shared machine CPU time
moves much less with the load, so both ratios are reported. Reported too:
network-steps per second and GFLOP/s at `FLOPS_PER_STEP` (the dense layers'
`6 m sum(n_in n_out)` = 144 FLOP for 2-2-1 at m = 4, the convention of
`benchmarks.gflops`), as a fraction of a float32 `PEAK_N` x `PEAK_N`
matmul timed in the same rounds (the practical peak of XLA:CPU here).
The fraction of the vmapped networks that solve XOR is a sanity check.

Where the time goes, and the levers measured:
`python -m benchmarks.investigations.tiny_profile`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.models import matmul_flops
from benchmarks.registry import Config, register
from benchmarks.timing import block, fmt_time, interleave, summary
from purenet import layers as L
from purenet import losses, optim, train

STEPS, NETWORKS, LR = 1000, 1000, 0.5
X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
T = jnp.array([[0.0], [1.0], [1.0], [0.0]])
FLOPS_PER_STEP = matmul_flops((2, 2, 1), 4)  # 144
PEAK_N = 1024
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}  # per-jit: no YNNPACK fusions


def interleave_cpu(contenders: dict, *, rounds: int, warmup: int = 1) -> dict:
    """As `benchmarks.timing.interleave` with `number=1`, recording both
    wall time and process CPU time: name -> {"wall": [...], "cpu": [...]}."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            block(contenders[name]())
    out = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0, c0 = time.perf_counter(), time.process_time()
            block(contenders[name]())
            out[name]["wall"].append(time.perf_counter() - t0)
            out[name]["cpu"].append(time.process_time() - c0)
    return out


def seed_minor_training(steps: int = STEPS, lr: float = LR):
    """The bound: XOR 2-2-1 training written by hand with the seed axis last.

    `train(W1 (2,2,S), b1 (2,S), W2 (2,1,S), b2 (1,S)) -> same`: full-batch
    SGD on the 4 patterns, sigmoid hidden units, sigmoid cross-entropy on the
    logit, the same math as purenet's step (the results agree to float32
    rounding). Not purenet code: a measuring stick.
    """
    x, t = np.asarray(X), np.asarray(T)[:, 0]

    def sigmoid(z):
        return 1.0 / (1.0 + jnp.exp(-z))

    def step(p):
        W1, b1, W2, b2 = p
        z1 = x[:, 0, None, None] * W1[0] + x[:, 1, None, None] * W1[1] + b1  # (4, 2, S)
        h = sigmoid(z1)
        y = h[:, 0] * W2[0, 0] + h[:, 1] * W2[1, 0] + b2[0]  # (4, S)
        dy = (sigmoid(y) - t[:, None]) / x.shape[0]
        dW2 = jnp.stack([jnp.sum(h[:, 0] * dy, 0), jnp.sum(h[:, 1] * dy, 0)])[:, None]
        db2 = jnp.sum(dy, 0)[None]
        dz1 = dy[:, None] * W2[:, 0] * h * (1.0 - h)  # (4, 2, S)
        dW1 = jnp.stack([jnp.sum(x[:, i, None, None] * dz1, 0) for i in range(2)])
        db1 = jnp.sum(dz1, 0)
        return W1 - lr * dW1, b1 - lr * db1, W2 - lr * dW2, b2 - lr * db2

    def train_all(p):
        return jax.lax.scan(lambda c, _: (step(c), None), p, None, length=steps)[0]

    return train_all


def to_seed_minor(params):
    """purenet's stacked 2-2-1 params (seed axis first) -> the bound's arrays."""
    (d1, _, d2) = params
    return tuple(jnp.moveaxis(a, 0, -1) for a in (d1["W"], d1["b"], d2["W"], d2["b"]))


def setup(dense=L.dense):
    """The XOR training pieces; `dense` is the layer factory (variants swap it)."""
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
    rounds_many = config.repeats(5, 9, minimum=3)
    config.log(
        f"tiny: {NETWORKS} networks ({n_scan} / {n_loop} one after another), {rounds_many} rounds"
    )
    bound = jax.jit(seed_minor_training(), compiler_options=NO_YNN)
    minor = to_seed_minor(many[0])
    a, b = (jax.random.normal(jax.random.key(i), (PEAK_N, PEAK_N)) for i in (2, 3))
    matmul = jax.jit(jnp.matmul)
    contenders = {
        "vmap": lambda: vmapped(*many),
        "scan per network": lambda: [scan_train(*s) for s in each[:n_scan]],
        "Python loop per network": lambda: [python_loop(s) for s in each[:n_loop]],
        "seed-minor by hand (bound)": lambda: bound(minor),
        f"matmul {PEAK_N} (peak)": lambda: matmul(a, b),
    }
    samples = interleave_cpu(contenders, rounds=rounds_many)
    scale = {
        "scan per network": NETWORKS / n_scan,
        "Python loop per network": NETWORKS / n_loop,
    }
    counts = {"scan per network": n_scan, "Python loop per network": n_loop}
    samples = {
        name: {k: np.asarray(v) * scale.get(name, 1.0) for k, v in s.items()}
        for name, s in samples.items()
    }
    peak = samples.pop(f"matmul {PEAK_N} (peak)")
    peak_gflops = {k: 2 * PEAK_N**3 / np.median(v) / 1e9 for k, v in peak.items()}
    many_times = {name: summary(s["wall"]) for name, s in samples.items()}
    many_cpu = {name: summary(s["cpu"]) for name, s in samples.items()}
    base = samples["scan per network"]
    # pairwise, round by round: scan per network / contender
    speedup = {
        name: {k: summary(base[k] / s[k]) for k in ("wall", "cpu")} for name, s in samples.items()
    }
    trained = vmapped(*many)[0]
    fraction_solved = float(jnp.mean(jax.vmap(solved)(trained)))
    pairs = zip(to_seed_minor(trained), bound(minor), strict=True)
    bound_error = max(float(jnp.max(jnp.abs(u - v))) for u, v in pairs)

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
    gflops = {}
    for name, s in many_times.items():
        n = counts.get(name, NETWORKS)
        how = "measured" if n == NETWORKS else f"extrapolated from {n} networks"
        rate = NETWORKS * STEPS / s["median"]
        gflops[name] = rate * FLOPS_PER_STEP / 1e9
        rows_many.append(
            [
                name,
                fmt_time(s["median"]),
                fmt_time(many_cpu[name]["median"]),
                f"{rate / 1e6:,.1f}M",
                f"{speedup[name]['wall']['median']:.2f}x",
                f"{speedup[name]['cpu']['median']:.2f}x",
                f"{gflops[name]:.2f} ({gflops[name] / peak_gflops['wall']:.1%})",
                how,
            ]
        )
    vm = speedup["vmap"]
    vmap_cpu_gflops = NETWORKS * STEPS * FLOPS_PER_STEP / many_cpu["vmap"]["median"] / 1e9
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
                "headers": [
                    "contender",
                    "median wall",
                    "median CPU",
                    "network-steps/s",
                    "speed-up (wall)",
                    "speed-up (CPU)",
                    "GFLOP/s (% of peak)",
                    "how",
                ],
                "rows": rows_many,
            },
        ],
        "notes": [
            f"lax.scan is {ratio_one:.0f}x faster than the Python loop for one network. "
            f"{fraction_solved:.0%} of the vmapped networks solve XOR after {STEPS} steps "
            "(the rest sit in the known local minima / plateaus of 2-2-1 XOR).",
            f"vmap vs one lax.scan per network: {vm['wall']['median']:.2f}x in wall time "
            f"[{vm['wall']['q1']:.2f}, {vm['wall']['q3']:.2f}], {vm['cpu']['median']:.2f}x in "
            f"CPU time [{vm['cpu']['q1']:.2f}, {vm['cpu']['q3']:.2f}] (speed-ups are "
            "round-by-round ratios, median [quartiles]). Peak: "
            f"{peak_gflops['wall']:.1f} GFLOP/s ({PEAK_N} matmul, same rounds), "
            f"{FLOPS_PER_STEP} FLOP per network-step; in CPU time (all threads) the peak is "
            f"{peak_gflops['cpu']:.1f} GFLOP per CPU-second and vmap reaches "
            f"{vmap_cpu_gflops:.2f} ({vmap_cpu_gflops / peak_gflops['cpu']:.1%}).",
            f"The seed-minor bound (hand-written, not purenet) reaches "
            f"{speedup['seed-minor by hand (bound)']['cpu']['median']:.2f}x in CPU time; its "
            f"params agree with vmap's to {bound_error:.1e}.",
        ],
        "data": {
            "single": single,
            "many": many_times,
            "many_cpu": many_cpu,
            "speedup_vs_scan_per_network": speedup,
            "gflops": gflops,
            "peak_gflops": peak_gflops,
            "vmap_gflops_per_cpu_second": vmap_cpu_gflops,
            "flops_per_network_step": FLOPS_PER_STEP,
            "n_loop": n_loop,
            "n_scan": n_scan,
            "fraction_solved": fraction_solved,
            "bound_max_abs_difference": bound_error,
        },
    }
