"""Test configuration.

64-bit types are enabled for the whole session so gradient checks can run in
float64; float32 behaviour is tested with explicitly float32 arrays (the
library never changes the dtype it is given).

**Compilation.** Most of the suite's time is XLA compiling small programs
(`python -m pytest -p benchmarks.compile_report` shows how many and how
long). Two things keep it down:

* XLA's CPU backend compiles at optimisation level 0 for the whole session
  (`jax_disable_most_optimizations`, as `experiments/_common.jit` does for
  one experiment's programs), and in the processes the tests start (through
  the environment variable `JAX_DISABLE_MOST_OPTIMIZATIONS`; set it to 0 to
  compare): the programs here are small, and optimising them costs more than
  running them. Results agree to rounding (the order of floating-point
  operations may differ); no test compares timings. What rounding can break:
  at level 0 XLA recomputed a network's logits with other rounding, so the
  `jnp.max` of the softmax shift no longer equalled any logit and `jax.grad`
  (which divides by the count of entries at the maximum) returned inf; the
  losses and softmaxes now stop the shift's gradient (it is exactly zero), as
  `jax.nn.log_softmax` does.
* XLA's CPU backend emits its loops with the older elemental emitters
  rather than the MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`
  in `XLA_FLAGS`, set here before JAX starts its backend, so the processes
  tests start inherit it; an `XLA_FLAGS` that already names the flag wins, so
  `XLA_FLAGS=--xla_cpu_use_fusion_emitters=true` compares). Measured on 2
  cores (`-p benchmarks.compile_report`, CI profile): the suite's XLA compile
  time fell from 618 s to 243 s summed over both workers (8,450 programs,
  73 -> 29 ms each) and its wall time from 514 s to 293 s, every test passing
  both ways. The flag changes how XLA writes machine code; results agree
  to rounding (the experiments measured it: sensitive runs move in their
  last printed digit), as at level 0. The experiments ask for it only where they ask for level 0
  (`experiments._common.jit`): their longer runs compile at XLA's default
  level, where these emitters are not the cost.
* Every test file has a budget of XLA compiles, `COMPILE_BUDGETS` below
  (the one place they live). At the end of a session the suite prints each
  file's compiles against its budget, and the session fails when a file
  compiled more than its budget: a new shape per hypothesis example, a
  closure re-jitted per call or an eager loop over a new shape shows up as a
  broken budget, not as a suite that is a minute slower. Files without a
  budget (a new file) are listed with a warning until they get one. A
  compile is charged to the file of the test running. JAX's caches are
  emptied between files: they keep every program compiled (1.3 to 1.4 MB
  each, measured on test_conv.py), and an xdist worker had grown to 4.4 GB
  when XLA aborted in it (issue 30). So a file compiles in a whole run what
  it compiles run alone, which is what a budget is measured on
  (`python -m pytest -p no:xdist tests/test_x.py`).
  `--no-compile-budgets` reports without failing.
* JAX's persistent compilation cache keeps every program the session
  compiles, however small, in a temporary folder that the first process of
  the session makes (`JAX_COMPILATION_CACHE_DIR`, inherited by the xdist
  workers and the processes tests start, and removed at exit; a folder
  already set in the environment is used and kept). A program compiled
  before is then read back instead of compiled again: a test's own `jit` of
  a function another test jitted too (JAX's in-memory caches key on the
  function object, the persistent one on the program), a file after
  `jax.clear_caches()`, the other worker. 28% of the session's compiles
  were, and pytest's time fell from 377 to 344 s (CI profile, 2 cores,
  2026-12-08). A program read back still counts as a compile in the budgets
  (JAX reports it as one).

Hypothesis profiles: every property test states its own budget
(`max_examples`) next to the property; the profile fixes how examples are
drawn. `ci` (selected when the environment has `CI=true`) draws the same
examples on every run (`derandomize`), keeps no example database and never
fails on timing (`deadline=None`: the first example of a new shape pays
for XLA compilation); `dev` (the default) draws new examples each run and
remembers failures in `.hypothesis/`. Choose one with
`pytest --hypothesis-profile=ci`.
"""

import atexit
import collections
import os
import shutil
import tempfile

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
# Read when JAX starts its CPU backend, at the first computation (not at import).
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    _flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_cpu_use_fusion_emitters=false".strip()
# Also in the environment, for the processes tests start (tests/test_parallel.py's workers).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
jax.config.update(
    "jax_disable_most_optimizations",
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() not in ("0", "false"),
)

# JAX's persistent compilation cache, one folder per session (see the docstring).
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="purenet-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update(
    "jax_persistent_cache_min_entry_size_bytes",
    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]),
)

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture
def key():
    return jax.random.key(0)


