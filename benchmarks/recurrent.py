"""Benchmark `recurrent`: hand-written backpropagation through time against
`jax.grad` of the same scan, and one training epoch against PyTorch.

Gradient contenders, both under `jax.jit`, float32, same params and batch
(as `benchmarks.gradient`):

* `hand`: `purenet.backprop(model, loss)`: the layers' reverse
  `lax.scan` written by hand (input projections and the weight gradients
  hoisted out of the scan as single matrix products);
* `jax.grad`: `jax.value_and_grad(purenet.objective(model, loss))`:
  XLA's autodiff of the forward scan (which accumulates `dWh` inside its
  reverse scan, one `h^T da` product per step);
* `control`: a second, separately jitted `jax.grad`; its ratio to
  `jax.grad` is the machine's noise.

Shapes:

* `lstm(128)` on `(m, T, d) = (64, 50, 32)`, then `dense(10)` at every
  step,
  [`purenet.losses.sequence_softmax_cross_entropy`][purenet.losses.sequence_softmax_cross_entropy];
* the MNIST-1D GRU (Greydanus 2020): `bidirectional(gru(6))` on
  `(100, 40, 1)`, `last_step()`, `dense(10)`, softmax cross-entropy.

Epoch: the LSTM model trained for one epoch with Adam (`1e-3`), batch 64,
on 1,280 random sequences: purenet's `make_epoch` (one jitted
`lax.scan`) against PyTorch eager (`nn.LSTM(batch_first=True)` +
`nn.Linear`, `F.cross_entropy`, `torch.optim.Adam`) when `import
torch` works; skipped otherwise. Timing: `benchmarks.timing`,
interleaved rounds, medians and round-by-round ratios.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.gradient import gradient_table, time_gradients, timing_cells
from benchmarks.registry import Config, register
from benchmarks.timing import fmt_ratio, fmt_spread, interleave, summary
from purenet import layers as L
from purenet import losses, optim
from purenet.train import make_epoch

EPOCH_EXAMPLES, EPOCH_BATCH = 1280, 64


def lstm_problem():
    """`lstm(128)` on (64, 50, 32), a class per step."""
    k_init, k_x, k_t = jax.random.split(jax.random.key(0), 3)
    model = L.serial(L.lstm(128), L.dense(10))
    params = model.init(k_init, (50, 32))[1]
    x = jax.random.normal(k_x, (64, 50, 32))
    t = jax.random.randint(k_t, (64, 50), 0, 10)
    return "lstm(128) on (64, 50, 32)", model, losses.sequence_softmax_cross_entropy, params, x, t


def gru_problem():
    """The MNIST-1D bidirectional GRU with 6 hidden units on (100, 40, 1)."""
    k_init, k_x, k_t = jax.random.split(jax.random.key(0), 3)
    model = L.serial(L.bidirectional(L.gru(6)), L.last_step(), L.dense(10))
    params = model.init(k_init, (40, 1))[1]
    x = jax.random.normal(k_x, (100, 40, 1))
    t = jax.random.randint(k_t, (100,), 0, 10)
    return "bidirectional gru(6) on (100, 40, 1)", model, losses.softmax_cross_entropy, params, x, t


def gradient_timing(problem, rounds: int) -> dict:
    _, model, loss, params, x, t = problem
    return time_gradients(model, loss, params, x, t, rounds, sample_s=0.02)


def purenet_epoch():
    _, model, loss, params, _, _ = lstm_problem()
    k_x, k_t = jax.random.split(jax.random.key(1))
    x = jax.random.normal(k_x, (EPOCH_EXAMPLES, 50, 32))
    t = jax.random.randint(k_t, (EPOCH_EXAMPLES, 50), 0, 10)
    opt = optim.adam(1e-3)
    epoch = jax.jit(make_epoch(model, loss, opt, EPOCH_BATCH, EPOCH_EXAMPLES))
    opt_state = opt.init(params)
    key = jax.random.key(2)
    return (lambda: epoch(params, opt_state, (), key, x, t)), np.asarray(x), np.asarray(t)


def torch_epoch(x, t):
    """PyTorch eager epoch, or `(None, reason)` when torch is missing."""
    try:
        import torch
    except ImportError as e:
        return None, f"torch not importable ({e})"
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(32, 128, batch_first=True)
    head = torch.nn.Linear(128, 10)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-3)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t).long()
    gen = torch.Generator().manual_seed(1)
    steps = EPOCH_EXAMPLES // EPOCH_BATCH

    def run():
        order = torch.randperm(EPOCH_EXAMPLES, generator=gen)
        for i in range(steps):
            rows = order[i * EPOCH_BATCH : (i + 1) * EPOCH_BATCH]
            logits = head(lstm(xt[rows])[0])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), tt[rows].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss.detach()

    return run, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


@register("recurrent", "hand-written BPTT vs jax.grad (LSTM, MNIST-1D GRU); LSTM epoch vs PyTorch")
def run(config: Config) -> dict:
    rows, data, notes = [], {}, []
    for make, (quick, full) in ((lstm_problem, (20, 100)), (gru_problem, (100, 500))):
        problem = make()
        config.log(f"recurrent: {problem[0]}")
        timing = gradient_timing(problem, config.repeats(quick, full))
        data[problem[0]] = timing
        rows.append([problem[0], *timing_cells(timing)])

    config.log("recurrent: one LSTM epoch")
    epoch, x, t = purenet_epoch()
    contenders = {"purenet": epoch}
    torch_run, info = torch_epoch(x, t)
    if torch_run is None:
        notes.append(f"PyTorch epoch skipped: {info}.")
    else:
        contenders["torch"] = torch_run
        notes.append(f"PyTorch: {info}.")
    samples = interleave(contenders, rounds=config.repeats(3, 10), warmup=1)
    epochs = {name: summary(s) for name, s in samples.items()}
    data["epoch"] = epochs
    epoch_rows = [[name, fmt_spread(s)] for name, s in epochs.items()]
    if "torch" in samples:
        ratio = summary(np.asarray(samples["purenet"]) / np.asarray(samples["torch"]))
        data["epoch_ratio_purenet_over_torch"] = ratio
        epoch_rows.append(["purenet / torch", fmt_ratio(ratio)])
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            gradient_table(rows),
            {
                "title": f"one epoch, LSTM model, Adam, {EPOCH_EXAMPLES} sequences, batch "
                f"{EPOCH_BATCH}",
                "headers": ["contender", "seconds per epoch"],
                "rows": epoch_rows,
            },
        ],
        "notes": notes,
        "data": data,
    }
