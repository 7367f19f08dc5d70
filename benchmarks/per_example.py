"""Benchmark `per_example`: per-example gradient norms and a DP-SGD step from
the hand-written backward, against one backprop, a plain training step and
autodiff per example; time and compiled memory.

Models, float32, each with one batch of random inputs and labels:

* MLP 784-512-512-10 at batch 256 (softmax cross-entropy);
* LeNet-5 on 28x28x1 at batch 128 (`benchmarks.conv.lenet5`): with the
  default `lax` convolutions (per-example rule: the layer's backward on
  batches of one) and with `method="im2col"` (Goodfellow's identity and the
  ghost Gram form on the patch rows);
* `purenet.models.gpt(96, 128, 4, 4, 256)` at batch 16 x 128 tokens (the
  sequence cross-entropy); reported as unsupported while a layer of it has no
  per-example rule.

Contenders, each compiled once (`jax.jit(f).lower(...).compile()`), all of a
model timed in one process, interleaved (`benchmarks.timing.compare`:
rotating order, ratios per round); those slower than 4 backprops in a second
interleaved group with their own copies of the units (`groups`):

* `backprop`: `purenet.backprop(model, loss)`, the batch's gradient (the unit
  of the first ratio);
* `norms`: `purenet.per_example.norms(model, loss)`, each example's squared
  gradient norm per leaf;
* `grads`: `purenet.per_example.grads(model, loss)`, each example's gradient;
* `vmap(jax.grad) norms`: `jax.vmap` over batches of one of
  `jax.value_and_grad(purenet.objective(model, loss))`, then the squared norms
  (what a user of autodiff writes);
* `vmap(backprop) norms`: the same with purenet's backprop on batches of one;
* `plain step`: `backprop` + `optim.sgd(0.05)`'s step (the unit of the
  second ratio);
* `DP step`: `purenet.privacy.dp_gradient(model, loss, l2_clip=1,
  noise_multiplier=1)` + the same SGD step;
* `DP step, no noise`: the same with `noise_multiplier=0` (clipping only):
  the per-example work without the draw of one Gaussian number per parameter;
* `vmap(jax.grad) DP step`: per-example gradients by `vmap(jax.grad)`,
  clipped to global norm 1, summed, Gaussian noise, divided by the batch, the
  same SGD step;
* `torch step`, `opacus hooks`, `opacus ghost`: only when `torch` and
  `opacus` import (MLP and LeNet-5): the same network in PyTorch eager, a
  plain `torch.optim.SGD` step and Opacus's DP-SGD step
  (`PrivacyEngine().make_private(..., grad_sample_mode="hooks" | "ghost")`).

Memory: XLA's `memory_analysis()` of each compiled contender, temporary +
output bytes (what the call allocates beyond its inputs).

Goals (issue 31): `norms` / `backprop` <= 1.2, `DP step` / `plain step` <= 1.5.

Run alone: `python -m benchmarks.per_example [--full] [--only MODEL]`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import purenet
from benchmarks import conv
from benchmarks.models import problem as mlp_problem
from benchmarks.registry import Config, register
from benchmarks.timing import compare, fmt_ratio, fmt_spread, ratio_summary, time_once
from purenet import losses, models, optim, per_example, privacy

LEARNING_RATE, L2_CLIP, NOISE = 0.05, 1.0, 1.0
GOAL_NORMS, GOAL_DP = 1.2, 1.5
UNITS = ("backprop", "plain step")
SLOW = 4.0  # a contender slower than this many backprops is timed in a second group
GROUP_S = (40.0, 200.0)  # seconds of timing per group: quick, full
MAX_ROUNDS = 60
GPT = (96, 128, 4, 4, 256)  # vocab, context, depth, heads, width
GPT_BATCH = 16


@dataclasses.dataclass
class Case:
    """A model, its loss and one batch; `torch_net` builds the same network
    as a `torch.nn.Module` (channels-first for images), or None."""

    name: str
    model: purenet.layers.Layer
    loss: losses.Loss
    params: object
    x: jax.Array
    t: jax.Array
    torch_net: Callable | None = None


def _torch_mlp():
    from torch import nn

    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def _torch_lenet5():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def mlp_case() -> Case:
    p = mlp_problem((784, 512, 512, 10), 256)
    return Case(p.name, p.model, p.loss, p.params, p.x, p.t, _torch_mlp)


def lenet_case(method: str) -> Case:
    model = conv.lenet5(method)
    params = model.init(jax.random.key(0), (28, 28, 1), jnp.float32)[1]
    x, t = conv._data((28, 28, 1), 128)
    name = "LeNet-5 28x28x1 @ 128" + (", im2col" if method == "im2col" else "")
    return Case(
        name,
        model,
        losses.softmax_cross_entropy,
        params,
        x,
        t,
        _torch_lenet5 if method == "lax" else None,
    )


def gpt_case() -> Case:
    vocab, context = GPT[0], GPT[1]
    model = models.gpt(*GPT)
    params = model.init(jax.random.key(0), (context,), jnp.float32)[1]
    ids = np.random.default_rng(0).integers(0, vocab, (GPT_BATCH, context + 1))
    x = jnp.asarray(ids[:, :-1], jnp.int32)
    t = jnp.asarray(ids[:, 1:], jnp.int32)
    name = f"gpt{GPT} @ {GPT_BATCH}x{context}"
    return Case(name, model, losses.sequence_softmax_cross_entropy, params, x, t)


CASES = {
    "mlp": mlp_case,
    "lenet5": lambda: lenet_case("lax"),
    "lenet5_im2col": lambda: lenet_case("im2col"),
    "gpt": gpt_case,
}


def unsupported(case: Case) -> str | None:
    """Why `per_example.norms` refuses the model (traced, nothing run), or None."""
    try:
        jax.eval_shape(per_example.norms(case.model, case.loss), case.params, case.x, case.t)
    except ValueError as e:
        return str(e)
    return None


# ------------------------------------------------------------------ contenders


def _sum_sq(tree, m, dtype):
    return sum(jax.tree.leaves(tree), jnp.zeros((m,), dtype))


def _per_row(f):
    """`f(params, x, t)` on batches of one, under `jax.vmap`."""

    def per_row(params, x, t):
        return jax.vmap(lambda xi, ti: f(params, xi[None], ti[None]))(x, t)

    return per_row


def functions(case: Case, supported: bool) -> dict[str, tuple[Callable, tuple]]:
    """name -> (function, its arguments); the functions are compiled by `compiled`."""
    model, loss = case.model, case.loss
    opt = optim.sgd(LEARNING_RATE)
    state = opt.init(case.params)
    key = jax.random.key(1)
    objective = purenet.objective(model, loss)
    backprop = purenet.backprop(model, loss)
    batch = (case.params, case.x, case.t)

    def autodiff_norms(params, x, t):
        losses_, grads = _per_row(jax.value_and_grad(objective))(params, x, t)
        return losses_, per_example.sq_norms_of(grads)

    def backprop_norms(params, x, t):
        losses_, grads = _per_row(backprop)(params, x, t)
        return losses_, per_example.sq_norms_of(grads)

    def plain_step(params, state, x, t):
        J, grads = backprop(params, x, t)
        params, state = opt.step(params, grads, state)
        return params, state, J

    def autodiff_dp_step(params, state, x, t, key):
        losses_, grads = _per_row(jax.value_and_grad(objective))(params, x, t)
        m = losses_.shape[0]
        norm = jnp.sqrt(_sum_sq(per_example.sq_norms_of(grads), m, losses_.dtype))
        factor = L2_CLIP / jnp.maximum(norm, L2_CLIP)
        leaves, treedef = jax.tree.flatten(grads)
        keys = jax.random.split(key, len(leaves))
        summed = [
            (jnp.tensordot(factor, g, axes=1) + NOISE * L2_CLIP * jax.random.normal(k, g.shape[1:]))
            / m
            for g, k in zip(leaves, keys, strict=True)
        ]
        params, state = opt.step(params, jax.tree.unflatten(treedef, summed), state)
        return params, state, jnp.mean(losses_)

    out = {"backprop": (backprop, batch)}
    if supported:
        dp = privacy.dp_gradient(model, loss, l2_clip=L2_CLIP, noise_multiplier=NOISE)

        def dp_step(params, state, x, t, key):
            J, grads = dp(params, x, t, key=key)
            params, state = opt.step(params, grads, state)
            return params, state, J

        # Clipping alone: what the per-example work costs, without the draw of
        # one Gaussian number per parameter (threefry on the CPU).
        clip_only = privacy.dp_gradient(model, loss, l2_clip=L2_CLIP, noise_multiplier=0.0)

        def clip_step(params, state, x, t):
            J, grads = clip_only(params, x, t)
            params, state = opt.step(params, grads, state)
            return params, state, J

        out["norms"] = (per_example.norms(model, loss), batch)
        out["grads"] = (per_example.grads(model, loss), batch)
    out["vmap(jax.grad) norms"] = (autodiff_norms, batch)
    out["vmap(backprop) norms"] = (backprop_norms, batch)
    out["plain step"] = (plain_step, (case.params, state, case.x, case.t))
    if supported:
        out["DP step"] = (dp_step, (case.params, state, case.x, case.t, key))
        out["DP step, no noise"] = (clip_step, (case.params, state, case.x, case.t))
    out["vmap(jax.grad) DP step"] = (autodiff_dp_step, (case.params, state, case.x, case.t, key))
    return out


def compiled(fns: dict) -> tuple[dict, dict]:
    """Compile each function once: name -> thunk, and name -> memory bytes."""
    thunks, memory = {}, {}
    for name, (f, args) in fns.items():
        exe = jax.jit(f).lower(*args).compile()
        analysis = exe.memory_analysis()
        memory[name] = {
            "temp": int(analysis.temp_size_in_bytes),
            "output": int(analysis.output_size_in_bytes),
        }
        thunks[name] = lambda exe=exe, args=args: exe(*args)
    return thunks, memory


def torch_contenders(case: Case) -> tuple[dict, str | None]:
    """`torch step`, `opacus hooks`, `opacus ghost` thunks when torch and Opacus
    import and the model has a torch twin; else ({}, why not)."""
    if case.torch_net is None:
        return {}, None
    try:
        import opacus
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset
    except ImportError:
        return {}, "torch or opacus not installed"
    torch.manual_seed(0)
    x = torch.from_numpy(np.asarray(case.x))
    if x.ndim == 4:
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    t = torch.from_numpy(np.asarray(case.t)).long()
    m = x.shape[0]

    def stepping(net, opt, criterion):
        def step():
            opt.zero_grad(set_to_none=True)
            criterion(net(x), t).backward()
            opt.step()

        return step

    def plain():
        net = case.torch_net()
        opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
        return stepping(net, opt, nn.CrossEntropyLoss())

    def private(mode: str):
        net = case.torch_net()
        opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
        # one batch of m examples: sample rate 1, expected batch size m
        loader = DataLoader(TensorDataset(x, t), batch_size=m)
        engine = opacus.PrivacyEngine()
        common = dict(noise_multiplier=NOISE, max_grad_norm=L2_CLIP, grad_sample_mode=mode)
        if mode == "ghost":
            # ghost clipping: the criterion runs the two backward passes
            net, opt, criterion, _ = engine.make_private(
                module=net,
                optimizer=opt,
                data_loader=loader,
                criterion=nn.CrossEntropyLoss(),
                **common,
            )
        else:
            net, opt, _ = engine.make_private(
                module=net, optimizer=opt, data_loader=loader, **common
            )
            criterion = nn.CrossEntropyLoss()
        return stepping(net, opt, criterion)

    info = (
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"opacus {opacus.__version__}"
    )
    return {
        "torch step": plain(),
        "opacus hooks": private("hooks"),
        "opacus ghost": private("ghost"),
    }, info


def check(thunks: dict) -> float:
    """Largest relative difference between `norms`' global squared norms and
    `vmap(jax.grad)`'s (the two compute the same numbers)."""
    ours = sum(jax.tree.leaves(thunks["norms"]()[1]))
    theirs = sum(jax.tree.leaves(thunks["vmap(jax.grad) norms"]()[1]))
    return float(jnp.max(jnp.abs(ours - theirs) / jnp.abs(theirs)))


