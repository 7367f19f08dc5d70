"""A character-level GPT on Python's own source, trained by hand-written backprop.

Claim (issue 23; Radford et al. 2019 for the model; Karpathy's char-rnn, 2015,
trained on the Linux source, and nanoGPT's shakespeare_char for the set-up):
a small GPT trained with purenet's hand-written backward learns the
character statistics of Python source well beyond a bigram model, and the
same model trained by `jax.grad` of `purenet.objective` follows the
hand-written run's loss curve step for step.

Corpus: a fixed list of modules of the Python standard library every machine
has offline (`sysconfig.get_paths()["stdlib"]`): `FILES` below, read as
UTF-8 and concatenated in that order. Characters outside printable ASCII are
mapped to `?` and a tab to a space, so the vocabulary is the 95 printable
ASCII characters and the newline (96 ids). The first 90% of the characters
are the training split, the last 10% the validation split (fixed, no
shuffling across the boundary). The files' contents depend on the Python
version, which `settings` records with the character counts.

Model: `purenet.models.gpt(96, context, depth, heads, width)` (tied head,
GELU-tanh, pre-LN), float32. Training as nanoGPT's: random windows of the
training split each step (batch `BATCH`), next-character cross-entropy
(`sequence_softmax_cross_entropy` on the shifted window), AdamW (b2 0.99)
with weight decay on matrices only (`purenet.models.gpt_decay_mask`, the
decoupled decay applied by hand to the masked leaves, since purenet's adamw
decays every leaf), learning rate by linear warm-up then cosine decay
(`purenet.schedules`), gradients clipped to global norm 1
(`purenet.clipping`). The loop is a `lax.scan` written here, not
`purenet.train.make_train`: batches are windows drawn from the corpus at
each step rather than rows of a fixed array, and the `jax.grad` twin needs
the same loop with another gradient function.

Measured: validation loss (nats per character, on fixed windows of the
validation split, every `EVAL_EVERY` steps) and bits per character, against
a unigram and a bigram model (add-one smoothing) counted on the training
split and scored on the same validation characters; samples at temperatures
0.5, 0.8 and 1.0 from `purenet.models.generate` (key-value cache); and the
largest difference between the per-step training losses of the hand-written
run and of the `jax.grad` run over their first `TWIN_STEPS` steps (same
initialisation, same batches, float32).

Measured here (Python 3.11.7, 428,801 characters): quick mode (width 64,
depth 2, context 64, 1,000 steps, 23 s) reaches 1.55 nats (2.24 bits) per
character, full mode (width 128, depth 4, context 128, 2,000 steps, 323 s)
1.46 (2.10 bits), against 2.27 for the bigram and 2.95 for the unigram model.
The full model (0.8 M parameters, no dropout) overfits the 386 k training
characters after about 1,400 steps: its validation loss bottoms at 1.41 and
rises a little while the training loss keeps falling.
"""

from __future__ import annotations

import math
import sys
import sysconfig
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import Mode, Verdict, jit, pick, progress, pyplot
from purenet import backprop, clipping, losses, models, objective, optim, schedules

NAME = "char_gpt"
QUICK_SECONDS = 35  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "A character-level GPT trained by hand-written backprop on Python standard-library source "
    "beats the unigram and bigram baselines on held-out characters, and jax.grad of the same "
    "objective follows its loss curve step for step"
)

FILES = (
    "argparse.py",
    "difflib.py",
    "functools.py",
    "textwrap.py",
    "heapq.py",
    "dataclasses.py",
    "enum.py",
    "contextlib.py",
)
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))  # 96 symbols
BATCH, LEARNING_RATE, WEIGHT_DECAY, CLIP = 32, 3e-3, 0.1, 1.0
EVAL_WINDOWS, TWIN_STEPS = 64, 100
TEMPERATURES = (0.5, 0.8, 1.0)
LOSS = losses.sequence_softmax_cross_entropy


