"""Multi-device checks for tests/test_parallel.py, run in fresh processes.

JAX fixes its devices when it initialises, so the parent test starts this
script with ``JAX_NUM_CPU_DEVICES`` set. Usage::

    python tests/_parallel_worker.py devices OUT_DIR
    python tests/_parallel_worker.py process OUT_DIR PORT PROCESS_ID NUM_PROCESSES

``devices`` runs the single-process checks on simulated CPU devices;
``process`` is one process of a localhost multi-process run
(``jax.distributed.initialize``). Each writes ``OUT_DIR/<stem>.npz`` (pytrees
flattened to ``<name>/<leaf index>``, for the parent to compare) and
``OUT_DIR/<stem>.json`` (facts: shardings, HLO, error messages, timings).

Both modes train the same problem (:func:`setup`), so the multi-process
results are compared with the one-device results of the ``devices`` run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import purenet
from purenet import layers as L
from purenet import losses, optim, parallel, privacy
from purenet.train import fit, make_epoch, make_step

LOSS = losses.softmax_cross_entropy
STEP_OPTIONS = {"penalty": purenet.penalty(l2=1e-3)}
FIT_OPTIONS = {"epochs": 3, "batch_size": 32}
STEP_ROWS = 64


def mlp(*extra):
    """A two-hidden-layer MLP with the hand-written backward (plus ``extra``)."""
    return L.serial(L.dense(16), L.tanh(), *extra, L.dense(16), L.relu(), L.dense(3))


def init(model, seed=1):
    """``(params, state)`` of ``model`` for 5 input features."""
    return model.init(jax.random.key(seed), (5,))[1:]


def setup():
    """The shared problem: 256 rows, 5 features, 3 classes; an MLP with batch
    norm (whole-batch statistics) and dropout (same masks on any sharding)."""
    kx, kt = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (256, 5), jnp.float32)
    t = jax.random.randint(kt, (256,), 0, 3)
    model = mlp(L.batchnorm(), L.dropout(0.25))
    params, state = init(model)
    # Clipping is a transform in the chain, so the data-parallel step clips the mean gradient.
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.01))
    return x, t, model, params, state, opt, jax.random.key(7)


def probe(record: list) -> L.Layer:
    """An identity layer that records how the batch it receives is sharded
    (rows per device, number of devices), when the step is compiled."""

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        def note(sharding):
            record.append([list(sharding.shard_shape(x.shape)), len(sharding.device_set)])

        jax.debug.inspect_array_sharding(x, callback=note)
        return x, ()

    def backward(params, cache, dy):
        return (), dy

    return L.Layer(init, forward, backward)


class Results:
    def __init__(self):
        self.arrays, self.facts = {}, {}
        self.started = time.perf_counter()

    def tree(self, name, tree):
        for i, leaf in enumerate(jax.tree.leaves(tree)):
            self.arrays[f"{name}/{i:03d}"] = np.asarray(leaf)

    def lap(self, name):
        self.facts.setdefault("seconds", {})[name] = round(time.perf_counter() - self.started, 2)

    def save(self, out: Path, stem: str):
        np.savez(out / f"{stem}.npz", **self.arrays)
        (out / f"{stem}.json").write_text(json.dumps(self.facts, indent=1))


def compiled(fn, *args):
    """``jax.jit(fn)`` compiled once for ``args``: run it and read its HLO."""
    return jax.jit(fn).lower(*args).compile()


def specs(tree) -> list[str]:
    return sorted({str(leaf.sharding.spec) for leaf in jax.tree.leaves(tree)})


def devices_checks(out: Path):
    r = Results()
    r.facts["device_count"] = jax.device_count()
    mesh = parallel.data_mesh()
    r.facts["mesh"] = str(mesh)
    x, t, model, params, state, opt, key = setup()
    xb, tb = x[:STEP_ROWS], t[:STEP_ROWS]
    opt_state = opt.init(params)

    # 1. One step, batch sharded over 8 devices vs one device.
    step = make_step(model, LOSS, opt, **STEP_OPTIONS)
    xs, ts = parallel.shard_batch((xb, tb), mesh)
    ps, ss, st = parallel.replicate((params, opt_state, state), mesh)
    one = compiled(step, params, opt_state, state, xb, tb, key)
    many = compiled(step, ps, ss, st, xs, ts, key)
    sharded = many(ps, ss, st, xs, ts, key)
    r.tree("step/sharded", sharded)
    r.tree("step/single", one(params, opt_state, state, xb, tb, key))
    r.facts["step_x_spec"] = str(xs.sharding.spec)
    r.facts["step_x_rows_per_device"] = sorted({s.data.shape[0] for s in xs.addressable_shards})
    r.facts["step_out_specs"] = specs(sharded)
    r.facts["step_hlo_all_reduce"] = "all-reduce" in many.as_text()
    r.facts["step_hlo_all_reduce_single"] = "all-reduce" in one.as_text()

    # The hand-written gradient alone: dW = x.T @ dy, summed across devices.
    grad_fn = jax.jit(purenet.backprop(model, LOSS))
    r.tree("grads/sharded", grad_fn(ps, xs, ts, state=st))
    r.tree("grads/single", grad_fn(params, xb, tb, state=state))
    r.lap("step")

    # 2. The explicit shard_map step: pmean of the hand-written gradients.
    plain = mlp()
    p2, st2 = init(plain)
    s2 = opt.init(p2)
    sm_step = compiled(
        parallel.make_shard_map_step(plain, LOSS, opt, mesh, **STEP_OPTIONS),
        p2,
        s2,
        st2,
        xs,
        ts,
        key,
    )
    reference = jax.jit(make_step(plain, LOSS, opt, **STEP_OPTIONS))
    r.tree("shard_map/sharded", sm_step(p2, s2, st2, xs, ts, key))
    r.tree("shard_map/single", reference(p2, s2, st2, xb, tb, key))
    r.facts["shard_map_hlo_all_reduce"] = "all-reduce" in sm_step.as_text()
    r.lap("shard_map")

    # 3. make_epoch: the batch gathered by x[rows] inside the scan is split.
    seen: list = []
    probed = L.serial(probe(seen), L.dense(16), L.tanh(), L.dense(3))
    pp, pst = init(probed)
    epoch = make_epoch(probed, LOSS, opt, 32, x.shape[0], mesh=mesh)
    args = (
        *parallel.replicate((pp, opt.init(pp), pst), mesh),
        key,
        *parallel.replicate((x, t), mesh),
    )
    r.facts["epoch_hlo_all_reduce"] = "all-reduce" in compiled(epoch, *args).as_text()
    r.facts["epoch_batch_shards"] = seen[:]
    seen.clear()
    single_epoch = make_epoch(probed, LOSS, opt, 32, x.shape[0])
    jax.jit(single_epoch).lower(pp, opt.init(pp), pst, key, x, t)  # one device: noted when lowered
    r.facts["epoch_batch_shards_single"] = seen[:]
    r.lap("epoch")

    # 4. fit: a few epochs, sharded vs one device.
    single = fit(model, LOSS, opt, params, x, t, key=key, state=state, **FIT_OPTIONS)
    sharded = fit(model, LOSS, opt, params, x, t, key=key, state=state, mesh=mesh, **FIT_OPTIONS)
    r.tree(
        "fit/sharded",
        (sharded.params, sharded.opt_state, sharded.state, sharded.history["train_loss"]),
    )
    r.tree(
        "fit/single", (single.params, single.opt_state, single.state, single.history["train_loss"])
    )
    r.facts["fit_params_specs"] = specs(sharded.params)
    r.facts["fit_params_devices"] = len(jax.tree.leaves(sharded.params)[0].sharding.device_set)
    r.lap("fit")

    # 5. A sweep over 8 seeds: vmap, with the seed axis sharded over "data".
    # (Initialised one by one and stacked: a vmapped init is slow to compile on CPU.)
    keys = jax.random.split(jax.random.key(3), 8)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[init(plain, seed=s)[0] for s in range(8)])
    seeds = (stacked, jax.vmap(opt.init)(stacked), keys)
    epoch = make_epoch(plain, LOSS, opt, 32, x.shape[0])
    sweep = jax.jit(
        jax.vmap(lambda p, s, k, x, t: epoch(p, s, (), k, x, t), in_axes=(0, 0, 0, None, None))
    )
    spread = parallel.shard_seeds(seeds, mesh)
    swept = sweep(*spread, x, t)
    r.tree("seeds/sharded", swept)
    r.tree("seeds/single", sweep(*seeds, x, t))
    r.facts["seeds_key_spec"] = str(spread[2].sharding.spec)
    r.facts["seeds_out_specs"] = specs(swept)
    r.facts["seeds_per_device"] = sorted(
        {s.data.shape[0] for leaf in jax.tree.leaves(swept) for s in leaf.addressable_shards}
    )
    r.lap("seeds")

    # 6. DP-SGD: Poisson samples padded to a multiple of the device count,
    # per-example clipping, noise from the step's key; sharded vs one device.
    settings = privacy.dp_sgd(l2_clip=1.0, noise_multiplier=0.5, delta=1e-5)
    dp_runs = {
        "single": fit(plain, LOSS, opt, p2, x, t, key=key, privacy=settings, **FIT_OPTIONS),
        "sharded": fit(
            plain, LOSS, opt, p2, x, t, key=key, privacy=settings, mesh=mesh, **FIT_OPTIONS
        ),
    }
    for name, run in dp_runs.items():
        r.tree(f"dp_fit/{name}", (run.params, run.opt_state, run.history["train_loss"]))
    r.facts["dp_epsilon"] = {
        k: [float(e) for e in v.history["epsilon"]] for k, v in dp_runs.items()
    }
    r.lap("dp_fit")

    # 7. Clear errors.
    errors = {}
    for name, call in {
        "fit_batch_size": lambda: fit(
            plain, LOSS, opt, p2, x, t, key=key, epochs=1, batch_size=12, mesh=mesh
        ),
        "make_epoch_batch_size": lambda: make_epoch(plain, LOSS, opt, 20, 256, mesh=mesh),
        "shard_batch_rows": lambda: parallel.shard_batch(x[:12], mesh),
        "shard_seeds_count": lambda: parallel.shard_seeds(jax.random.split(key, 6), mesh),
        "shard_map_rows": lambda: parallel.make_shard_map_step(plain, LOSS, opt, mesh)(
            p2, s2, st2, x[:12], t[:12], key
        ),
        "num_devices": lambda: parallel.data_mesh(9),
    }.items():
        try:
            call()
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)
    r.facts["errors"] = errors
    r.lap("errors")
    r.save(out, "devices")


def process_checks(out: Path, port: int, process_id: int, num_processes: int):
    """One of ``num_processes`` localhost processes, each with its own CPU devices."""
    jax.distributed.initialize(
        f"localhost:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=30,
    )
    r = Results()
    r.facts |= {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
    }
    mesh = parallel.data_mesh()  # every device of every process
    x, t, model, params, state, opt, key = setup()

    # One step, each process feeding only its own rows of the global batch.
    n = STEP_ROWS // num_processes
    rows = slice(process_id * n, (process_id + 1) * n)
    sharding = parallel.batch_sharding(mesh)
    xg = jax.make_array_from_process_local_data(sharding, np.asarray(x[rows]))
    tg = jax.make_array_from_process_local_data(sharding, np.asarray(t[rows]))
    r.facts["global_batch_shape"] = list(xg.shape)
    step = jax.jit(make_step(model, LOSS, opt, **STEP_OPTIONS))
    sharded = step(*parallel.replicate((params, opt.init(params), state), mesh), xg, tg, key)
    r.tree("step", jax.tree.map(lambda a: a.addressable_data(0), sharded))
    r.lap("step")

    # fit, the data set replicated on every process: the same call as on one device.
    result = fit(model, LOSS, opt, params, x, t, key=key, state=state, mesh=mesh, **FIT_OPTIONS)
    local = (result.params, result.opt_state, result.state)
    r.tree(
        "fit",
        (*jax.tree.map(lambda a: a.addressable_data(0), local), result.history["train_loss"]),
    )
    r.lap("fit")
    r.save(out, f"process{process_id}")
    jax.distributed.shutdown()


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "devices":
        devices_checks(out)
    elif mode == "process":
        process_checks(out, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
