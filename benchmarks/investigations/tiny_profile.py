"""Where 1,000 vmapped XOR 2-2-1 networks spend their time, and the levers tried.

`python -m benchmarks.investigations.tiny_profile [--rounds N] [--no-flags]` prints:

1. the compiled loop of the `tiny` benchmark (`benchmarks.hlo.loop_bodies`):
   kernels launched per training step, vmapped and for one network;
2. a per-kernel profile of the vmapped loop (`jax.profiler.trace`; XLA:CPU's
   thunk runtime records one event per kernel launch);
3. levers, timed interleaved in one process, wall and CPU time
   (`time.process_time`, all threads), each as a speed-up over one
   `lax.scan` per network (50 networks, scaled to 1,000):

   * `vmap`: the public path, `jax.jit(jax.vmap(scan of make_step))`;
   * `unroll=k`: `lax.scan(..., unroll=k)`;
   * `no YNNPACK`: per-jit `compiler_options` without YNNPACK fusions;
   * `dense: unrolled sums`: `dense` written as a Python sum over the tiny
     contracted axis (`y = b + sum_i x[..., i] W[i]`, likewise `dW`,
     `dx`): no `dot`, only elementwise ops under `vmap`;
   * `sigmoid: lax.logistic`: XLA's own logistic instead of purenet's
     two-branch `where` sigmoid (same derivative `y (1 - y)`);
   * both of the last two together;
   * the seed-minor bound of `benchmarks.tiny` (hand-written, not purenet);

   `dense` as `sum(x[..., :, None] * W, -2)` (broadcast multiply + reduce)
   is left out of the table: its reductions become YNNPACK fusions and one
   run takes ~30x the `vmap` time (3.4 s against 0.12 s on a loaded machine);
4. unless `--no-flags`, levers that need `XLA_FLAGS` before JAX starts,
   each in a fresh process: two CPU devices
   (`--xla_force_host_platform_device_count=2`) with the seeds split by
   `purenet.parallel.shard_seeds`, and the whole loop as one kernel
   (`--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=...`
   with YNNPACK off, so that XLA:CPU's small-while-loop pass takes the loop).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from benchmarks import hlo, tiny
from purenet import activations as act
from purenet import layers as L
from purenet import losses, optim, parallel, train
from purenet.layers.core import Layer

N_SCAN = 50
ONE_KERNEL = (
    "--xla_cpu_experimental_ynn_fusion_type= "
    "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1000000000"
)
FLAG_LEVERS = {
    "2 CPU devices + shard_seeds": "--xla_force_host_platform_device_count=2",
    "whole loop one kernel (no YNNPACK)": ONE_KERNEL,
}


def dense_unrolled(n: int) -> Layer:
    """`dense` with the contractions written as Python sums of elementwise
    products over the (tiny) contracted axis: no `dot` in the program."""
    init = L.dense(n).init  # the same parameters as dense: only the arithmetic differs

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        W, y = params["W"], params["b"]
        for i in range(W.shape[0]):
            y = y + x[..., i : i + 1] * W[i]
        return y, x

    def backward(params, x, dy):
        W = params["W"]
        rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        dW = sum(rows_x[r][:, None] * rows_dy[r][None, :] for r in range(rows_x.shape[0]))
        db = sum(rows_dy[r] for r in range(rows_dy.shape[0]))
        dx = sum(dy[..., j : j + 1] * W[:, j] for j in range(W.shape[1]))
        return {"W": dW, "b": db}, dx

    return Layer(init, forward, backward)


LOGISTIC = act.Activation(f=jax.lax.logistic, df=act.sigmoid.df)


def build(dense=L.dense, sigmoid=act.sigmoid, unroll: int = 1):
    """`(init, scan_training)` of the `tiny` benchmark with swapped parts."""
    model = L.serial(dense(2), L.elementwise(sigmoid), dense(1))
    opt = optim.sgd(tiny.LR)
    step = train.make_step(model, losses.sigmoid_binary_cross_entropy, opt)
    key = jax.random.key(0)

    def init(k):
        params = model.init(k, (2,))[1]
        return params, opt.init(params)

    def scan_training(params, opt_state):
        def body(carry, _):
            return step(*carry, (), tiny.X, tiny.T, key)[:2], None

        return jax.lax.scan(body, (params, opt_state), None, length=tiny.STEPS, unroll=unroll)[0]

    return init, scan_training


def timed(contenders: dict, rounds: int) -> dict:
    """Interleaved wall + CPU samples (`tiny.interleave_cpu`)."""
    return tiny.interleave_cpu(contenders, rounds=rounds)


def speedups(samples: dict, base: str, scale: dict) -> dict:
    out = {}
    for name, s in samples.items():
        w = np.asarray(s["wall"]) * scale.get(name, 1.0)
        c = np.asarray(s["cpu"]) * scale.get(name, 1.0)
        bw = np.asarray(samples[base]["wall"]) * scale[base]
        bc = np.asarray(samples[base]["cpu"]) * scale[base]
        out[name] = {
            "wall_ms": 1e3 * float(np.median(w)),
            "cpu_ms": 1e3 * float(np.median(c)),
            "speedup_wall": float(np.median(bw / w)),
            "speedup_cpu": float(np.median(bc / c)),
        }
    return out


def print_table(rows: dict) -> None:
    print(f"  {'contender':40} {'wall':>10} {'CPU':>10} {'x (wall)':>9} {'x (CPU)':>8}")
    for name, r in rows.items():
        print(
            f"  {name:40} {r['wall_ms']:8.1f}ms {r['cpu_ms']:8.1f}ms "
            f"{r['speedup_wall']:8.2f}x {r['speedup_cpu']:7.2f}x"
        )


def profile(fn, args, runs: int = 3, top: int = 12) -> list[tuple]:
    """Top kernels of `fn(*args)`: (ms per run, launches per run, name)."""
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(runs):
                jax.block_until_ready(fn(*args))
        path = sorted(glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True))[-1]
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    agg = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(("$", "Thunk", "Pjit", "Common")):
            agg[e["name"]][0] += 1
            agg[e["name"]][1] += e["dur"]
    rows = sorted(agg.items(), key=lambda kv: -kv[1][1])
    return [(t / runs / 1e3, n / runs, name) for name, (n, t) in rows[:top]]


def child(name: str, rounds: int) -> dict:
    """One flag lever, in a process started with its XLA_FLAGS."""
    init, scan_fn = build()
    keys = jax.random.split(jax.random.key(1), tiny.NETWORKS)
    many = jax.vmap(init)(keys)
    each = [jax.tree.map(lambda a, i=i: a[i], many) for i in range(N_SCAN)]
    one = jax.jit(scan_fn)
    vmapped = jax.jit(jax.vmap(scan_fn))
    contenders = {"scan per network": lambda: [one(*e) for e in each]}
    if name.startswith("2 CPU"):
        placed = parallel.shard_seeds(many, parallel.data_mesh())
        contenders[name] = lambda: vmapped(*placed)
        contenders["vmap, one device"] = lambda: vmapped(*many)
    else:
        contenders[name] = lambda: vmapped(*many)
        text = vmapped.lower(*many).compile().as_text()
        assert "xla_cpu_small_call" in text, "the loop was not hoisted into one kernel"
        bound = jax.jit(tiny.seed_minor_training())
        minor = tiny.to_seed_minor(many[0])
        contenders["seed-minor bound, one kernel"] = lambda: bound(minor)
    scale = {"scan per network": tiny.NETWORKS / N_SCAN}
    return speedups(timed(contenders, rounds), "scan per network", scale)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.investigations.tiny_profile")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-flags", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.rounds)))
        return

    print(f"load average: {os.getloadavg()}")
    init, scan_fn = build()
    keys = jax.random.split(jax.random.key(1), tiny.NETWORKS)
    many = jax.vmap(init)(keys)
    print("\n1. kernels per training step (while body of the compiled scan)")
    print("   vmap, 1,000 networks:", hlo.loop_bodies(jax.vmap(scan_fn), *many))
    print("   one network:         ", hlo.loop_bodies(scan_fn, *init(keys[0])))

    print("\n2. per-kernel profile of the vmapped loop (ms per run, launches per run)")
    for ms, n, name in profile(jax.jit(jax.vmap(scan_fn)), many):
        print(f"   {ms:8.2f} ms {n:8.0f}  {name}")

    print(f"\n3. levers (interleaved, {args.rounds} rounds; speed-up over one scan per network)")
    each = [jax.tree.map(lambda a, i=i: a[i], many) for i in range(N_SCAN)]
    one = jax.jit(scan_fn)
    variants = {
        "vmap (as is)": (jax.jit(jax.vmap(scan_fn)), many),
        "vmap, unroll=2": (jax.jit(jax.vmap(build(unroll=2)[1])), many),
        "vmap, unroll=8": (jax.jit(jax.vmap(build(unroll=8)[1])), many),
        "vmap, no YNNPACK": (jax.jit(jax.vmap(scan_fn), compiler_options=tiny.NO_YNN), many),
        "vmap, dense: unrolled sums": (jax.jit(jax.vmap(build(dense_unrolled)[1])), many),
        "vmap, sigmoid: lax.logistic": (jax.jit(jax.vmap(build(sigmoid=LOGISTIC)[1])), many),
        "vmap, unrolled sums + lax.logistic": (
            jax.jit(jax.vmap(build(dense_unrolled, LOGISTIC)[1])),
            many,
        ),
        "seed-minor bound (hand-written)": (
            jax.jit(tiny.seed_minor_training(), compiler_options=tiny.NO_YNN),
            (tiny.to_seed_minor(many[0]),),
        ),
    }
    contenders = {"scan per network": lambda: [one(*e) for e in each]}
    contenders |= {name: (lambda f=f, a=a: f(*a)) for name, (f, a) in variants.items()}
    one_unrolled = jax.jit(build(dense_unrolled, LOGISTIC)[1])
    contenders["scan per network, unrolled + logistic"] = lambda: [one_unrolled(*e) for e in each]
    scale = {n: tiny.NETWORKS / N_SCAN for n in contenders if n.startswith("scan per network")}
    started = time.perf_counter()
    print_table(speedups(timed(contenders, args.rounds), "scan per network", scale))
    print(f"   ({time.perf_counter() - started:.0f} s)")

    if args.no_flags:
        return
    print("\n4. levers that need XLA_FLAGS (fresh process each)")
    for name, flags in FLAG_LEVERS.items():
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.investigations.tiny_profile", "--child", name,
             "--rounds", str(args.rounds)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        print(f"   XLA_FLAGS={flags!r}")
        print_table(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\nload average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
