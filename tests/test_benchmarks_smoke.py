"""Smoke test of the benchmark entry point (nothing is timed against a target).

Runs the ``gradient`` benchmark on its smallest shape with the minimal repeat
count, writing into ``tmp_path``: the registry, the timing loop, the HLO
summary, ``results.json`` and the README table all run end to end. A default
run writes into its output folder and leaves the published figures
(``benchmarks/README.md``, ``benchmarks/results.json``) alone; ``--publish``
rewrites them.
"""

import hashlib
import json
import os

import pytest

from benchmarks import __main__ as entry
from benchmarks import gradient, report


def _tiny_gradient(monkeypatch):
    monkeypatch.setattr(gradient, "SHAPES", (((2, 8, 1), 4, "bce"),))


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_default_run_writes_its_folder_and_leaves_the_published_figures_alone(
    tmp_path, monkeypatch, capsys
):
    _tiny_gradient(monkeypatch)
    published = (entry.PUBLISHED_JSON, entry.PUBLISHED_README)
    before = [_digest(p) for p in published]
    monkeypatch.chdir(tmp_path)  # the default folder is relative to where it runs

    entry.run(["gradient"], scale=0.001, log=lambda msg: None)

    assert [_digest(p) for p in published] == before
    out = tmp_path / entry.DEFAULT_OUT
    results = json.loads((out / "results.json").read_text())
    shape = results["benchmarks"]["gradient"]["data"]["2-8-1 @ 4"]
    assert shape["ratios"]["hand"]["median"] > 0
    assert shape["hlo"]["hand"]["dots_ynn"] + shape["hlo"]["hand"]["dots_xla"] >= 2
    assert results["machine"]["jax"]
    assert "| 2-8-1 @ 4 | bce |" in (out / "README.md").read_text()
    assert "| 2-8-1 @ 4 | bce |" in capsys.readouterr().out  # the tables are printed


def test_out_folder_and_publish_are_the_options(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(entry, "run", lambda names, **kw: calls.append((names, kw)))
    entry.main(["--only", "gradient", "--out", str(tmp_path / "o")])
    entry.main(["--only", "gradient", "--publish"])
    entry.main([])
    assert [(c[1]["out"], c[1]["publish"]) for c in calls] == [
        (str(tmp_path / "o"), False),
        (entry.DEFAULT_OUT, True),
        (entry.DEFAULT_OUT, False),
    ]
    with pytest.raises(SystemExit):
        entry.main(["--out", str(tmp_path), "--publish"])


def test_publish_rewrites_the_generated_part_of_the_readme(tmp_path, monkeypatch):
    _tiny_gradient(monkeypatch)
    json_path, readme_path = tmp_path / "results.json", tmp_path / "README.md"
    monkeypatch.setattr(entry, "PUBLISHED_JSON", str(json_path))
    monkeypatch.setattr(entry, "PUBLISHED_README", str(readme_path))
    readme_path.write_text(f"# Notes kept\n\n{report.BEGIN}\nold\n{report.END}\n\nTail kept.\n")

    entry.run(
        ["gradient"],
        scale=0.001,
        out=str(tmp_path / "unused"),
        publish=True,
        log=lambda msg: None,
        show=lambda text: None,
    )

    assert not os.path.exists(tmp_path / "unused")
    results = json.loads(json_path.read_text())
    assert results["benchmarks"]["gradient"]["data"]["2-8-1 @ 4"]["ratios"]["hand"]["median"] > 0
    text = readme_path.read_text()
    assert text.startswith("# Notes kept") and text.rstrip().endswith("Tail kept.")
    assert "old" not in text and "| 2-8-1 @ 4 | bce |" in text


def test_unknown_benchmark_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown benchmark"):
        entry.run(["no_such_benchmark"], out=str(tmp_path), log=lambda msg: None)


def test_conv_profile_stand_ins_keep_the_shapes_and_have_a_correct_backward():
    """The bound of ``benchmarks.investigations.conv_profile`` times LeNet-5 with each
    convolution replaced by a stand-in: same shapes as the convolutions it
    replaces, and a hand-written backward that is the stand-in's gradient."""
    import jax
    import jax.numpy as jnp

    from benchmarks import conv
    from benchmarks.investigations import conv_profile
    from purenet.testing import assert_layer

    whole = conv.lenet5().init(jax.random.key(0), (28, 28, 1))[0]
    stand_in = conv_profile.lenet5_without_convolutions().init(jax.random.key(0), (28, 28, 1))[0]
    assert whole == stand_in == (10,)
    assert conv_profile.conv_flop() == 2 * (2 * 128 * 784 * 25 * 6) + 3 * (2 * 128 * 100 * 150 * 16)
    layer = conv_profile.stand_in(3, 2)
    assert layer.init(jax.random.key(0), (5, 6, 2))[0] == (3, 4, 3)
    params = {"w": jnp.asarray([0.5, -1.0, 2.0], jnp.float64)}
    x = jnp.asarray(jax.random.normal(jax.random.key(1), (2, 5, 6, 2)), jnp.float64)
    assert_layer(layer, params, x)


def test_per_example_times_every_contender_and_reports_a_model_without_rules():
    """``benchmarks.per_example`` on a tiny MLP (every contender timed, memory
    read, norms equal to ``vmap(jax.grad)``'s) and on a model with a layer that
    has params and no per-example rule: reported as unsupported, not a crash,
    with backprop and the autodiff contenders still timed."""
    import jax
    import jax.numpy as jnp

    from benchmarks import models, per_example
    from benchmarks.registry import Config
    from purenet import layers as L

    def tiny():
        p = models.problem((3, 4, 2), 5)
        return per_example.Case(p.name, p.model, p.loss, p.params, p.x, p.t)

    def without_rule():
        ruleless = L.dense(2)._replace(name="ruleless", per_example=None, sq_norms=None)
        p = models.problem((2, 2), 5)
        model = L.serial(ruleless, L.relu(), p.model)
        params = model.init(jax.random.key(0), (2,), jnp.float32)[1]
        return per_example.Case("no rule", model, p.loss, params, p.x, p.t)

    cases = {"tiny": tiny, "no rule": without_rule}
    original = per_example.CASES
    per_example.CASES = cases
    try:
        result = per_example.run(Config(scale=0.001, log=lambda msg: None))
    finally:
        per_example.CASES = original

    ok, refused = result["data"]["3-4-2 @ 5"], result["data"]["no rule"]
    assert ok["unsupported"] is None and ok["max_rel_diff_norms_vs_autodiff"] < 1e-4
    assert set(ok["timing"]["times"]) == set(per_example.GRADIENT_ROWS) | {
        "plain step",
        "DP step",
        "DP step, no noise",
        "vmap(jax.grad) DP step",
    }
    assert ok["timing"]["ratios_to_plain_step"]["DP step"]["median"] > 0
    assert ok["memory"]["norms"]["output"] < ok["memory"]["grads"]["output"]
    assert "ruleless" in refused["unsupported"]
    assert {"backprop", "vmap(jax.grad) norms", "plain step"} <= set(refused["timing"]["times"])
    assert "norms" not in refused["timing"]["times"]
    goals = result["tables"][0]["rows"]
    assert goals[1][:2] == ["no rule", "unsupported"] and len(goals[0]) == len(goals[1])
