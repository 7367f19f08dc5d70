"""The test command never hangs: a test process that dies ends the run with a
failure naming the test (issue 30).

A pytest-xdist worker once died inside XLA (`Fatal Python error: Aborted`),
and under `--dist loadfile` xdist 3.8 then waited for ever: its
`LoadScopeScheduling.remove_node` puts the dead worker's whole workload back
on the queue, completed files included, the replacement worker is handed
empty work units and never asks for more (pytest-dev/pytest-xdist#1323,
#1378). `--max-worker-restart 0` starts no replacement: the run reports the
test the worker died in as failed (`worker 'gw0' crashed while running
'...'`) and ends. The option is in the README's test command (which
`.ci/run` runs) rather than in pyproject's `addopts`, because `addopts` is
also read under `-p no:xdist`, where xdist's options are unknown and pytest
refuses to start.

The test below runs the README's pytest options, read from README.md (and
pyproject's `addopts`) so that they cannot drift, on a throwaway directory
whose first file aborts its process, and checks that the run ends, fails
and names the test. The child collects no JAX program.
"""

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- test-command -->"
TIMEOUT_S = 240  # the child takes about 10 s on 2 busy cores; a hang takes for ever


def readme_pytest_args() -> list[str]:
    """The pytest options of the README's test command: the first line after
    the marker that starts with `python3 -m venv`, as `.ci/run`'s awk finds it."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(MARKER)
    command = next(line for line in lines[start + 1 :] if line.startswith("python3 -m venv"))
    step = next(part for part in command.split("&&") if " -m pytest" in part)
    words = shlex.split(step)
    return words[words.index("pytest") + 1 :]


def pyproject_addopts() -> str:
    source = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return source["tool"]["pytest"]["ini_options"].get("addopts", "")


def test_a_test_process_that_dies_fails_the_run_and_is_named(tmp_path):
    # The shape that hung: the crash in a file with a test after it, more files than workers.
    (tmp_path / "pytest.ini").write_text(f"[pytest]\naddopts = {pyproject_addopts()}\n")
    (tmp_path / "test_a_abort.py").write_text(
        textwrap.dedent(
            """\
            import os
            import resource


            def test_aborts():
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
                os.abort()


            def test_after():
                pass
            """
        )
    )
    for i in range(3):
        (tmp_path / f"test_b_ok{i}.py").write_text("def test_ok():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    args = [sys.executable, "-m", "pytest", *readme_pytest_args(), "-p", "no:cacheprovider"]
    # A new session, so that on a hang the workers are killed with the controller.
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(
            f"{shlex.join(args[1:])} still running after {TIMEOUT_S} s (hung):\n{out[-3000:]}"
        ) from None
    assert proc.returncode == 1, out[-3000:]  # pytest's "tests failed"
    assert "crashed while running 'test_a_abort.py::test_aborts'" in out, out[-3000:]
    assert "FAILED test_a_abort.py::test_aborts" in out, out[-3000:]
