"""Reference architectures built from [`purenet.layers`][purenet.layers].

| module | what it holds |
| --- | --- |
| [`gpt`][purenet.models.gpt] | GPT-2 as a `Layer`: its params layout, configuration, decay mask |
| [`hf`][purenet.models.hf] | Hugging Face `GPT2LMHeadModel` state dicts to and from params |
| [`generate`][purenet.models.generate] | sampling with a key-value cache |

Gradient accumulation over micro-batches, a piece of GPT training runs that
is not GPT's, is [`purenet.train.accumulate_gradients`][]; schedules
([`purenet.schedules.linear_warmup`][], [`purenet.schedules.cosine_decay`][])
and clipping ([`purenet.clipping.clip_grads_by_global_norm`][]) live in their own
modules.
"""

from purenet.models.generate import generate
from purenet.models.gpt import gpt, gpt_config, gpt_decay_mask
from purenet.models.hf import gpt_config_from_hf, gpt_params_from_hf, gpt_params_to_hf

__all__ = [
    "generate",
    "gpt",
    "gpt_config",
    "gpt_config_from_hf",
    "gpt_decay_mask",
    "gpt_params_from_hf",
    "gpt_params_to_hf",
]
