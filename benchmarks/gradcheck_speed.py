"""Benchmark `gradcheck`: the cost of checking a 200k-parameter gradient.

The network is 784-256-10 (relu, softmax cross-entropy, integer labels),
float64, batch 128: P = 203,530 parameters. Measured:

(a) `forward`: one jitted evaluation of `purenet.objective` (the cost a
    finite difference pays twice per coordinate), median of many calls;
(b) `directional`: `purenet.gradcheck.directional_check` with 8
    directions, wall time of whole calls (it jits a fresh function, so every
    call traces and compiles: the time a user waits); the first call of the
    process is reported apart (it also compiles helpers); the compile share
    comes from `jax.monitoring` events;
(c) `numerical`: `purenet.gradcheck.numerical_gradient` over every
    coordinate, for chunk sizes (`lax.map(batch_size=...)`) 1, 8, 16 (the
    library default), 32 and 128, interleaved.

Quick mode does not run (c) over all P coordinates: it times
`numerical_gradient` of `f(sub) = J(unravel(concatenate([sub, rest])))`,
a function of the first `k` coordinates only, subtracts the compile time,
and **extrapolates** `T(P) = compile + P * (run time per coordinate)`. The
wrapper does nearly the per-coordinate work of the real thing (a perturbed
full-length `theta`, `unravel`, two forward passes; its perturbation is
built on `k` entries then concatenated, the real one on all P). `--full`
also runs the complete `numerical_gradient` with the default chunk size and
with the fastest one and reports the extrapolation's error. The reference is
the bound `2 P x forward`. Complete runs on two small networks (P = 387 and
4,810) show the chunk sizes where compilation, not P, dominates.
"""

from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.models import problem
from benchmarks.registry import Config, register
from benchmarks.timing import compare, compile_seconds, fmt_time, summary, time_once
from purenet import backprop, gradcheck, objective, ravel

SIZES, BATCH = (784, 256, 10), 128
CHUNK_SIZES = (1, 8, 16, 32, 128)
SMALL_NETS = (((20, 16, 3), 32), ((64, 64, 10), 64))
SMALL_CHUNKS = (1, 16, 128)
PREFIX = 512  # coordinates timed per call in quick mode (a multiple of every chunk size)
DEFAULT_CHUNK = 16  # purenet.gradcheck.numerical_gradient's default
NUM_DIRECTIONS = 8


def _float64_problem():
    return problem(SIZES, BATCH, dtype=jnp.float64)


def forward_time(p, rounds: int) -> dict:
    J = jax.jit(objective(p.model, p.loss))
    result = compare({"forward": lambda: J(p.params, p.x, p.t)}, baseline="forward", rounds=rounds)
    return result["times"]["forward"]


def directional_times(p, calls: int) -> dict:
    """Wall time of whole `directional_check` calls and their compile share.

    The first call of a process also compiles helpers (random directions,
    `ravel`); later calls compile only their fresh `jit`. Both are kept.
    """
    J = objective(p.model, p.loss)
    grads = jax.jit(backprop(p.model, p.loss))(p.params, p.x, p.t)[1]
    totals, compiles, errors = [], [], []
    for i in range(calls):
        with compile_seconds() as log:
            t0 = time.perf_counter()
            analytic, numeric = jax.block_until_ready(
                gradcheck.directional_check(
                    J,
                    grads,
                    p.params,
                    p.x,
                    p.t,
                    key=jax.random.key(i),
                    num_directions=NUM_DIRECTIONS,
                )
            )
            totals.append(time.perf_counter() - t0)
        compiles.append(sum(log))
        errors.append(gradcheck.rel_error(analytic, numeric))
    later = slice(1, None)
    return {
        "first_call_s": totals[0],
        "first_call_compile_s": compiles[0],
        "later": summary(totals[later]),
        "later_compile": summary(compiles[later]),
        "later_run": summary(np.subtract(totals[later], compiles[later])),
        "calls": calls,
        "worst_rel_error": float(max(errors)),
    }


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _prefix_call(p, k: int, chunk_size: int) -> tuple[float, float, float]:
    """(wall seconds, compile seconds, process CPU seconds) of
    `numerical_gradient` over the first `k` coordinates only."""
    J = objective(p.model, p.loss)
    theta, unravel = ravel(p.params)

    def f_sub(sub, rest, x, t):
        return J(unravel(jnp.concatenate([sub, rest])), x, t)

    sub, rest = theta[:k], theta[k:]
    with compile_seconds() as log:
        c0, t0 = _cpu_seconds(), time.perf_counter()
        jax.block_until_ready(
            gradcheck.numerical_gradient(f_sub, sub, rest, p.x, p.t, chunk_size=chunk_size)
        )
        total, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return total, sum(log), cpu


