"""The experiment runner: CLI, outputs, summary, and never overwriting a user's file."""

import json
import sys
import types

import pytest

from experiments import __main__ as runner
from experiments import _common


@pytest.fixture
def fake_experiment(monkeypatch):
    """A registered experiment whose numbers come from its config."""
    module = types.ModuleType("experiments.fake")
    module.NAME = "fake"
    module.CLAIM = "Fake claims hold."

    def run(config):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        seeds = config.num_seeds(3, 10)
        figure, ax = plt.subplots()
        ax.plot(range(seeds))
        return _common.Outcome(
            verdict=f"measured {seeds} seeds",
            supported=seeds > 1,
            numbers={"values": list(range(seeds)), "nan": float("nan")},
            settings={"seeds": seeds},
            figure=figure,
            summary={"seeds": seeds},
        )

    module.run = run
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
    assert (tmp_path / "fake.png").read_bytes()[:4] == b"\x89PNG"
    summary = (tmp_path / "README.md").read_text()
    assert "| [fake](fake.png) | Fake claims hold. | yes | measured 4 seeds | quick |" in summary
    assert "[ok ] fake" in capsys.readouterr().out


def test_full_mode_and_default_seeds(fake_experiment, tmp_path):
    runner.main(["--full", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "fake.json").read_text())
    assert record["mode"] == "full" and record["settings"]["seeds"] == 10


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


def test_all_registered_experiments_exist():
    """Every claim of the notes has its module (the list is the contract)."""
    assert runner.available() == runner.EXPERIMENTS
