"""Interleaved wall-clock timing for a noisy machine.

Every comparison in this package times its contenders *interleaved* in one
process: round `r` times each contender once (one *sample*), and the order
of the contenders rotates from round to round, so a burst of load from another
job hits all of them alike instead of one. A sample is the wall time of
`number` back-to-back calls, the last one followed by `block_until_ready`
(JAX dispatches asynchronously), divided by `number`.

What is reported, per contender: the median sample and its spread (quartiles
and min/max). Ratios are computed *pairwise within a round* (`a[r] / b[r]`)
and summarised by their median and quartiles: a pairwise ratio cancels slow
drifts of the machine's speed that independent medians would not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import jax
import numpy as np


def block(out):
    """Wait for every array in `out` (a pytree) to be computed."""
    return jax.block_until_ready(out)


def summary(samples) -> dict:
    """Median, quartiles, min, max and count of a list of numbers."""
    a = np.asarray(samples, np.float64)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def interleave(
    contenders: dict[str, Callable[[], object]],
    *,
    rounds: int,
    number: int = 1,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Time zero-argument callables interleaved; seconds per call, per sample.

    Args:
      contenders: name -> thunk. Each thunk runs the work once and returns
        its (possibly asynchronous) result, which is blocked on.
      rounds: samples per contender.
      number: calls per sample (the sample is their mean).
      warmup: untimed rounds first (compilation, caches).

    Returns:
      name -> list of `rounds` per-call times in seconds.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            block(contenders[name]())
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:  # rotate who goes first
            fn = contenders[name]
            t0 = time.perf_counter()
            for _ in range(number - 1):
                fn()
            block(fn())
            times[name].append((time.perf_counter() - t0) / number)
    return times


def ratio_summary(a: list[float], b: list[float]) -> dict:
    """Summary of the round-by-round ratios `a[r] / b[r]`."""
    return summary(np.asarray(a) / np.asarray(b))


def calls_per_sample(fn: Callable[[], object], target_s: float) -> int:
    """How many calls of `fn` make a sample of about `target_s` seconds
    (measured on a few calls after one warm-up call), at least 1."""
    block(fn())
    t0 = time.perf_counter()
    n = 0
    while True:
        block(fn())
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed > 0.05 or n >= 1000:
            break
    return max(1, int(round(target_s / (elapsed / n))))


def time_once(fn: Callable[[], object]) -> float:
    """Wall time of one blocked call (for runs too long to repeat)."""
    t0 = time.perf_counter()
    block(fn())
    return time.perf_counter() - t0


def fmt_time(seconds: float) -> str:
    """A duration with a readable unit (`12.3 µs`, `4.56 ms`, `7.89 s`)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def compare(
    contenders: dict[str, Callable[[], object]],
    *,
    baseline: str,
    rounds: int,
    sample_s: float = 0.002,
    warmup: int = 2,
) -> dict:
    """Interleaved timing of `contenders` and their ratios to `baseline`.

    The number of calls per sample is chosen so that one sample of the
    baseline lasts about `sample_s` (short samples interleave finely, which
    is what makes ratios robust to load changes); it is the same for all.

    Returns:
      `{"calls_per_sample", "rounds", "times": {name: summary},
      "ratios": {name: summary of name/baseline per round}, "samples": {name: [...]}}`
      with times in seconds per call.
    """
    number = calls_per_sample(contenders[baseline], sample_s)
    samples = interleave(contenders, rounds=rounds, number=number, warmup=warmup)
    return {
        "calls_per_sample": number,
        "rounds": rounds,
        "times": {name: summary(s) for name, s in samples.items()},
        "ratios": {
            name: ratio_summary(s, samples[baseline])
            for name, s in samples.items()
            if name != baseline
        },
        "samples": samples,
    }


def fmt_spread(s: dict) -> str:
    """`median [q1, q3]` of a time summary."""
    return f"{fmt_time(s['median'])} [{fmt_time(s['q1'])}, {fmt_time(s['q3'])}]"


def fmt_ratio(s: dict) -> str:
    """`median [q1, q3]` of a ratio summary."""
    return f"{s['median']:.3f} [{s['q1']:.3f}, {s['q3']:.3f}]"


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_log: list[float] | None = None


def _on_event(name: str, seconds: float, **kwargs) -> None:
    if _compile_log is not None and name in _COMPILE_EVENTS:
        _compile_log.append(seconds)


_listening = False


@contextlib.contextmanager
def compile_seconds():
    """Context manager yielding a list that collects, while it is open, the
    durations JAX reports (`jax.monitoring`) for tracing, lowering and XLA
    compilation; `sum(log)` is the compile time spent inside the block."""
    global _compile_log, _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _listening = True
    outer, _compile_log = _compile_log, []
    try:
        yield _compile_log
    finally:
        log = _compile_log
        _compile_log = outer
        if outer is not None:
            outer.extend(log)
