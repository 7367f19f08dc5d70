"""Benchmark `gpt`: a training step of `purenet.models.gpt` by the
hand-written backward against `jax.grad`, and against the same model written
nanoGPT-style in PyTorch eager.

Model: `gpt(vocab 96, context 128, depth 4, heads 4, width 128)` (tied
head, GELU-tanh, 0.8 M parameters), batch 16 of 128 tokens, float32. A
step is the gradient of the next-token cross-entropy and one AdamW update.
Contenders, interleaved (`benchmarks.timing`):

* `hand`: `jax.jit` of `purenet.backprop(model, loss)` + `optim.adamw`;
* `jax.grad`: the same with `jax.value_and_grad(purenet.objective(model, loss))`;
* `control`: a second, separately jitted `jax.grad` step (the noise floor);
* `torch`: when torch is installed, a GPT-2 written here in the style of
  nanoGPT (Karpathy 2022): `nn.Embedding`, `nn.LayerNorm`, `nn.Linear`
  with the fused `(d, 3d)` attention projection,
  `F.scaled_dot_product_attention(is_causal=True)`, tied head; eager mode,
  `torch.optim.AdamW`, `zero_grad`/`backward`/`step` per call.

Tokens per second are `16 * 128` over the median step time; the model
FLOPs per step are `6 N + 12 depth T width` per token (Kaplan et al. 2020;
PaLM's MFU accounting: the matrix products of the forward and backward,
attention included), from which the achieved GFLOP/s follow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.registry import Config, register
from benchmarks.timing import compare, fmt_ratio, fmt_spread, ratio_summary
from purenet import backprop, losses, models, objective, optim

VOCAB, CONTEXT, DEPTH, HEADS, WIDTH, BATCH = 96, 128, 4, 4, 128, 16
LOSS = losses.sequence_softmax_cross_entropy


def problem():
    """The model, its params, a batch of ids and next-token labels."""
    model = models.gpt(VOCAB, CONTEXT, DEPTH, HEADS, WIDTH)
    params = model.init(jax.random.key(0), (CONTEXT,), jnp.float32)[1]
    ids = np.random.default_rng(0).integers(0, VOCAB, (BATCH, CONTEXT + 1))
    x = jnp.asarray(ids[:, :-1], jnp.int32)
    t = jnp.asarray(ids[:, 1:], jnp.int32)
    return model, params, x, t, ids


def jax_steps(model, params):
    opt = optim.adamw(3e-4, weight_decay=0.1)
    hand = backprop(model, LOSS)
    auto = jax.value_and_grad(objective(model, LOSS))

    def make(grad_fn):
        def step(params, state, x, t):
            J, grads = grad_fn(params, x, t)
            params, state = opt.step(params, grads, state)
            return params, state, J

        return jax.jit(step)

    return opt.init(params), {"hand": make(hand), "jax.grad": make(auto), "control": make(auto)}


def torch_step(ids):
    """A nanoGPT-style model and optimizer (written here); None without torch."""
    try:
        import torch
        from torch import nn
        from torch.nn import functional as F
    except ImportError:
        return None
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            self.c_attn = nn.Linear(WIDTH, 3 * WIDTH)
            self.c_proj = nn.Linear(WIDTH, WIDTH)
            self.c_fc = nn.Linear(WIDTH, 4 * WIDTH)
            self.mlp_proj = nn.Linear(4 * WIDTH, WIDTH)

        def forward(self, x):
            m, T, d = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
            q, k, v = (a.view(m, T, HEADS, d // HEADS).transpose(1, 2) for a in (q, k, v))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(o.transpose(1, 2).reshape(m, T, d))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(VOCAB, WIDTH), nn.Embedding(CONTEXT, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
            self.ln_f = nn.LayerNorm(WIDTH)

        def forward(self, ids, targets):
            h = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
            for block in self.blocks:
                h = block(h)
            logits = self.ln_f(h) @ self.wte.weight.T  # tied head
            return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))

    model = GPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    x = torch.from_numpy(ids[:, :-1]).long()
    t = torch.from_numpy(ids[:, 1:]).long()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x, t)
        loss.backward()
        opt.step()
        return None

    return step, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def model_flops(params) -> float:
    """Model FLOPs of one training step (forward + backward)."""
    n = sum(a.size for a in jax.tree.leaves(params))
    return BATCH * CONTEXT * (6 * n + 12 * DEPTH * CONTEXT * WIDTH)


@register(
    "gpt",
    "gpt(96, 128, 4, 4, 128) training step: hand-written vs jax.grad vs "
    "PyTorch eager (nanoGPT-style), float32",
)
def run(config: Config) -> dict:
    model, params, x, t, ids = problem()
    state, steps = jax_steps(model, params)
    thunks = {name: (lambda f=f: f(params, state, x, t)) for name, f in steps.items()}
    torch_info = torch_step(ids)
    if torch_info is not None:
        thunks["torch"] = torch_info[0]
    config.log("gpt: timing the training step")
    timing = compare(thunks, baseline="jax.grad", rounds=config.repeats(15, 60), sample_s=0.05)
    samples = timing.pop("samples")
    if "torch" in samples:
        timing["hand_over_torch"] = ratio_summary(samples["hand"], samples["torch"])
    flops = model_flops(params)
    tokens = BATCH * CONTEXT
    rows = []
    for name, s in timing["times"].items():
        med = s["median"]
        ratio = fmt_ratio(timing["ratios"][name]) if name in timing["ratios"] else "1"
        rows.append(
            [name, fmt_spread(s), ratio, f"{tokens / med:,.0f}", f"{flops / med / 1e9:.1f}"]
        )
    n_params = sum(a.size for a in jax.tree.leaves(params))
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            {
                "title": f"training step, batch {BATCH} x {CONTEXT} tokens, float32, "
                f"{n_params:,} params (median [quartiles] per step)",
                "headers": [
                    "contender",
                    "step",
                    "/ jax.grad (per round)",
                    "tokens/s",
                    "model GFLOP/s",
                ],
                "rows": rows,
            }
        ],
        "notes": [
            "Ratios are per-round (interleaved) ratios to jax.grad, median [quartiles]; "
            "'control' is a second jitted jax.grad, the noise floor. "
            f"Model FLOPs per step: {flops / 1e9:.2f} G (6 N + 12 depth T width per token). "
            + (
                f"PyTorch: {torch_info[1]}, eager; hand / torch per round: "
                f"{fmt_ratio(timing['hand_over_torch'])}."
                if torch_info
                else "PyTorch: not installed."
            ),
        ],
        "data": {
            "timing": timing,
            "model_flops": flops,
            "tokens_per_step": tokens,
            "params": n_params,
        },
    }
