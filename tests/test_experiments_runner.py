"""The experiment runner: CLI, modes, outputs, summary, --replot, and never
overwriting a user's file."""

import json
import os
import sys
import threading
import time
import types

import pytest

from experiments import __main__ as runner
from experiments import _common, _parallel
from experiments._common import Mode, Verdict


@pytest.fixture
def fake_experiment(monkeypatch):
    """A registered experiment whose numbers come from its mode and seeds."""
    module = types.ModuleType("experiments.fake")
    module.NAME = "fake"
    module.CLAIM = "Fake claims hold."
    module.measured = []

    def measure(mode, seeds):
        module.measured.append(mode)
        seeds = _common.num_seeds(mode, seeds, smoke=2, quick=3, full=10)
        return {
            "settings": {"seeds": seeds, "epochs": _common.pick(mode, smoke=1, quick=5, full=50)},
            "numbers": {"values": list(range(seeds)), "nan": float("nan"), "pair": (1, 2)},
        }

    def judge(data):
        seeds = data["settings"]["seeds"]
        # judge sees the numbers as stored: tuples are lists, NaN is a string
        assert data["numbers"]["pair"] == [1, 2] and data["numbers"]["nan"] == "nan"
        return Verdict(f"measured {seeds} seeds", seeds > 1, {"seeds": seeds})

    def draw(data):
        figure, ax = _common.pyplot().subplots()
        ax.plot(data["numbers"]["values"])
        return figure

    module.measure, module.judge, module.draw = measure, judge, draw
    monkeypatch.setitem(sys.modules, "experiments.fake", module)
    monkeypatch.setattr(runner, "EXPERIMENTS", ["fake"])
    monkeypatch.setattr(runner, "available", lambda: ["fake"])
    return module


def test_run_writes_png_json_and_summary(fake_experiment, tmp_path, capsys):
    assert runner.main(["fake", "--seeds", "4", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "fake.json").read_text())
    assert record["generator"] == _common.GENERATOR
    assert record["verdict"] == "measured 4 seeds" and record["supported"] is True
    assert record["numbers"]["values"] == [0, 1, 2, 3]
    assert record["numbers"]["nan"] == "nan"  # JSON has no NaN; written as a string
    assert record["mode"] == "quick" and record["versions"]["jax"]
    assert record["settings"] == {"seeds": 4, "epochs": 5}
    assert (tmp_path / "fake.png").read_bytes()[:4] == b"\x89PNG"
    summary = (tmp_path / "README.md").read_text()
    assert "| [fake](fake.png) | Fake claims hold. | yes | measured 4 seeds | quick |" in summary
    assert "[ok ] fake" in capsys.readouterr().out
    assert fake_experiment.measured == [Mode.QUICK]


@pytest.mark.parametrize(
    "flag, mode, seeds, epochs",
    [("--full", "full", 10, 50), ("--smoke", "smoke", 2, 1), ("--quick", "quick", 3, 5)],
)
def test_modes_and_their_default_seeds(fake_experiment, tmp_path, flag, mode, seeds, epochs):
    runner.main([flag, "--out", str(tmp_path)])
    record = json.loads((tmp_path / "fake.json").read_text())
    assert record["mode"] == mode
    assert record["settings"] == {"seeds": seeds, "epochs": epochs}
    assert fake_experiment.measured == [Mode(mode)]