# ---------------------------------------------------------------------- the run

GRADIENT_ROWS = ("backprop", "norms", "grads", "vmap(jax.grad) norms", "vmap(backprop) norms")
STEP_ROWS = (
    "plain step",
    "DP step",
    "DP step, no noise",
    "vmap(jax.grad) DP step",
    "torch step",
    "opacus hooks",
    "opacus ghost",
)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def groups(probe: dict[str, float]) -> list[list[str]]:
    """The contenders in timing groups: those within `SLOW` times a backprop
    in one, the slower ones in a second with their own copies of the units
    (`backprop`, `plain step`). On the loaded machine a call of seconds
    disturbs the short calls that come right after it (the cyclic order of
    `benchmarks.timing` never changes who that is): in one group with the
    MLP's 2.6 s autodiff DP step, backprop measured 34-45 ms against 22 ms
    for backprop + an SGD step; alone with the short ones, 16 and 19 ms."""
    unit = probe["backprop"]
    slow = [n for n, s in probe.items() if s > SLOW * unit and n not in UNITS]
    fast = [n for n in probe if n not in slow]
    return [fast] + ([[*UNITS, *slow]] if slow else [])


def measure(case: Case, config: Config) -> dict:
    """Time and memory of every contender on one model."""
    why = unsupported(case)
    config.log(f"per_example: {case.name}: compiling" + (" (norms unsupported)" if why else ""))
    thunks, memory = compiled(functions(case, why is None))
    extra, torch_info = torch_contenders(case)
    thunks.update(extra)
    probe = {}
    for name, thunk in thunks.items():
        time_once(thunk)  # warm
        probe[name] = time_once(thunk)
    timing = {"groups": [], "times": {}, "ratios": {}, "ratios_to_plain_step": {}, "probe_s": probe}
    samples = {}
    for group in groups(probe):
        round_s = sum(probe[n] for n in group)
        rounds = config.repeats(
            min(MAX_ROUNDS, int(GROUP_S[0] / round_s)), min(MAX_ROUNDS, int(GROUP_S[1] / round_s))
        )
        config.log(f"per_example: {case.name}: timing {group}, {rounds} rounds")
        part = compare({n: thunks[n] for n in group}, baseline="backprop", rounds=rounds)
        timing["groups"].append(
            {"names": group, "rounds": rounds, "calls_per_sample": part["calls_per_sample"]}
        )
        fresh = [n for n in group if n not in timing["times"]]  # the units: first group's
        timing["times"].update({n: part["times"][n] for n in fresh})
        timing["ratios"].update({n: part["ratios"][n] for n in fresh if n in part["ratios"]})
        for n in fresh:
            if n in STEP_ROWS and n != "plain step":
                timing["ratios_to_plain_step"][n] = ratio_summary(
                    part["samples"][n], part["samples"]["plain step"]
                )
        samples[tuple(group)] = part["samples"]
    opacus = {}
    for group, s in samples.items():
        for mode in ("hooks", "ghost"):
            if "DP step" in group and f"opacus {mode}" in group:
                opacus[mode] = ratio_summary(s["DP step"], s[f"opacus {mode}"])
    if opacus:
        timing["dp_step_over_opacus"] = opacus
    return {
        "unsupported": why,
        "timing": timing,
        "memory": memory,
        "torch": torch_info,
        "max_rel_diff_norms_vs_autodiff": None if why else check(thunks),
    }