def normal(seed, shape, scale=1.0, dtype=jnp.float64):
    """Normal test data from NumPy, ``scale`` times standard normal. Not
    ``jax.random``: an eager draw compiles a program for every new shape, which
    a hypothesis test would pay on every example."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), dtype)


# ------------------------------------------------------------ compile budgets

# XLA compiles per test file, each file run alone (`-p no:xdist`): a quarter
# over the count measured (in the comment) plus 10, for hypothesis's random
# draws (the `dev` profile draws new examples every run). Lower a budget when
# a file gets cheaper; raise one only with the reason in the commit. A
# subprocess's compiles (tests/_parallel_worker.py) are not counted.
COMPILE_BUDGETS = {
    "test_activations.py": 160,  # 117
    "test_attention.py": 580,  # 450
    "test_benchmarks_smoke.py": 114,  # 83
    "test_char_gpt.py": 90,  # 64
    "test_checkpoint.py": 100,  # 70
    "test_checkpoint_model.py": 32,  # 17
    "test_checks.py": 30,  # 16
    "test_ci_hang.py": 10,  # 0
    "test_clipping.py": 140,  # 104
    "test_context.py": 156,  # 117
    "test_conv.py": 680,  # 530
    "test_cost.py": 680,  # 530
    "test_data.py": 150,  # 110
    "test_datasets.py": 270,  # 202
    "test_errors.py": 190,  # 144 alone (169 in a full run)
    "test_experiments_a.py": 240,  # 177
    "test_experiments_b.py": 240,  # 183
    "test_experiments_cnn.py": 101,  # 73
    "test_experiments_readme.py": 10,  # 0
    "test_experiments_feedback.py": 54,  # 35
    "test_experiments_runner.py": 10,  # 0
    "test_family_trees.py": 190,  # 137
    "test_feedback.py": 580,  # 455
    "test_gradcheck.py": 380,  # 294 (after the one-engine rewrite)
    "test_interop.py": 800,  # 630
    "test_layer_registry.py": 1510,  # 1199 (every case now checks per-example rules)
    "test_layers.py": 480,  # 375
    "test_long_range_memory.py": 60,  # 39
    "test_losses.py": 350,  # 271
    "test_metrics.py": 120,  # 82
    "test_models.py": 690,  # 544
    "test_optim.py": 810,  # 636
    "test_parallel.py": 60,  # 39
    "test_params.py": 450,  # 257 (CI profile); 247 to 356 in dev-profile draws
    "test_per_example.py": 915,  # 722
    "test_pooling.py": 260,  # 199
    "test_privacy.py": 450,  # 346
    "test_properties.py": 670,  # 373 to 525 (dev and ci profiles)
    "test_recurrent.py": 820,  # 649 (padding masks added)
    "test_schedules.py": 160,  # 119
    "test_sequence_loss.py": 200,  # 147
    "test_testing.py": 1060,  # 835
    "test_train.py": 630,  # 492
    "test_train_mask.py": 72,  # 49
    "test_version.py": 10,  # 0
}

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_STAGE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    _COMPILE_EVENT,
)
_compiles: collections.Counter = collections.Counter()  # file -> XLA compiles
_compile_seconds: collections.Counter = collections.Counter()  # file -> trace+lower+compile s
_running = ["(collection)"]  # the file of the test running; before any test, collection


def _listen(event: str, duration: float, **kwargs) -> None:
    if event in _STAGE_EVENTS:
        _compile_seconds[_running[0]] += duration
        if event == _COMPILE_EVENT:
            _compiles[_running[0]] += 1


jax.monitoring.register_event_duration_secs_listener(_listen)


def pytest_addoption(parser):
    parser.addoption(
        "--no-compile-budgets",
        action="store_true",
        help="report each test file's XLA compiles against its budget without failing",
    )


def pytest_runtest_setup(item):
    name = os.path.basename(item.location[0])
    if _running[0] not in (name, "(collection)"):
        # A new file: free the programs the last one compiled (see the docstring).
        jax.clear_caches()
    _running[0] = name


def pytest_sessionfinish(session):
    config = session.config
    if hasattr(config, "workerinput"):  # an xdist worker: hand the counts to the controller
        config.workeroutput["compiles"] = dict(_compiles)
        config.workeroutput["compile_seconds"] = dict(_compile_seconds)
        return
    over = [name for name, n in _compiles.items() if n > COMPILE_BUDGETS.get(name, n)]
    config._compile_budget_over = over
    if over and not config.getoption("no_compile_budgets") and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)  # an xdist hook; unknown under -p no:xdist
def pytest_testnodedown(node, error):
    output = getattr(node, "workeroutput", {})
    _compiles.update(output.get("compiles", {}))
    _compile_seconds.update(output.get("compile_seconds", {}))


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "workerinput") or not _compiles:
        return
    write = terminalreporter.write_line
    terminalreporter.section("XLA compiles per test file (budgets: tests/conftest.py)")
    write(f"{'file':36s} {'compiles':>8s} {'budget':>7s} {'compile s':>10s}")
    for name in sorted(_compiles, key=_compile_seconds.__getitem__, reverse=True):
        n, budget = _compiles[name], COMPILE_BUDGETS.get(name)
        if name == "(collection)":
            verdict, shown = "", "-"
        elif budget is None:
            verdict, shown = "  no budget: add one to COMPILE_BUDGETS", "-"
        else:
            verdict, shown = ("  OVER BUDGET" if n > budget else ""), str(budget)
        write(f"{name:36s} {n:8d} {shown:>7s} {_compile_seconds[name]:10.1f}{verdict}")
    write(
        f"{'total':36s} {sum(_compiles.values()):8d} {'':>7s} "
        f"{sum(_compile_seconds.values()):10.1f}"
    )
    over = getattr(config, "_compile_budget_over", [])
    if over:
        tail = (
            " (not failing: --no-compile-budgets)"
            if config.getoption("no_compile_budgets")
            else "; the session fails"
        )
        write(f"compile budget exceeded by {', '.join(sorted(over))}{tail}", red=True)