def test_modes_are_exclusive(fake_experiment, capsys):
    with pytest.raises(SystemExit):
        runner.main(["--smoke", "--full"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_replot_redraws_from_json_without_measuring(fake_experiment, tmp_path, capsys):
    runner.main(["--smoke", "--out", str(tmp_path)])
    before = json.loads((tmp_path / "fake.json").read_text())
    (tmp_path / "fake.png").unlink()
    (tmp_path / "README.md").unlink()

    def no_measuring(mode, seeds):
        raise AssertionError("--replot must not measure")

    fake_experiment.measure = no_measuring
    fake_experiment.judge = lambda data: Verdict("judged again", False, {"again": True})
    assert runner.main(["--replot", str(tmp_path)]) == 0
    after = json.loads((tmp_path / "fake.json").read_text())
    assert after["verdict"] == "judged again" and after["supported"] is False
    assert after["summary"] == {"again": True}
    for kept in ("numbers", "settings", "mode", "seconds", "versions", "claim"):
        assert after[kept] == before[kept], kept
    assert (tmp_path / "fake.png").read_bytes()[:4] == b"\x89PNG"
    assert "| judged again | smoke |" in (tmp_path / "README.md").read_text()
    out = capsys.readouterr().out
    assert "replotting" in out and "[NO ] fake: judged again" in out


def test_replot_of_a_folder_without_results(fake_experiment, tmp_path, capsys):
    (tmp_path / "fake.json").write_text('{"my": "notes"}')  # not ours: left alone
    assert runner.main(["--replot", str(tmp_path)]) == 1
    assert "no experiment results" in capsys.readouterr().out
    assert (tmp_path / "fake.json").read_text() == '{"my": "notes"}'


def test_replot_refuses_seeds_and_missing_folders(fake_experiment, tmp_path, capsys):
    with pytest.raises(SystemExit):
        runner.main(["--replot", str(tmp_path), "--seeds", "3"])
    assert "--seeds: not with --replot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["--replot", str(tmp_path / "nowhere")])
    assert "--replot: expected a folder of results" in capsys.readouterr().err


def test_rerun_replaces_its_own_output(fake_experiment, tmp_path):
    runner.main(["--seeds", "2", "--out", str(tmp_path)])
    runner.main(["--seeds", "5", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "fake.json").read_text())["settings"]["seeds"] == 5


def test_never_overwrites_a_file_it_did_not_write(fake_experiment, tmp_path):
    mine = tmp_path / "fake.json"
    mine.write_text('{"my": "notes"}')
    with pytest.raises(FileExistsError, match="was not written by python -m experiments"):
        runner.main(["--out", str(tmp_path)])
    assert mine.read_text() == '{"my": "notes"}'
    assert not (tmp_path / "fake.png").exists()  # refused before any work


def test_unknown_names_and_bad_seeds_are_refused(fake_experiment, capsys):
    with pytest.raises(SystemExit):
        runner.main(["nope"])
    assert "unknown experiment(s) nope; expected some of: fake" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["--seeds", "0"])
    assert "--seeds: expected a positive integer" in capsys.readouterr().err


def test_measure_must_return_settings_and_numbers(fake_experiment, tmp_path):
    fake_experiment.measure = lambda mode, seeds: {"numbers": {}}
    with pytest.raises(TypeError, match="experiments.fake.measure: expected a dict with dicts"):
        runner.main(["--out", str(tmp_path)])


def test_pick_names_every_mode():
    assert [_common.pick(m, smoke=1, quick=2, full=3) for m in Mode] == [1, 2, 3]
    with pytest.raises(TypeError, match="mode: expected an experiments._common.Mode"):
        _common.pick("smoke", smoke=1, quick=2, full=3)
    assert _common.num_seeds(Mode.FULL, None, quick=4, full=9) == 9
    assert _common.num_seeds(Mode.SMOKE, None, quick=4, full=9) == 2
    assert _common.num_seeds(Mode.FULL, 5, quick=4, full=9) == 5
    with pytest.raises(ValueError, match="seeds: expected a positive integer or None"):
        _common.num_seeds(Mode.QUICK, 0, quick=4, full=9)


def test_all_registered_experiments_exist_and_follow_the_skeleton():
    """Every claim of the notes has its module (the list is the contract)."""
    assert runner.available() == runner.EXPERIMENTS
    for name in runner.EXPERIMENTS:
        module = runner.load(name)
        assert module.NAME == name and module.CLAIM


class _Stream:
    """A text stream that records what is written, terminal or not."""

    def __init__(self, tty):
        self.tty, self.parts = tty, []

    def isatty(self):
        return self.tty

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def text(self):
        return "".join(self.parts)


def test_progress_outside_the_runner_goes_nowhere():
    assert _common._reporter is None
    _common.progress(1, 2, "anything")  # no runner: nothing happens, nothing fails
    seen = []
    _common._reporter = lambda *event: seen.append(event)
    try:
        assert list(_common.tracked(["a", "b"], start=1, total=4)) == ["a", "b"]
    finally:
        _common._reporter = None
    assert seen == [(1, 4, "a"), (2, 4, "b")]


def test_a_log_gets_a_start_line_and_a_verdict_line_per_experiment(monkeypatch):
    stream = _Stream(tty=False)
    display = _parallel.Display(2, stream)
    display.start("slow", 30.0)
    display.progress("slow", 1, 4, "arm b")  # progress is not logged
    display.finish("slow", "[ok ] slow: verdict")
    display.close()
    assert stream.text() == "[...] slow: started (about 30s)\n[ok ] slow: verdict\n"


def test_the_live_line_estimates_the_time_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(_parallel.time, "perf_counter", lambda: now[0])
    stream = _Stream(tty=True)
    display = _parallel.Display(3, stream, live=True)
    try:
        display.start("a", 50.0)
        display.start("b", None)
        now[0] = 110.0
        # before its first unit: the expected seconds; after: time so far / fraction done
        assert display.status() == "[0/3 done, 10s] a 10s, ~40s left | b 10s"
        display.progress("b", 1, 4, "arm 2")
        assert display.status() == "[0/3 done, 10s] a 10s, ~40s left | b 1/4 arm 2 10s, ~30s left"
        display.finish("a", "[ok ] a: verdict")
        assert display.status() == "[1/3 done, 10s] b 1/4 arm 2 10s, ~30s left"
    finally:
        display.close()
    text = stream.text()
    assert "[ok ] a: verdict\n" in text and "\n" not in text.replace("[ok ] a: verdict\n", "")
    assert text.endswith("\r")  # the live line is cleared at the end


def test_jobs_must_be_positive(fake_experiment, capsys):
    with pytest.raises(SystemExit):
        runner.main(["fake", "--jobs", "0"])
    assert "--jobs: expected a positive integer, got 0" in capsys.readouterr().err


def _in_a_worker(name, seconds):
    """A stand-in for ``run_one`` in a worker process: reports a unit, sleeps."""
    _common.progress(0, 2, f"{name} unit 1")
    time.sleep(seconds)
    _common.progress(1, 2, f"{name} unit 2")
    verdict = f"pid {os.getpid()}, XLA_FLAGS {os.environ.get('XLA_FLAGS')}"
    return {"name": name, "supported": True, "verdict": verdict}


def test_workers_run_in_other_processes_with_one_xla_thread_each():
    stream = _Stream(tty=False)
    display = _parallel.Display(3, stream)
    records = _parallel.run_workers(
        ["a", "b", "c"], (0.2,), display, {"a": 9.0, "b": None, "c": None}, jobs=2, run=_in_a_worker
    )
    display.close()
    assert sorted(records) == ["a", "b", "c"]
    pids = {r["verdict"].split(",")[0] for r in records.values()}
    assert f"pid {os.getpid()}" not in pids and 1 <= len(pids) <= 2
    assert all(_parallel.WORKER_XLA_FLAGS in r["verdict"] for r in records.values())
    assert _parallel.WORKER_XLA_FLAGS not in os.environ.get("XLA_FLAGS", "")  # restored here
    lines = stream.text().splitlines()
    assert lines[0] == "[...] a: started (about 9s)"
    for name in "abc":
        assert (
            lines.count(f"[...] {name}: started") + lines.count(f"[...] {name}: started (about 9s)")
            == 1
        )
        assert sum(line.startswith(f"[ok ] {name} (") for line in lines) == 1


class _TwoPartError(Exception):
    """Raised as JAX's tracer errors are: its __init__ takes other arguments
    than the message, so unpickled from its args it fails."""

    def __init__(self, what, why):
        super().__init__(f"{what}: {why}")


def _fails_in_a_worker(name, seconds):
    if name == "b":
        raise _TwoPartError("traced array", "no concrete value")
    return _in_a_worker(name, seconds)


def test_an_error_in_a_worker_ends_the_run_and_names_the_experiment():
    """A worker's exception that cannot be unpickled (it killed the pool's
    result thread and the run waited for ever) arrives as a RuntimeError
    naming the experiment, with the worker's traceback."""
    display = _parallel.Display(3, _Stream(tty=False))
    outcome = []

    def run():
        try:
            _parallel.run_workers(
                ["a", "b", "c"], (0.1,), display, dict.fromkeys("abc"), 2, run=_fails_in_a_worker
            )
        except Exception as error:
            outcome.append(error)

    runner_thread = threading.Thread(target=run, daemon=True)
    runner_thread.start()
    runner_thread.join(timeout=60)
    display.close()
    assert not runner_thread.is_alive(), "run_workers waits for ever on a worker's error"
    (error,) = outcome
    assert isinstance(error, RuntimeError), error
    message = str(error)
    assert message.startswith("b failed in a worker process:")
    assert "_TwoPartError: traced array: no concrete value" in message


@pytest.mark.parametrize("mode", ["--quick", "--full", "--smoke"])
def test_a_quick_run_hands_its_workers_the_quick_xla_flags(
    fake_experiment, tmp_path, monkeypatch, mode
):
    seen = []

    def run_workers(names, args, display, expected, jobs):
        seen.append(os.environ.get("XLA_FLAGS", ""))
        return {name: {"name": name, "supported": True, "verdict": "v"} for name in names}

    monkeypatch.setattr(_parallel, "run_workers", run_workers)
    monkeypatch.setattr(runner, "write_summary", lambda out, mode: None)
    monkeypatch.setattr(runner, "available", lambda: ["fake", "other"])
    monkeypatch.setitem(sys.modules, "experiments.other", fake_experiment)
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert runner.main(["fake", "other", mode, "--jobs", "2", "--out", str(tmp_path)]) == 0
    if mode == "--quick":  # the user's level wins; the emitters are added
        assert seen == ["--xla_backend_optimization_level=3 --xla_cpu_use_fusion_emitters=false"]
    else:
        assert seen == ["--xla_backend_optimization_level=3"]
    assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=3"  # restored
    monkeypatch.delenv("XLA_FLAGS")
    runner.main(["fake", "other", mode, "--jobs", "2", "--out", str(tmp_path)])
    assert seen[-1] == (_parallel.QUICK_XLA_FLAGS if mode == "--quick" else "")
    assert "XLA_FLAGS" not in os.environ


def test_compile_options_give_xla_cpu_options_only_to_a_cpu_compile():
    cpu = _common.compile_options("cpu")
    assert cpu == {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    for backend in ("gpu", "cuda", "rocm", "tpu"):
        options = _common.compile_options(backend)
        assert options == {"xla_backend_optimization_level": 0}
        assert not any(name.startswith("xla_cpu_") for name in options)
