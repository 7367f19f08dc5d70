"""Benchmark `train_epoch`: one epoch of mini-batch Adam, three ways.

The task: 60,000 x 784 float32 inputs (standard normal) with random labels in
0..9, the network 784-256-10 (relu, softmax cross-entropy), batch 128 (468
steps, the leftover examples dropped), Adam with lr 1e-3, a fresh shuffle each
epoch. Contenders, interleaved epoch by epoch (each carries its own params
and optimizer state from epoch to epoch):

* `purenet`: `jax.jit(purenet.train.make_epoch(model, loss, adam(1e-3),
  128, 60000))`: the whole epoch is one compiled `lax.scan`;
* `numpy`: `benchmarks.numpy_mlp`, a *Deep Learning from Scratch*
  style loop (layer objects, in-place Adam), float32;
* `torch`: PyTorch eager on the CPU (`nn.Sequential`, `F.cross_entropy`,
  `torch.optim.Adam`), if `import torch` works; skipped otherwise;
* `numpy, 1 thread` and `torch, 1 thread`: the same with OpenBLAS /
  OpenMP / torch limited to one thread (`OPENBLAS_NUM_THREADS=1`,
  `OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`): spin-waiting thread
  pools collapse when other jobs share the two cores, one thread does not.

Each contender runs in its **own worker process** (set up once: data,
model, compilation, one warm-up epoch), and the parent asks them for one
epoch at a time, in rotating order, while the others wait on a pipe. In one
process, the idle thread pools of XLA, OpenBLAS and PyTorch's OpenMP spin and
steal the two cores from whoever runs next (an in-process first version of
this benchmark made PyTorch an order of magnitude slower than it is alone).

Reported: seconds per epoch (median, min-max, timed inside the worker),
steps per second, and each contender's time over purenet's (per-round ratios).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks import numpy_mlp
from benchmarks.registry import Config, register
from benchmarks.timing import fmt_ratio, fmt_time, ratio_summary, summary

N, D, K, HIDDEN, BATCH, LR = 60_000, 784, 10, 256, 128, 1e-3
STEPS = N // BATCH
# Worker names; ", 1 thread" pins OpenBLAS / OpenMP / torch to one thread.
CONTENDERS = ("purenet", "numpy", "numpy, 1 thread", "torch", "torch, 1 thread")


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D), dtype=np.float32)
    t = rng.integers(0, K, N).astype(np.int32)
    return x, t


def purenet_contender(x, t):
    import jax

    from benchmarks.models import mlp
    from purenet import losses, optim, train

    model = mlp((D, HIDDEN, K))
    opt = optim.adam(LR)
    _, params, model_state = model.init(jax.random.key(0), (D,))
    epoch = jax.jit(train.make_epoch(model, losses.softmax_cross_entropy, opt, BATCH, N))
    xj, tj = jax.device_put(x), jax.device_put(t)
    state = {"params": params, "opt": opt.init(params), "model": model_state, "epoch": 0}

    def run():
        key = jax.random.fold_in(jax.random.key(1), state["epoch"])
        state["params"], state["opt"], state["model"], losses_ = epoch(
            state["params"], state["opt"], state["model"], key, xj, tj
        )
        state["epoch"] += 1
        return losses_

    return run


def numpy_contender(x, t):
    net = numpy_mlp.TwoLayerNet(D, HIDDEN, K)
    opt = numpy_mlp.Adam(LR)
    rng = np.random.default_rng(1)
    return lambda: numpy_mlp.train_epoch(net, opt, x, t, BATCH, rng)


def torch_contender(x, t, threads=None):
    """PyTorch eager loop, or `None` with the reason when torch is missing."""
    try:
        import torch
    except ImportError as e:
        return None, f"torch not importable ({e})"
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(D, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, K)
    )
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t).long()
    gen = torch.Generator().manual_seed(1)

    def run():
        order = torch.randperm(N, generator=gen)
        losses_ = torch.empty(STEPS)
        for i in range(STEPS):
            rows = order[i * BATCH : (i + 1) * BATCH]
            loss = torch.nn.functional.cross_entropy(net(xt[rows]), tt[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses_[i] = loss.detach()
        return losses_

    info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return run, info


def _worker(name: str) -> None:
    """Worker process main: set up `name`, then answer `run` with the
    seconds of one epoch (JSON on stdout) until stdin closes."""
    x, t = make_data()
    library = name.split(",")[0]
    if library == "torch":
        run, info = torch_contender(x, t, threads=1 if name.endswith("1 thread") else None)
    else:
        run, info = {"purenet": purenet_contender, "numpy": numpy_contender}[library](x, t), ""
    if run is None:
        print(json.dumps({"skip": info}), flush=True)
        return
    run()  # warm-up (compiles purenet's epoch)
    print(json.dumps({"ready": info}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        out = run()
        if hasattr(out, "block_until_ready"):
            out.block_until_ready()
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def _start(name: str) -> subprocess.Popen:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    if name.endswith("1 thread"):  # OpenBLAS and OpenMP read these at start-up
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = f"from benchmarks.train_epoch import _worker; _worker({name!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env,
    )


def _ask(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"train_epoch worker exited with code {proc.wait()}")
    return json.loads(line)


def measure(names, rounds: int, log) -> tuple[dict, dict]:
    """Seconds per epoch for each contender (interleaved across workers) and
    the workers' notes (versions, or why one was skipped)."""
    procs = {}
    for name in names:  # one at a time, so that set-up does not overlap
        proc = _start(name)
        msg = _ask(proc)
        if "skip" in msg:
            proc.wait()
            log(f"train_epoch: {name} skipped ({msg['skip']})")
        procs[name] = (proc, msg)
    info = {name: msg.get("ready", msg.get("skip")) for name, (_, msg) in procs.items()}
    live = [name for name, (_, msg) in procs.items() if "ready" in msg]
    samples = {name: [] for name in live}
    try:
        for r in range(rounds):
            for name in live[r % len(live) :] + live[: r % len(live)]:
                proc = procs[name][0]
                proc.stdin.write("run\n")
                proc.stdin.flush()
                samples[name].append(_ask(proc)["seconds"])
    finally:
        for name in live:
            proc = procs[name][0]
            proc.stdin.close()
            proc.wait()
    return samples, info


