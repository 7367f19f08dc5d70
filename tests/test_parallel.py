"""purenet.parallel: data parallelism with JAX sharding.

The multi-device checks need several devices, and JAX fixes its devices when
it initialises, so they run in fresh processes (tests/_parallel_worker.py):
one with 8 simulated CPU devices (``JAX_NUM_CPU_DEVICES=8``) and, at the same
time, two localhost processes of 2 devices each joined by
``jax.distributed.initialize``. The workers save their results; the tests
below compare them.

Agreement is float32 ``rtol=1e-5`` relative to each array's scale
(``atol = 1e-5 * max|reference|``): sharding only changes the order of the
sums over the batch, and an entry that is a sum with cancellation (a gradient
entry near zero) has a large relative error on its own whatever the order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh

from purenet import layers as L
from purenet import losses, optim, parallel
from purenet.train import fit, make_epoch

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_parallel_worker.py")
DEVICES = 8
RTOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(mode, args, num_devices, out, stem):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(num_devices),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(out / f"{stem}.log", "w") as log:  # a file, not a pipe: never blocks
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), mode, str(out), *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Run(proc, out, stem)


class Run:
    """One worker process: its exit status, output, arrays and facts."""

    def __init__(self, proc, out, stem):
        self.proc, self.out, self.stem = proc, out, stem

    def wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log = (self.out / f"{self.stem}.log").read_text()
        self.ok = self.proc.returncode == 0 and (self.out / f"{self.stem}.npz").exists()
        if self.ok:
            with np.load(self.out / f"{self.stem}.npz") as z:
                self.arrays = dict(z)
            self.facts = json.loads((self.out / f"{self.stem}.json").read_text())
        return self

    def require(self):
        if not self.ok:
            pytest.fail(f"worker {self.stem} failed:\n{self.log[-4000:]}")
        return self


@pytest.fixture(scope="module", autouse=True)
def started(tmp_path_factory):
    """Start the workers when the module starts (the in-process tests, first in
    the file, run meanwhile); kill any still running when it ends."""
    out = tmp_path_factory.mktemp("parallel")
    port = str(_free_port())
    workers = {
        "devices": _start("devices", [], DEVICES, out, "devices"),
        **{
            f"process{i}": _start("process", [port, str(i), "2"], 2, out, f"process{i}")
            for i in range(2)
        },
    }
    yield workers
    for run in workers.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


@pytest.fixture(scope="module")
def runs(started):
    return {name: run.wait(timeout=300) for name, run in started.items()}


@pytest.fixture(scope="module")
def devices(runs):
    return runs["devices"].require()


def tree(arrays, name):
    keys = sorted(k for k in arrays if k.startswith(name + "/"))
    assert keys, f"no arrays saved under {name!r}"
    return [arrays[k] for k in keys]


def assert_trees_close(got, want, what):
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape and a.dtype == b.dtype, (what, i, a.shape, b.shape)
        if not np.issubdtype(b.dtype, np.floating):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}, leaf {i}")
            continue
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        np.testing.assert_allclose(
            a, b, rtol=RTOL, atol=RTOL * scale, err_msg=f"{what}, leaf {i} of shape {b.shape}"
        )


def assert_sharded_matches_single(arrays, name):
    assert_trees_close(tree(arrays, f"{name}/sharded"), tree(arrays, f"{name}/single"), name)


# ---------------------------------------------------------- in this process


def test_one_device_mesh_is_the_same_computation():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.axis_types == (AxisType.Auto,)
    assert parallel.num_shards(mesh) == len(jax.devices())
    model = L.serial(L.dense(8), L.tanh(), L.dense(3))
    _, params, _ = model.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (32, 4), jnp.float32)
    t = jax.random.randint(jax.random.key(2), (32,), 0, 3)
    kw = dict(key=jax.random.key(3), epochs=2, batch_size=8)
    plain = fit(model, losses.softmax_cross_entropy, optim.adam(0.01), params, x, t, **kw)
    meshed = fit(
        model, losses.softmax_cross_entropy, optim.adam(0.01), params, x, t, mesh=mesh, **kw
    )
    for a, b in zip(jax.tree.leaves(meshed.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert all(leaf.sharding.mesh == mesh for leaf in jax.tree.leaves(meshed.params))
    xs = parallel.shard_batch(x, mesh)
    assert xs.sharding == parallel.batch_sharding(mesh)
    assert parallel.replicate(params, mesh)[0]["W"].sharding == parallel.replicated_sharding(mesh)


def test_bad_meshes_are_refused():
    model = L.serial(L.dense(3))
    opt = optim.sgd(0.1)
    with pytest.raises(ValueError, match="^mesh: expected a jax.sharding.Mesh"):
        make_epoch(model, losses.mse, opt, 4, 8, mesh="data")
    with pytest.raises(ValueError, match="^mesh: expected a mesh with a 'data' axis"):
        make_epoch(model, losses.mse, opt, 4, 8, mesh=jax.make_mesh((1,), ("batch",)))
    explicit = jax.make_mesh((1,), ("data",))  # jax.make_mesh's default axis type
    assert explicit.axis_types == (AxisType.Explicit,)
    with pytest.raises(ValueError, match="AxisType.Auto"):
        make_epoch(model, losses.mse, opt, 4, 8, mesh=explicit)
    with pytest.raises(ValueError, match="^num_devices: "):
        parallel.data_mesh(0)
    with pytest.raises(ValueError, match="^batch_size: "):
        parallel.check_batch_size(0, parallel.data_mesh())
    assert isinstance(parallel.data_mesh(1), Mesh)


# ----------------------------------------------------------- 8 simulated devices


def test_the_worker_sees_8_devices(devices):
    assert devices.facts["device_count"] == DEVICES
    assert devices.facts["mesh"] == "Mesh('data': 8, axis_types=(Auto,))"


def test_sharded_step_equals_single_device_step(devices):
    # Dense, tanh, batch norm, dropout, relu; L2, clipping, Adam: params, state, J.
    assert_sharded_matches_single(devices.arrays, "step")
    floats = [a for a in tree(devices.arrays, "step/single") if a.dtype.kind == "f"]
    assert floats and all(a.dtype == np.float32 for a in floats)
    # The hand-written gradients themselves.
    assert_sharded_matches_single(devices.arrays, "grads")
    assert devices.facts["step_out_specs"] == ["P()"]  # params and state stay replicated


def test_gradients_are_computed_on_sharded_inputs(devices):
    facts = devices.facts
    assert facts["step_x_spec"] == "P('data',)"
    assert facts["step_x_rows_per_device"] == [64 // DEVICES]
    # The partitioner inserted the all-reduce of the per-device x.T @ dy ...
    assert facts["step_hlo_all_reduce"]
    assert not facts["step_hlo_all_reduce_single"]
    # ... and inside make_epoch the batch gathered by x[rows] is split by rows.
    assert facts["epoch_hlo_all_reduce"]
    assert facts["epoch_batch_shards"] == [[[32 // DEVICES, 5], DEVICES]]
    assert facts["epoch_batch_shards_single"] == [[[32, 5], 1]]


def test_sharded_fit_matches_single_device_fit(devices):
    assert_sharded_matches_single(devices.arrays, "fit")  # params, opt state, train loss
    assert devices.facts["fit_params_specs"] == ["P()"]
    assert devices.facts["fit_params_devices"] == DEVICES


def test_dp_sgd_sharded_equals_single_device(devices):
    # Poisson-sampled, clipped and noised steps: the same params on 8 devices as on one
    assert_sharded_matches_single(devices.arrays, "dp_fit")
    spent = devices.facts["dp_epsilon"]
    assert spent["single"] == spent["sharded"] and spent["single"][-1] > spent["single"][0] > 0


def test_shard_map_step_with_explicit_pmean_matches(devices):
    assert_sharded_matches_single(devices.arrays, "shard_map")
    assert devices.facts["shard_map_hlo_all_reduce"]


def test_seed_sweep_is_sharded_over_devices(devices):
    assert_sharded_matches_single(devices.arrays, "seeds")
    assert devices.facts["seeds_key_spec"] == "P('data',)"
    assert devices.facts["seeds_out_specs"] == ["P('data',)"]
    assert devices.facts["seeds_per_device"] == [1]  # 8 seeds, one per device


def test_batch_size_must_divide_over_devices(devices):
    errors = devices.facts["errors"]
    for name in ("fit_batch_size", "make_epoch_batch_size"):
        assert errors[name] is not None and errors[name].startswith("batch_size: "), name
        assert "multiple of the number of devices" in errors[name] and "(8)" in errors[name]
    assert errors["shard_batch_rows"].startswith("batch: ")
    assert errors["shard_seeds_count"].startswith("seeds: ")
    assert errors["shard_map_rows"].startswith("x: ")
    assert errors["num_devices"].startswith("num_devices: ")


# ------------------------------------------------- two processes on localhost


def test_two_processes_train_like_one_device(runs, devices):
    for name in ("process0", "process1"):
        log = runs[name].log
        if not runs[name].ok and ("UNIMPLEMENTED" in log or "collectives" in log.lower()):
            pytest.skip(f"multi-process CPU collectives unavailable here: {log[-500:]}")
    procs = [runs["process0"].require(), runs["process1"].require()]
    for i, p in enumerate(procs):
        assert p.facts["process_count"] == 2
        assert p.facts["device_count"] == 4 and p.facts["local_device_count"] == 2
        assert p.facts["global_batch_shape"] == [64, 5]
        # Each process fed half of the batch (make_array_from_process_local_data).
        single = tree(devices.arrays, "step/single")
        assert_trees_close(tree(p.arrays, "step"), single, f"process {i} step")
        assert_trees_close(tree(p.arrays, "fit"), tree(devices.arrays, "fit/single"), f"fit {i}")