def numerical_by_chunk(p, k: int, chunk_sizes, repeats: int) -> dict:
    """Per-coordinate run time of `numerical_gradient` for each chunk size,
    from calls over `k` coordinates interleaved across chunk sizes (the order
    rotates each repeat); compile time is subtracted, then added back once in
    the extrapolation `T(P) = compile + P * per_coordinate`."""
    num_params = ravel(p.params)[0].size
    runs = {c: [] for c in chunk_sizes}
    cpus = {c: [] for c in chunk_sizes}
    compiles = {c: [] for c in chunk_sizes}
    order = list(chunk_sizes)
    for r in range(repeats):
        for c in order[r % len(order) :] + order[: r % len(order)]:
            total, comp, cpu = _prefix_call(p, k, c)
            runs[c].append((total - comp) / k)
            cpus[c].append((cpu - comp) / k)  # compiling runs on one thread
            compiles[c].append(comp)
    out = {}
    for c in chunk_sizes:
        per = summary(runs[c])
        comp = float(np.median(compiles[c]))
        out[c] = {
            "k": k,
            "per_coordinate": per,
            "cpu_per_coordinate": summary(cpus[c]),
            "compile_s": comp,
            "extrapolated_s": comp + per["median"] * num_params,
        }
    return out


def small_nets(repeats: int) -> dict:
    """Complete `numerical_gradient` runs on small networks (where compile
    time dominates), by chunk size, interleaved: total and run (total minus
    compile) seconds, medians."""
    out = {}
    for sizes, batch in SMALL_NETS:
        p = problem(sizes, batch, dtype=jnp.float64)
        J = objective(p.model, p.loss)
        calls = {c: [] for c in SMALL_CHUNKS}
        for r in range(repeats):
            for c in SMALL_CHUNKS[r % 3 :] + SMALL_CHUNKS[: r % 3]:
                with compile_seconds() as log:
                    total = time_once(
                        lambda c=c, J=J, p=p: gradcheck.numerical_gradient(
                            J, p.params, p.x, p.t, chunk_size=c
                        )
                    )
                calls[c].append((total, total - sum(log)))
        out[p.name] = {
            "num_params": int(ravel(p.params)[0].size),
            "by_chunk": {
                c: {
                    "total_s": float(np.median([a for a, _ in v])),
                    "run_s": float(np.median([b for _, b in v])),
                }
                for c, v in calls.items()
            },
        }
    return out


def small_nets_table(small: dict) -> dict:
    """The README table of `small_nets` results."""
    rows = [
        [name, f"{r['num_params']:,}", str(c), fmt_time(v["total_s"]), fmt_time(v["run_s"])]
        for name, r in small.items()
        for c, v in r["by_chunk"].items()
    ]
    return {
        "title": "numerical_gradient on small networks (complete runs, measured)",
        "headers": [
            "network @ batch",
            "P",
            "chunk_size",
            "total (median)",
            "run = total - compile",
        ],
        "rows": rows,
    }


def numerical_full(p, chunk_size: int) -> float:
    """Seconds for one complete `numerical_gradient` (compile included)."""
    J = objective(p.model, p.loss)
    return time_once(
        lambda: gradcheck.numerical_gradient(J, p.params, p.x, p.t, chunk_size=chunk_size)
    )