def _rows(name: str, r: dict) -> tuple[list, list]:
    timing, memory = r["timing"], r["memory"]
    to_plain = timing.get("ratios_to_plain_step", {})
    time_rows, memory_rows = [], []
    for row in GRADIENT_ROWS + STEP_ROWS:
        if row not in timing["times"]:
            if r["unsupported"] and row in ("norms", "grads", "DP step", "DP step, no noise"):
                time_rows.append([name, row, "unsupported", "", ""])
            continue
        ratio_b = (
            "1"
            if row == "backprop"
            else fmt_ratio(timing["ratios"][row])
            if row in timing["ratios"]
            else ""
        )
        ratio_p = (
            "1" if row == "plain step" else fmt_ratio(to_plain[row]) if row in to_plain else ""
        )
        if row in GRADIENT_ROWS:
            ratio_p = ""
        time_rows.append([name, row, fmt_spread(timing["times"][row]), ratio_b, ratio_p])
    for unit, rows in (("backprop", GRADIENT_ROWS), ("plain step", STEP_ROWS)):
        base = memory[unit]["temp"] + memory[unit]["output"]
        for row in rows:
            if row in memory:
                mem = memory[row]
                total = mem["temp"] + mem["output"]
                memory_rows.append(
                    [
                        name,
                        row,
                        _mib(mem["temp"]),
                        _mib(mem["output"]),
                        _mib(total),
                        f"{total / base:.2f} (/ {unit})",
                    ]
                )
            elif r["unsupported"] and row in ("norms", "grads", "DP step"):
                memory_rows.append([name, row, "unsupported", "", "", ""])
    return time_rows, memory_rows


