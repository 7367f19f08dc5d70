"""A pytest plugin that says how much of a test run is JAX tracing and XLA compilation.

    python -m pytest -q -n 2 --dist loadfile -p benchmarks.compile_report

At the end of the run it prints, summed over every process (the xdist
workers included), how many programs were traced, lowered and compiled and the
seconds each stage took, next to the seconds spent in tests (setup, call and
teardown). The counts come from `jax.monitoring` duration events, which JAX
records for every compilation, eager primitives included (an eager
`jnp` call on a new shape compiles a small program of its own).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile

import jax.monitoring

EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "XLA compile",
}
_seconds: collections.Counter = collections.Counter()
_counts: collections.Counter = collections.Counter()


def _listen(event: str, duration: float, **kwargs) -> None:
    if event in EVENTS:
        _seconds[EVENTS[event]] += duration
        _counts[EVENTS[event]] += 1


def pytest_configure(config) -> None:
    jax.monitoring.register_event_duration_secs_listener(_listen)
    if hasattr(config, "workerinput"):  # an xdist worker: the controller chose the folder
        config._compile_report_dir = config.workerinput["compile_report_dir"]
    else:
        config._compile_report_dir = tempfile.mkdtemp(prefix="compile-report-")


def pytest_configure_node(node) -> None:  # xdist controller, once per worker
    node.workerinput["compile_report_dir"] = node.config._compile_report_dir


_test_seconds: list[float] = []


def pytest_runtest_logreport(report) -> None:
    # The controller sees every worker's reports (and its own without xdist).
    _test_seconds.append(report.duration)


def pytest_sessionfinish(session) -> None:
    record = {"seconds": dict(_seconds), "counts": dict(_counts)}
    path = os.path.join(session.config._compile_report_dir, f"{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(record, f)


def pytest_terminal_summary(terminalreporter, config) -> None:
    if hasattr(config, "workerinput"):
        return
    folder = config._compile_report_dir
    seconds: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    processes = 0
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            record = json.load(f)
        seconds.update(record["seconds"])
        counts.update(record["counts"])
        processes += 1
    shutil.rmtree(folder)
    write = terminalreporter.write_line
    write(f"compile report ({processes} process(es); tests took {sum(_test_seconds):.1f} s "
          "in setup, call and teardown, summed over workers):")
    for stage in EVENTS.values():
        n = counts[stage]
        mean = seconds[stage] / n * 1e3 if n else 0.0
        write(f"  {stage:12s} {n:6d} programs {seconds[stage]:8.1f} s  (mean {mean:.0f} ms)")