@register("gradcheck", "float64 gradient checks of a 200k-parameter net: directional, numerical")
def run(config: Config) -> dict:
    with jax.enable_x64(True):
        p = _float64_problem()
        P = int(ravel(p.params)[0].size)
        config.log(f"gradcheck: forward ({P} params, float64)")
        fwd = forward_time(p, config.repeats(300, 1500))
        bound = 2 * P * fwd["median"]
        config.log("gradcheck: directional_check")
        direc = directional_times(p, config.repeats(4, 16))
        k = PREFIX if config.scale >= 1 else max(CHUNK_SIZES)
        config.log(f"gradcheck: numerical_gradient on {k} coordinates, chunk sizes {CHUNK_SIZES}")
        chunks = numerical_by_chunk(p, k, CHUNK_SIZES, config.repeats(2, 5, minimum=1))
        best = min(chunks, key=lambda c: chunks[c]["per_coordinate"]["median"])
        config.log("gradcheck: numerical_gradient on small networks")
        small = small_nets(config.repeats(2, 7, minimum=1))
        full = {}
        if config.full:
            for c in sorted({DEFAULT_CHUNK, best}):
                config.log(f"gradcheck: complete numerical_gradient, chunk_size={c}")
                full[c] = numerical_full(p, c)

    later = direc["later"]
    rows_a = [
        [
            "(a) one forward pass (jitted objective)",
            fmt_time(fwd["median"]),
            f"[{fmt_time(fwd['q1'])}, {fmt_time(fwd['q3'])}]",
            f"{fwd['n']} samples",
        ],
        [
            f"(b) directional_check, {NUM_DIRECTIONS} directions, first call in the process",
            fmt_time(direc["first_call_s"]),
            "one call",
            f"compile {fmt_time(direc['first_call_compile_s'])}",
        ],
        [
            f"(b) directional_check, {NUM_DIRECTIONS} directions, later calls",
            fmt_time(later["median"]),
            f"[{fmt_time(later['q1'])}, {fmt_time(later['q3'])}]",
            f"compile {fmt_time(direc['later_compile']['median'])}, "
            f"run {fmt_time(direc['later_run']['median'])}; target < 1 s: "
            f"{'met' if later['median'] < 1.0 else 'NOT met'}",
        ],
        ["bound 2P x forward", fmt_time(bound), "", f"P = {P:,}"],
    ]
    rows_c = []
    for c, r in chunks.items():
        per = r["per_coordinate"]
        measured = full.get(c)
        label = str(c) + (" (default)" if c == DEFAULT_CHUNK else "")
        label += " (fastest)" if c == best else ""
        rows_c.append(
            [
                label,
                f"{fmt_time(per['median'])} [{fmt_time(per['min'])}, {fmt_time(per['max'])}]",
                f"{per['median'] / (2 * fwd['median']):.2f}",
                fmt_time(r["cpu_per_coordinate"]["median"]),
                fmt_time(r["extrapolated_s"]),
                fmt_time(measured) if measured else "not run",
                f"{(measured or r['extrapolated_s']) / bound:.2f}",
            ]
        )
    notes = [
        f"numerical_gradient was timed on the first k = {k} coordinates (a wrapper that "
        "differentiates a function of theta[:k]); 'all P, extrapolated' = compile + P x "
        "(run time per coordinate): an **extrapolation**, not a measurement. 'x 2 forwards' "
        "is the per-coordinate time over two forward passes (1.00 = the bound). Chunk sizes "
        "were interleaved, repeats rotate the order. 'CPU time' is the process's user + "
        "system time (both cores) minus the compile time, per coordinate: the work done, "
        "which the load of other jobs changes much less than wall time."
    ]
    for c, measured in full.items():
        err = chunks[c]["extrapolated_s"] / measured - 1
        notes.append(
            f"chunk_size={c}: the complete run took {fmt_time(measured)}; the extrapolation "
            f"was off by {err:+.0%}."
        )
    return {
        "description": "float64 gradient checks of 784-256-10 at batch 128 (P = 203,530): "
        "one forward pass, directional_check with 8 directions, numerical_gradient by "
        "chunk size, against the bound 2P x forward.",
        "tables": [
            {
                "title": "Gradcheck (float64, 784-256-10 @ 128)",
                "headers": ["measurement", "median", "spread", "note"],
                "rows": rows_a,
            },
            {
                "title": "numerical_gradient over all P coordinates, by chunk_size",
                "headers": [
                    "chunk_size",
                    "per coordinate, median [min, max]",
                    "x 2 forwards",
                    "CPU time per coordinate",
                    "all P, extrapolated",
                    "all P, measured (--full)",
                    "/ bound 2P x fwd",
                ],
                "rows": rows_c,
            },
            small_nets_table(small),
        ],
        "notes": notes,
        "data": {
            "num_params": P,
            "forward": fwd,
            "bound_s": bound,
            "directional": direc,
            "numerical_by_chunk": {str(c): r for c, r in chunks.items()},
            "fastest_chunk": best,
            "numerical_complete_s": {str(c): t for c, t in full.items()},
            "small_nets": small,
        },
    }
