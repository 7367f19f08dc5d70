"""A pytest plugin that says how much of a test run is JAX tracing and XLA compilation.

    python -m pytest -q -n 2 --dist loadfile -p benchmarks.compile_report

At the end of the run it prints, summed over every process (the xdist
workers included), how many programs were traced, lowered and compiled and the
seconds each stage took, next to the seconds spent in tests (setup, call and
teardown); then the same per test file, most compile seconds first. The counts
come from `jax.monitoring` duration events, which JAX records for every
compilation, eager primitives included (an eager `jnp` call on a new shape
compiles a small program of its own). A compile is charged to the file of the
test that was running (`collection` before the first test of a process).

Per-file numbers depend on what ran before in the same process (a program
another file compiled is not compiled again), so to measure one file run it
on its own, without xdist:

    python -m pytest -q -p no:xdist -p benchmarks.compile_report tests/test_conv.py

The suite's own budgets (`tests/conftest.py`) count XLA compiles the same way.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile

import jax.monitoring
import pytest

EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "XLA compile",
}
_seconds: collections.Counter = collections.Counter()
_counts: collections.Counter = collections.Counter()
# Keyed by "file<TAB>stage" (JSON keys are strings).
_file_seconds: collections.Counter = collections.Counter()
_file_counts: collections.Counter = collections.Counter()
_current = ["collection"]
# Per test (node id): XLA compiles and trace+lower+compile seconds.
_test_counts: collections.Counter = collections.Counter()
_test_compile_seconds: collections.Counter = collections.Counter()
_current_test = ["collection"]
TOP_TESTS = 15  # the tests with most compile seconds, listed at the end


def _listen(event: str, duration: float, **kwargs) -> None:
    if event in EVENTS:
        stage = EVENTS[event]
        _seconds[stage] += duration
        _counts[stage] += 1
        _file_seconds[f"{_current[0]}\t{stage}"] += duration
        _file_counts[f"{_current[0]}\t{stage}"] += 1
        _test_compile_seconds[_current_test[0]] += duration
        if stage == "XLA compile":
            _test_counts[_current_test[0]] += 1


def pytest_configure(config) -> None:
    jax.monitoring.register_event_duration_secs_listener(_listen)
    if hasattr(config, "workerinput"):  # an xdist worker: the controller chose the folder
        config._compile_report_dir = config.workerinput["compile_report_dir"]
    else:
        config._compile_report_dir = tempfile.mkdtemp(prefix="compile-report-")


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown under -p no:xdist
def pytest_configure_node(node) -> None:  # xdist controller, once per worker
    node.workerinput["compile_report_dir"] = node.config._compile_report_dir


def pytest_runtest_setup(item) -> None:
    _current[0] = item.location[0]
    _current_test[0] = item.nodeid


_test_seconds: list[float] = []
_file_test_seconds: collections.Counter = collections.Counter()


def pytest_runtest_logreport(report) -> None:
    # The controller sees every worker's reports (and its own without xdist).
    _test_seconds.append(report.duration)
    _file_test_seconds[report.location[0]] += report.duration


def pytest_sessionfinish(session) -> None:
    record = {
        "seconds": dict(_seconds),
        "counts": dict(_counts),
        "file_seconds": dict(_file_seconds),
        "file_counts": dict(_file_counts),
        "test_counts": dict(_test_counts),
        "test_seconds": dict(_test_compile_seconds),
    }
    path = os.path.join(session.config._compile_report_dir, f"{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(record, f)


def pytest_terminal_summary(terminalreporter, config) -> None:
    if hasattr(config, "workerinput"):
        return
    folder = config._compile_report_dir
    seconds: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    file_seconds: collections.Counter = collections.Counter()
    file_counts: collections.Counter = collections.Counter()
    test_counts: collections.Counter = collections.Counter()
    test_seconds: collections.Counter = collections.Counter()
    processes = 0
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            record = json.load(f)
        seconds.update(record["seconds"])
        counts.update(record["counts"])
        file_seconds.update(record["file_seconds"])
        file_counts.update(record["file_counts"])
        test_counts.update(record["test_counts"])
        test_seconds.update(record["test_seconds"])
        processes += 1
    shutil.rmtree(folder)
    write = terminalreporter.write_line
    write(
        f"compile report ({processes} process(es); tests took {sum(_test_seconds):.1f} s "
        "in setup, call and teardown, summed over workers):"
    )
    for stage in EVENTS.values():
        n = counts[stage]
        mean = seconds[stage] / n * 1e3 if n else 0.0
        write(f"  {stage:12s} {n:6d} programs {seconds[stage]:8.1f} s  (mean {mean:.0f} ms)")
    files = {key.split("\t")[0] for key in file_counts}
    stages = list(EVENTS.values())

    def total(name):
        return sum(file_seconds[f"{name}\t{stage}"] for stage in stages)

    write(
        f"  {'file':40s} {'tests s':>8s} {'compiles':>9s} {'traces':>7s} {'trace+lower+XLA s':>18s}"
    )
    for name in sorted(files, key=total, reverse=True):
        compiles, traces = file_counts[name + "\tXLA compile"], file_counts[name + "\ttrace"]
        write(
            f"  {name:40s} {_file_test_seconds.get(name, 0.0):8.1f} "
            f"{compiles:9d} {traces:7d} {total(name):18.1f}"
        )
    write(f"  the {TOP_TESTS} tests with most compile seconds (trace+lower+XLA s, compiles):")
    for name, value in test_seconds.most_common(TOP_TESTS):
        write(f"  {value:7.1f} {test_counts[name]:5d}  {name}")
