"""`python -m experiments.readme`: the README's table of claims and the results
page, generated from the JSON of a run, for every registered experiment."""

import json
import shutil
from pathlib import Path

import pytest

from experiments import readme

ROOT = Path(__file__).resolve().parent.parent


def record(name, supported=True, mode="full", verdict="measured 0.5 | 0.7"):
    return {
        "name": name,
        "claim": f"{name} claims a | b",
        "verdict": verdict,
        "supported": supported,
        "mode": mode,
        "seconds": 12.3,
        "figure": f"{name}.png",
    }


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A results folder with JSON for two of three registered experiments (the
    third, `dp_sgd`, is real: its claim is read from its source)."""
    monkeypatch.setattr(readme, "EXPERIMENTS", ["alpha", "dp_sgd", "beta"])
    folder = tmp_path / "docs" / "results"
    folder.mkdir(parents=True)
    (folder / "alpha.json").write_text(json.dumps(record("alpha")))
    (folder / "beta.json").write_text(json.dumps(record("beta", supported=False, mode="quick")))
    return folder


def rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("| [")]


def test_one_row_per_registered_experiment_in_registry_order(results):
    table = readme.claims_table(results)
    found = rows(table)
    assert [row.split("`")[1] for row in found] == ["alpha", "dp_sgd", "beta"]
    page = results.as_posix() + "/index.md"
    assert found[0].startswith(f"| [`alpha`]({page}#alpha) | alpha claims a \\| b |")
    assert "measured 0.5 \\| 0.7" in found[0] and found[0].endswith("| supported (full run) |")
    assert found[2].endswith("| **not supported** (quick run) |")
    # every row has the header's four cells, whatever `|` its texts hold
    for row in found:
        assert len(row.replace("\\|", "").split("|")) == len(table.splitlines()[2].split("|"))


def test_an_experiment_without_json_is_not_yet_published(results):
    unpublished = rows(readme.claims_table(results))[1]
    claim = readme.source_claim("dp_sgd")
    assert claim and "DP-SGD" in claim
    assert claim.split()[0] in unpublished and unpublished.endswith("| not yet published |")
    section = readme.sections(results).split("## dp_sgd", 1)[1].split("## beta")[0]
    assert "*Not yet published:*" in section and "--out" in section and "![" not in section


def test_sections_show_figure_verdict_and_command(results):
    text = readme.sections(results)
    assert text.startswith(readme.SECTIONS[0]) and text.endswith(readme.SECTIONS[1])
    alpha = text.split("## alpha", 1)[1].split("## dp_sgd")[0]
    assert "*Measured (full run, supported):* measured 0.5 | 0.7" in alpha
    assert "![alpha](alpha.png)" in alpha
    assert "`python -m experiments alpha --full` (12 s here" in alpha


def test_main_rewrites_only_between_the_markers(results, monkeypatch):
    root = results.parent.parent
    monkeypatch.chdir(root)
    claims, sections = readme.CLAIMS, readme.SECTIONS
    (root / "README.md").write_text(f"# Kept\n\n{claims[0]}\nold\n{claims[1]}\n\nTail kept.\n")
    (results / "index.md").write_text(f"# Page\n\n{sections[0]}\nold\n{sections[1]}\n\nNotes.\n")
    assert readme.main(["docs/results"]) == 0
    text = (root / "README.md").read_text()
    assert text.startswith("# Kept\n\n" + claims[0])
    assert text.endswith(claims[1] + "\n\nTail kept.\n")
    assert "old" not in text and len(rows(text)) == 3
    page = (results / "index.md").read_text()
    assert page.startswith("# Page\n\n") and page.endswith("\n\nNotes.\n") and "old" not in page
    assert page.count("\n## ") == 3
    # a second run changes nothing
    assert readme.main(["docs/results"]) == 0
    assert (root / "README.md").read_text() == text and (results / "index.md").read_text() == page


def test_missing_markers_are_an_error_naming_the_file(results, monkeypatch):
    root = results.parent.parent
    monkeypatch.chdir(root)
    (root / "README.md").write_text("# No markers\n")
    (results / "index.md").write_text(f"{readme.SECTIONS[0]}\n{readme.SECTIONS[1]}\n")
    with pytest.raises(SystemExit, match="README.md: expected the markers <!-- BEGIN CLAIMS -->"):
        readme.main(["docs/results"])
    with pytest.raises(SystemExit, match="results: expected a folder"):
        readme.main([str(root / "nowhere")])


def test_the_published_readme_and_results_page_are_up_to_date(tmp_path, monkeypatch):
    # Regenerate from the repository's JSON in a copy: a run published without
    # `python -m experiments.readme docs/results` (or a new experiment
    # registered since) shows here.
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs" / "results", tmp_path / "docs" / "results")
    monkeypatch.chdir(tmp_path)
    readme.main(["docs/results"])
    for path in ("README.md", "docs/results/index.md"):
        assert (tmp_path / path).read_text() == (ROOT / path).read_text(), (
            f"{path} is not what `python -m experiments.readme docs/results` writes; run it"
        )