def _goal_row(name: str, r: dict) -> list:
    if r["unsupported"]:
        return [name, "unsupported", "", "unsupported", "", "", ""]
    timing, memory = r["timing"], r["memory"]
    norms = timing["ratios"]["norms"]
    dp = timing["ratios_to_plain_step"]["DP step"]
    mem = memory["norms"]["temp"] + memory["norms"]["output"]
    base = memory["backprop"]["temp"] + memory["backprop"]["output"]
    opacus = timing.get("dp_step_over_opacus")
    return [
        name,
        fmt_ratio(norms),
        "yes" if norms["median"] <= GOAL_NORMS else "no",
        fmt_ratio(dp),
        "yes" if dp["median"] <= GOAL_DP else "no",
        f"{mem / base:.2f}",
        fmt_ratio(opacus["ghost"]) if opacus else "not run",
    ]


@register(
    "per_example",
    "per-example gradient norms and a DP-SGD step vs backprop, a plain step, "
    "vmap(jax.grad) (and Opacus when installed): time and compiled memory, float32",
)
def run(config: Config, only: tuple[str, ...] | None = None) -> dict:
    data, time_rows, memory_rows, goal_rows, notes = {}, [], [], [], []
    for key, make in CASES.items():
        if only and key not in only:
            continue
        case = make()
        r = measure(case, config)
        data[case.name] = r
        t_rows, m_rows = _rows(case.name, r)
        time_rows += t_rows
        memory_rows += m_rows
        goal_rows.append(_goal_row(case.name, r))
        if r["unsupported"]:
            notes.append(f"{case.name}: per_example.norms refuses the model: {r['unsupported']}")
    torch_infos = {r["torch"] for r in data.values() if r["torch"]}
    notes.insert(
        0,
        "All contenders of a model are timed in one process, interleaved (benchmarks.timing); "
        f"those slower than {SLOW:g} backprops in a second interleaved group with their own "
        "copies of backprop and the plain step (data: groups), since a call of seconds "
        "disturbs the short calls right after it on a loaded machine; "
        "time per call median [quartiles]; ratios are per round (a[r] / b[r]), median "
        "[quartiles]. Memory: XLA's memory_analysis() of the compiled call, temp + "
        "output bytes. SGD lr 0.05; DP: l2_clip 1, noise_multiplier 1, the batch's "
        "size as the divisor. norms and vmap(jax.grad) agree to float32 rounding "
        "(data: max_rel_diff_norms_vs_autodiff). PyTorch / Opacus: "
        + ("; ".join(sorted(torch_infos)) or "no model with a PyTorch twin was run")
        + ". Opacus runs on the MLP and LeNet-5 (lax) only; the GPT has no PyTorch twin here.",
    )
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            {
                "title": f"Goals: norms / backprop <= {GOAL_NORMS}, DP step / plain step <= "
                f"{GOAL_DP} (per-round ratios, median [quartiles])",
                "headers": [
                    "model",
                    "norms / backprop",
                    "met",
                    "DP step / plain step",
                    "met",
                    "memory norms / backprop",
                    "DP step / opacus ghost",
                ],
                "rows": goal_rows,
            },
            {
                "title": "Time per call, median [quartiles]",
                "headers": ["model", "contender", "time", "/ backprop", "/ plain step"],
                "rows": time_rows,
            },
            {
                "title": "Compiled memory (XLA memory_analysis): temp + output bytes",
                "headers": ["model", "contender", "temp", "output", "temp + output", "ratio"],
                "rows": memory_rows,
            },
        ],
        "notes": notes,
        "data": data,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.per_example", description=__doc__)
    parser.add_argument("--full", action="store_true", help="more rounds")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the rounds")
    parser.add_argument("--only", action="append", choices=sorted(CASES), help="one model")
    args = parser.parse_args(argv)
    result = run(Config(full=args.full, scale=args.scale), only=args.only)
    for table in result["tables"]:
        print(table["title"])
        print(" | ".join(table["headers"]))
        for row in table["rows"]:
            print(" | ".join(str(c) for c in row))
        print()
    for note in result["notes"]:
        print(note)


if __name__ == "__main__":
    main()