def corpus() -> tuple[np.ndarray, dict]:
    """The ids of the concatenated files and what was read."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in FILES:
        path = root / name
        if not path.exists():
            raise FileNotFoundError(f"char_gpt: the corpus file {path} is missing from this Python")
        texts.append(path.read_text(encoding="utf-8"))
    text = "".join(texts).replace("\t", " ")
    index = {c: i for i, c in enumerate(VOCAB)}
    unknown = index["?"]
    ids = np.fromiter((index.get(c, unknown) for c in text), np.int32, len(text))
    info = {
        "files": list(FILES),
        "stdlib": str(root),
        "python": sys.version.split()[0],
        "characters": int(ids.size),
        "characters_per_file": [len(t) for t in texts],
    }
    return ids, info


def baselines(train_ids: np.ndarray, val_ids: np.ndarray) -> dict:
    """Unigram and bigram cross-entropy (nats per character, add-one smoothing)
    on the validation characters after the first."""
    V = len(VOCAB)
    uni = np.bincount(train_ids, minlength=V) + 1.0
    uni = uni / uni.sum()
    pairs = np.zeros((V, V))
    np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1.0)
    pairs += 1.0
    bi = pairs / pairs.sum(axis=1, keepdims=True)
    return {
        "unigram": float(-np.mean(np.log(uni[val_ids[1:]]))),
        "bigram": float(-np.mean(np.log(bi[val_ids[:-1], val_ids[1:]]))),
    }


def windows(ids, starts, T):
    """Windows `(len(starts), T)` of `ids` and their next-character labels
    (the last step of each window is not counted: IGNORE_LABEL)."""
    x = ids[starts[:, None] + jnp.arange(T)[None, :]]
    t = jnp.concatenate([x[:, 1:], jnp.full((x.shape[0], 1), -1, x.dtype)], axis=1)
    return x, t


def make_run(
    model, grad_fn, train_ids, val_x, val_t, steps, T, every, run_steps=None, compile=jax.jit
):
    """`run(params, key) -> (params, step_losses, val_losses)`: a `lax.scan`
    of AdamW steps on random windows (the schedule of a `steps`-step run;
    the first `run_steps` of them, default all), the validation loss every
    `every` steps."""
    warmup = max(steps // 10, 1)
    schedule = schedules.linear_warmup(
        warmup, schedules.cosine_decay(LEARNING_RATE, steps - warmup, LEARNING_RATE / 10)
    )
    run_steps = steps if run_steps is None else run_steps
    opt = optim.adamw(schedule, 0.9, 0.99, 1e-8, weight_decay=0.0)
    J_val = objective(model, LOSS)
    high = train_ids.shape[0] - T

    # Not _common.sweep (nor make_train): a step draws its batch of windows at
    # random from the whole text, with a learning-rate schedule over steps and
    # the validation loss every `every` steps; there are no epochs over a fixed
    # data set to map over.
    def run(params, key):
        mask = models.gpt_decay_mask(params)

        def step(carry, i):
            params, state = carry
            starts = jax.random.randint(jax.random.fold_in(key, i), (BATCH,), 0, high)
            x, t = windows(train_ids, starts, T)
            J, grads = grad_fn(params, x, t)
            grads = clipping.clip_grads_by_global_norm(grads, CLIP)
            lr = schedule(state.count)
            new, state = opt.step(params, grads, state)
            # Decoupled weight decay on the masked leaves only (AdamW's w -= lr wd w).
            new = jax.tree.map(
                lambda n, p, m: (n - lr * WEIGHT_DECAY * p).astype(n.dtype) if m else n,
                new,
                params,
                mask,
            )
            val = jax.lax.cond(
                i % every == every - 1,
                lambda: J_val(new, val_x, val_t),
                lambda: jnp.asarray(jnp.nan, J.dtype),
            )
            return (new, state), (J, val)

        (params, _), (step_losses, val) = jax.lax.scan(
            step, (params, opt.init(params)), jnp.arange(run_steps)
        )
        return params, step_losses, val[every - 1 :: every]

    return compile(run)


def measure(mode: Mode, seeds: int | None) -> dict:
    T = pick(mode, smoke=16, quick=64, full=128)
    depth = pick(mode, smoke=1, quick=2, full=4)
    width = pick(mode, smoke=16, quick=64, full=128)
    heads = pick(mode, smoke=2, quick=4, full=4)
    steps = pick(mode, smoke=20, quick=400, full=2000)
    every = pick(mode, smoke=10, quick=50, full=200)
    twin_steps = pick(mode, smoke=10, quick=TWIN_STEPS, full=TWIN_STEPS)
    ids, info = corpus()
    cut = int(0.9 * ids.size)
    train_ids, val_ids = ids[:cut], ids[cut:]
    base = baselines(train_ids, val_ids)
    rng = np.random.default_rng(0)
    val_starts = rng.integers(0, val_ids.size - T, EVAL_WINDOWS)
    val_x, val_t = windows(jnp.asarray(val_ids), jnp.asarray(val_starts), T)
    model = models.gpt(len(VOCAB), T, depth, heads, width)
    _, params, _ = model.init(jax.random.key(0), (T,), jnp.float32)
    train_j = jnp.asarray(train_ids)
    key = jax.random.key(1)

    progress(0, 3, "training")
    hand = make_run(model, backprop(model, LOSS), train_j, val_x, val_t, steps, T, every)
    final, step_losses, val_losses = hand(params, key)
    # The jax.grad twin: the same loop with jax.grad of the objective, for the first
    # twin_steps steps of the same schedule, from the same params and key (same batches).
    J = objective(model, LOSS)

    def auto_grad(p, x, t):
        return J(p, x, t), jax.grad(J)(p, x, t)

    progress(1, 3, "jax.grad twin")
    # The twin compiles at XLA's default level (jax.jit): at level 0 (_common.jit) its
    # 100 steps ran slower than the optimisation saves (quick mode, one XLA thread:
    # 27-30 s in all against 19-24 s, measured 2026-12-08).
    twin = make_run(
        model,
        auto_grad,
        train_j,
        val_x,
        val_t,
        steps,
        T,
        every,
        twin_steps,
        compile=pick(mode, smoke=jit, quick=jax.jit, full=jax.jit),
    )
    _, twin_losses, _ = twin(params, key)
    step_losses = np.asarray(step_losses)
    twin_losses = np.asarray(twin_losses)[:twin_steps]
    diff = np.abs(step_losses[:twin_steps] - twin_losses)

    progress(2, 3, "samples")
    samples = {}
    prompt = jnp.asarray([[VOCAB.index(c) for c in "def "]], jnp.int32)
    for temperature in TEMPERATURES:
        out = models.generate(
            model,
            final,
            prompt,
            T - prompt.shape[1],
            key=jax.random.key(2),
            temperature=temperature,
        )
        samples[str(temperature)] = "".join(VOCAB[i] for i in np.asarray(out[0]))

    settings = {
        "corpus": info,
        "split": f"first 90% train ({train_ids.size} chars), last 10% validation "
        f"({val_ids.size} chars)",
        "vocabulary": "printable ASCII + newline (96); tab -> space, others -> '?'",
        "model": f"gpt(vocab 96, context {T}, depth {depth}, heads {heads}, width {width}), "
        "float32, tied head",
        "training": f"{steps} AdamW steps (b2 0.99, weight decay {WEIGHT_DECAY} on matrices), "
        f"batch {BATCH} random windows, lr {LEARNING_RATE} warm-up 10% then cosine "
        f"to {LEARNING_RATE / 10}, clip {CLIP}",
        "validation": f"{EVAL_WINDOWS} fixed windows of the validation split, every {every} steps",
        "twin_steps": twin_steps,
        "steps": steps,
        "every": every,
        "runs": "one (the claim is about one training curve and its jax.grad twin; "
        "--seeds is not used)",
    }
    numbers = {
        "step_loss": step_losses,
        "twin_step_loss": twin_losses,
        "twin_max_abs_difference": float(diff.max()),
        "twin_max_rel_difference": float(np.max(diff / step_losses[:twin_steps])),
        "val_loss": np.asarray(val_losses),
        "final_val_loss": float(np.asarray(val_losses)[-1]),
        "final_val_bpc": float(np.asarray(val_losses)[-1]) / math.log(2),
        "baselines": base,
        "baselines_bpc": {k: v / math.log(2) for k, v in base.items()},
        "samples": samples,
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    n = data["numbers"]
    val = float(n["final_val_loss"])
    base = n["baselines"]
    twin = float(n["twin_max_abs_difference"])
    supported = bool(val < float(base["bigram"]) < float(base["unigram"]) and twin < 1e-3)
    text = (
        f"validation {val:.3f} nats/char ({n['final_val_bpc']:.2f} bits) vs bigram "
        f"{float(base['bigram']):.3f}, unigram {float(base['unigram']):.3f}; jax.grad twin: "
        f"largest step-loss difference {twin:.1e} over {data['settings']['twin_steps']} steps"
    )
    summary = {
        "val bits/char": round(float(n["final_val_bpc"]), 3),
        "bigram bits/char": round(float(n["baselines_bpc"]["bigram"]), 3),
        "twin max diff": f"{twin:.1e}",
    }
    return Verdict(text, supported, summary)


def draw(data: dict):
    plt = pyplot()
    s, n = data["settings"], data["numbers"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    ax = axes[0]
    steps = np.arange(1, len(n["step_loss"]) + 1)
    ax.plot(steps, np.asarray(n["step_loss"], float), color="C0", alpha=0.5, label="train (batch)")
    every = int(s["every"])
    val = np.asarray(n["val_loss"], float)
    ax.plot(np.arange(1, len(val) + 1) * every, val, "o-", color="C1", label="validation")
    for name, style in (("unigram", ":"), ("bigram", "--")):
        ax.axhline(float(n["baselines"][name]), color="gray", ls=style, label=f"{name} baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title("Character-level GPT on stdlib source")
    ax.legend()

    ax = axes[1]
    k = int(s["twin_steps"])
    diff = np.abs(np.asarray(n["step_loss"], float)[:k] - np.asarray(n["twin_step_loss"], float))
    ax.semilogy(np.arange(1, k + 1), np.maximum(diff, 1e-12), color="C2")
    ax.set_xlabel("step")
    ax.set_ylabel("|loss hand-written - loss jax.grad| (0 drawn at 1e-12)")
    ax.set_title(f"jax.grad twin, float32 (max {float(n['twin_max_abs_difference']):.1e})")

    ax = axes[2]
    ax.axis("off")
    lines = []
    for temperature, text in n["samples"].items():
        lines.append(f"temperature {temperature}:")
        lines.extend(text.split("\n")[:6])
        lines.append("")
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=7)
    ax.set_title("Samples after 'def ' (generate, key-value cache)")
    fig.tight_layout()
    return fig
