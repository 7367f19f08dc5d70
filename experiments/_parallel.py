"""Running experiments in worker processes, and showing their progress.

`python -m experiments` runs `--jobs` experiments at once, each in its
own process (`multiprocessing`'s spawn: a forked process that holds XLA's
threads can deadlock) with one XLA thread (`WORKER_XLA_FLAGS`). This
process hands out one experiment per free worker and shows its start then; a
worker reports its experiment's units (`experiments._common.progress`)
through a queue; `Display` shows them.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import multiprocessing
import os
import queue
import shutil
import sys
import threading
import time
import traceback

from experiments import _common


def line(record: dict, seconds: float | None = None) -> str:
    """The verdict line of one experiment's record."""
    mark = "ok " if record["supported"] else "NO "
    took = f" ({seconds:.1f}s)" if seconds is not None else ""
    return f"[{mark}] {record['name']}{took}: {record['verdict']}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Display:
    """What the runner prints while experiments run.

    On a terminal (`live`): one line, rewritten twice a second, with every
    running experiment's units done, its time so far and the time it has
    left, estimated from its units (time so far over the fraction done) or,
    before its first unit, from its expected seconds. Finished experiments
    print their verdict line above it. Not on a terminal: a line when an
    experiment starts and its verdict line when it ends, nothing in between.
    """

    def __init__(self, total: int, stream=None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.total, self.finished = total, 0
        self.started = time.perf_counter()
        self.running = {}  # name -> {"since", "expected", "done", "of", "what"}
        self.lock = threading.Lock()
        self.width = 0
        self.stop = threading.Event()
        self.ticker = None
        if self.live:
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()

    def start(self, name: str, expected: float | None):
        with self.lock:
            self.running[name] = {
                "since": time.perf_counter(),
                "expected": expected,
                "done": 0,
                "of": 0,
                "what": "",
            }
            if not self.live:
                about = f" (about {_duration(expected)})" if expected else ""
                self._write(f"[...] {name}: started{about}\n")

    def progress(self, name: str, done: int, total: int, what: str = ""):
        with self.lock:
            if name in self.running:
                self.running[name].update(done=done, of=total, what=what)

    def finish(self, name: str, line: str):
        with self.lock:
            self.running.pop(name, None)
            self.finished += 1
            self._clear()
            self._write(line + "\n")
            self._draw()

    def close(self):
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            self._clear()

    def _left(self, run: dict, now: float) -> float | None:
        elapsed = now - run["since"]
        if run["of"] > 0 and run["done"] > 0:
            return elapsed * (run["of"] - run["done"]) / run["done"]
        if run["expected"]:
            return max(run["expected"] - elapsed, 0.0)
        return None

    def status(self) -> str:
        """The live line (without the carriage return)."""
        now = time.perf_counter()
        parts = []
        for name, run in self.running.items():
            part = name
            if run["of"]:
                part += f" {run['done']}/{run['of']}" + (f" {run['what']}" if run["what"] else "")
            part += f" {_duration(now - run['since'])}"
            left = self._left(run, now)
            if left is not None:
                part += f", ~{_duration(left)} left"
            parts.append(part)
        head = f"[{self.finished}/{self.total} done, {_duration(now - self.started)}]"
        return " ".join([head, " | ".join(parts)])

    def _tick(self):
        while not self.stop.wait(0.5):
            with self.lock:
                self._draw()

    def _draw(self):
        if not self.live or self.stop.is_set():
            return
        columns = shutil.get_terminal_size((100, 20)).columns - 1
        line = self.status()[:columns]
        self._write("\r" + line.ljust(self.width))
        self.width = len(line)

    def _clear(self):
        if self.live and self.width:
            self._write("\r" + " " * self.width + "\r")
            self.width = 0

    def _write(self, text: str):
        self.stream.write(text)
        self.stream.flush()


# One XLA thread per worker process (set before the worker imports jax).
WORKER_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
# Quick mode's compiles (`python -m experiments` sets them for a quick run):
# XLA's optimisation level 1 instead of its default, and XLA:CPU's elemental
# emitters instead of its MLIR fusion emitters. A quick run's programs are
# small and short, and XLA spent longer optimising them than running them.
# Measured on 2 cores, the twenty quick experiments, 2026-12-08: 216 s
# without, 159 s with (every one supported both ways; most verdicts the same
# to the printed digit, a few moved at rounding level). Full runs compile at
# XLA's defaults (their programs run for minutes). Like WORKER_XLA_FLAGS,
# the emitter flag changes XLA:CPU's compiles only: on a GPU, XLA compiles
# the GPU's programs without it.
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"


@contextlib.contextmanager
def xla_flags(flags: str):
    """`XLA_FLAGS` with each of `flags` (space-separated `--name=value`)
    added while the block runs, then restored. A flag the environment
    already names is left as it is (the user's choice wins). JAX reads
    `XLA_FLAGS` when a process starts its backend: in worker processes
    started in the block, or in this one if it has not computed anything yet."""
    before = os.environ.get("XLA_FLAGS")
    present = before or ""
    added = [f for f in flags.split() if f.split("=")[0].lstrip("-") not in present]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([*([before] if before else []), *added])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = before


_events = None  # in a worker: its queue to the parent (set by _worker_init)


def _worker_init(events):
    global _events
    _events = events


def run_one(name, mode, seeds, out) -> dict:
    """The runner's `run_one` (imported by name: in a worker, the runner is
    not the `__main__` module)."""
    return importlib.import_module("experiments.__main__").run_one(name, mode, seeds, out)


def _work(task):
    """In a worker process: `run(name, *args)`, reporting to the parent."""
    run, name, args = task
    _common._reporter = lambda done, total, what: _events.put(("progress", name, done, total, what))
    started = time.perf_counter()
    try:
        record = run(name, *args)
    except Exception as error:
        # The pool sends what a worker raises to this process pickled, and
        # an exception whose __init__ takes other arguments than its message
        # (JAX's tracer errors) fails to unpickle there: the pool's result
        # thread dies and the run waits for ever. Its traceback, as text,
        # always arrives.
        raise RuntimeError(
            f"{name} failed in a worker process:\n{traceback.format_exc()}"
        ) from error
    return name, record, time.perf_counter() - started


def run_here(names, mode, seeds, out, display, expected) -> dict:
    """Run `names` one after the other in this process; their records by name."""
    records = {}
    for name in names:
        display.start(name, expected[name])
        _common._reporter = lambda done, total, what, name=name: display.progress(
            name, done, total, what
        )
        started = time.perf_counter()
        try:
            records[name] = run_one(name, mode, seeds, out)
        finally:
            _common._reporter = None
        display.finish(name, line(records[name], time.perf_counter() - started))
    return records


def run_workers(names, args, display, expected, jobs, run=run_one) -> dict:
    """`run(name, *args)` for each of `names` in `jobs` worker
    processes, in this order as workers come free; the records by name.
    `run` must be importable by the workers (a module's top-level function)."""
    context = multiprocessing.get_context("spawn")  # never fork a process that holds XLA
    events = context.Queue()

    def listen():
        while True:
            event = events.get()
            if event is None:
                return
            display.progress(*event[1:])

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    records = {}
    try:
        # A worker runs one experiment after another (importing jax once);
        # chunksize 1: the next experiment goes to whichever worker is free.
        # At most `jobs` experiments are handed out at once, one per free
        # worker, so an experiment starts when it is handed out: this process
        # prints its start line then, in the order of `names`, and always
        # before its verdict (a start event from the worker could arrive late).
        with (
            xla_flags(WORKER_XLA_FLAGS),
            context.Pool(jobs, initializer=_worker_init, initargs=(events,)) as pool,
        ):
            results = queue.Queue()
            todo = iter(names)

            def hand_out(name):
                display.start(name, expected[name])
                pool.apply_async(
                    _work, ((run, name, args),), callback=results.put, error_callback=results.put
                )

            for name in itertools.islice(todo, jobs):
                hand_out(name)
            for _ in names:
                result = results.get()
                if isinstance(result, BaseException):
                    raise result
                name, record, seconds = result
                records[name] = record
                time.sleep(0.05)  # let the listener show the worker's last events first
                display.finish(name, line(record, seconds))
                following = next(todo, None)
                if following is not None:
                    hand_out(following)
    finally:
        events.put(None)
        listener.join(timeout=5)
    return records