@register("train_epoch", "one epoch of Adam on 60k x 784: purenet scan vs NumPy vs PyTorch eager")
def run(config: Config) -> dict:
    rounds = config.repeats(2, 10, minimum=2)
    config.log(f"train_epoch: {', '.join(CONTENDERS)} in worker processes, {rounds} rounds")
    samples, info = measure(CONTENDERS, rounds, config.log)
    times = {name: summary(s) for name, s in samples.items()}
    rows = []
    for name, s in times.items():
        ratio = (
            "1"
            if name == "purenet"
            else fmt_ratio(ratio_summary(samples[name], samples["purenet"]))
        )
        rows.append(
            [
                name,
                fmt_time(s["median"]),
                f"{fmt_time(s['min'])} - {fmt_time(s['max'])}",
                f"{STEPS / s['median']:,.0f}",
                ratio,
            ]
        )
    notes = [
        f"{STEPS} steps per epoch; {rounds} interleaved epochs per contender, each in its own "
        "worker process, after one warm-up epoch (which includes purenet's compilation)."
    ]
    if "torch" in samples:
        notes.append(
            f"PyTorch: {info['torch']} ('torch, 1 thread': {info.get('torch, 1 thread')})."
        )
    else:
        notes.append(f"PyTorch skipped: {info.get('torch')}.")
    return {
        "description": "One epoch of mini-batch Adam (784-256-10, batch 128, 60,000 examples): "
        "purenet's jitted lax.scan epoch vs a NumPy from-scratch loop vs PyTorch eager.",
        "tables": [
            {
                "title": "train_epoch: seconds per epoch",
                "headers": ["contender", "median", "min - max", "steps/s", "/ purenet"],
                "rows": rows,
            }
        ],
        "notes": notes,
        "data": {"times": times, "steps": STEPS, "info": info},
    }
