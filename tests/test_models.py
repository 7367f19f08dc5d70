"""purenet.models: GPT-2 against Hugging Face's GPT2LMHeadModel (float64), against
jax.grad and finite differences, weight sharing, the state-dict mapping, generation
with a key-value cache, gradient accumulation and the decay mask.

The comparisons with Hugging Face are skipped when torch or transformers is
absent. Errors are relative, tensor by tensor, ``||ours - theirs|| / ||theirs||``
(the maximum over tensors is printed: ``pytest -s -k hf``).
"""

import copy
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purenet
from purenet import layers as L
from purenet import losses, models, optim, train
from purenet.models.gpt import GPTConfig
from purenet.testing import assert_gradients

# The module, not the function `models.generate` that shadows it.
generate_module = importlib.import_module("purenet.models.generate")

LOSS = losses.sequence_softmax_cross_entropy
CONFIG = dict(
    n_layer=2,
    n_head=4,
    n_embd=64,
    vocab_size=97,
    n_positions=32,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    activation_function="gelu_new",
)
M, T = 3, 32
ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
STEPS = 10


def targets(ids):
    """Next-token labels: ``ids[:, 1:]`` and IGNORE_LABEL at the last step."""
    ids = jnp.asarray(ids)
    return jnp.concatenate([ids[:, 1:], jnp.full((ids.shape[0], 1), -1, ids.dtype)], axis=1)


def rel(ours, theirs) -> float:
    """The largest relative error of a tensor, ``||ours - theirs|| / ||theirs||``,
    over two pytrees with equal structure (or two HF state dicts)."""
    if isinstance(theirs, dict) and "lm_head.weight" in theirs:  # HF layout: compare there
        ours, theirs = dict(ours), {k: theirs[k] for k in ours}
    pairs = [
        (np.asarray(a, np.float64), np.asarray(b, np.float64))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True)
    ]
    # A floor under the denominator, 1e-6 of the whole pytree's norm: a
    # gradient that is exactly zero here (the key bias bk, which the softmax
    # cancels) is rounding noise (1e-18) for the referee.
    floor = 1e-6 * np.sqrt(sum(np.sum(b * b) for _, b in pairs)) + 1e-300
    return max(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), floor)) for a, b in pairs)


# --------------------------------------------------------------- the reference


@pytest.fixture(scope="module")
def hf():
    """A random GPT2LMHeadModel in float64 and what it computes: logits, the
    shifted cross-entropy (float64, by hand), every gradient, and the params
    after 10 AdamW steps. Torch only; JAX arrays are made inside the tests."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(**CONFIG)
    config._attn_implementation = "eager"
    model = transformers.GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():  # random biases and gains too, so every mapping matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CONFIG["vocab_size"], (M, T))
    batches = rng.integers(0, CONFIG["vocab_size"], (STEPS, M, T))
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    trained = copy.deepcopy(model)

    def loss_of(model, ids):
        ids = torch.from_numpy(ids)
        logits = model(ids).logits
        V = logits.shape[-1]
        return logits, torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1)
        )

    logits, loss = loss_of(model, ids)
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters(remove_duplicate=False)}
    opt = torch.optim.AdamW(trained.parameters(), **ADAMW)
    step_losses = []
    for batch in batches:
        opt.zero_grad()
        _, step_loss = loss_of(trained, batch)
        step_loss.backward()
        opt.step()
        step_losses.append(step_loss.item())
    after = {k: v.detach().numpy().copy() for k, v in trained.state_dict().items()}
    return dict(
        config=config,
        model=model,
        state=state,
        ids=ids,
        batches=batches,
        logits=logits.detach().numpy(),
        loss=loss.item(),
        grads=grads,
        after=after,
        step_losses=np.array(step_losses),
    )


@pytest.fixture(scope="module")
def ours(hf):
    """The gpt twin of the reference model and its compiled gradient."""
    model = models.gpt(**models.gpt_config_from_hf(hf["config"]))
    return model, jax.jit(purenet.backprop(model, LOSS))


def test_hf_logits_loss_grads(x64, hf, ours):
    model, grad_fn = ours
    params = models.gpt_params_from_hf(hf["state"], model)
    ids = jnp.asarray(hf["ids"])
    logits, _ = jax.jit(model.forward)(params, ids)
    J, grads = grad_fn(params, ids, targets(ids))
    theirs = models.gpt_params_from_hf(hf["grads"], model)
    # Compared tensor by tensor in Hugging Face's layout: the key bias bk has
    # a gradient of exactly zero here (the softmax cancels it) and of rounding
    # noise (1e-18) there, so it is compared inside c_attn.bias, as HF stores it.
    errors = {
        "logits": rel(logits, hf["logits"]),
        "loss": abs(float(J) - hf["loss"]) / abs(hf["loss"]),
        "grads": rel(models.gpt_params_to_hf(grads), hf["grads"]),
    }
    print("\nvs GPT2LMHeadModel, float64, relative errors:", errors)
    assert logits.dtype == jnp.float64
    assert all(e <= 1e-10 for e in errors.values()), errors
    # The tied matrix gets both uses' gradients: not the embedding's alone.
    assert rel(grads[0]["W"], theirs[0]["W"]) <= 1e-10
    assert rel(grads[1]["W"], theirs[1]["W"]) <= 1e-10
    assert grads[5]["W"] is None
    assert float(jnp.max(jnp.abs(theirs[3][0][0][1]["bk"]))) < 1e-15


def test_hf_adamw_steps(x64, hf, ours):
    model, grad_fn = ours
    params = models.gpt_params_from_hf(hf["state"], model)
    opt = optim.adamw(ADAMW["lr"], *ADAMW["betas"], ADAMW["eps"], ADAMW["weight_decay"])

    @jax.jit
    def step(params, state, ids):
        J, grads = grad_fn(params, ids, targets(ids))
        params, state = opt.step(params, grads, state)
        return params, state, J

    state = opt.init(params)
    step_losses = []
    for batch in hf["batches"]:
        params, state, J = step(params, state, jnp.asarray(batch))
        step_losses.append(float(J))
    # The largest error (9e-13) is c_attn.bias's key part: torch's bk gradient is
    # rounding noise (1e-18) where ours is exactly 0, and Adam divides it by its
    # own root mean square; every other tensor agrees to 6e-15.
    errors = {
        "params after 10 AdamW steps": rel(models.gpt_params_to_hf(params), hf["after"]),
        "losses of the 10 steps": float(
            np.max(np.abs(np.array(step_losses) - hf["step_losses"]) / hf["step_losses"])
        ),
    }
    print("\nvs torch.optim.AdamW, float64, relative errors:", errors)
    assert rel(params, models.gpt_params_from_hf(hf["state"], model)) > 1e-3  # it moved
    assert all(e <= 1e-10 for e in errors.values()), errors


def test_hf_round_trip_and_config(x64, hf):
    torch = pytest.importorskip("torch")
    config = models.gpt_config_from_hf(hf["config"])
    assert config == dict(
        vocab_size=97,
        context=32,
        depth=2,
        heads=4,
        width=64,
        mlp_ratio=4,
        tied=True,
        activation="gelu_tanh",
        dropout=0.0,
        eps=1e-5,
    )
    assert models.gpt_config(models.gpt(**config)) == {**config, "flash": False}
    assert models.gpt_config_from_hf(hf["config"].to_dict()) == config
    model = models.gpt(**config)
    params = models.gpt_params_from_hf(hf["state"], model)
    assert jax.tree.structure(params) == jax.tree.structure(
        model.init(jax.random.key(0), (T,), jnp.float64)[1]
    )
    back = models.gpt_params_to_hf(params)
    sd = {k: v for k, v in hf["state"].items() if not k.endswith((".attn.bias", ".masked_bias"))}
    assert sorted(back) == sorted(sd)
    assert all(np.array_equal(back[k], sd[k]) for k in sd)
    twin = copy.deepcopy(hf["model"])
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in back.items()}, strict=True)
    ids = torch.from_numpy(hf["ids"])
    assert np.array_equal(twin(ids).logits.detach().numpy(), hf["logits"])
    # Without a model the configuration comes from the shapes (tied: lm_head == wte).
    assert rel(models.gpt_params_from_hf(hf["state"]), params) == 0.0


def test_hf_untied(x64):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    config = transformers.GPT2Config(**{**CONFIG, "n_layer": 1}, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    hf_model = transformers.GPT2LMHeadModel(config).double().eval()
    state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    assert not np.array_equal(state["lm_head.weight"], state["transformer.wte.weight"])
    model = models.gpt(**models.gpt_config_from_hf(config))
    params = models.gpt_params_from_hf(state, model)
    assert params[5]["W"].shape == (64, 97)
    ids = np.random.default_rng(1).integers(0, 97, (2, 9))
    theirs = hf_model(torch.from_numpy(ids)).logits.detach().numpy()
    assert rel(model.forward(params, jnp.asarray(ids))[0], theirs) <= 1e-10
    back = models.gpt_params_to_hf(params)
    assert np.array_equal(back["lm_head.weight"], state["lm_head.weight"])
    with pytest.raises(ValueError, match=r"lm_head.weight.*tied"):
        models.gpt_params_from_hf(state, models.gpt(97, 32, 1, 4, 64))


def test_hf_bad_state_dicts(x64, hf):
    model = models.gpt(**models.gpt_config_from_hf(hf["config"]))
    sd = dict(hf["state"])
    missing = {k: v for k, v in sd.items() if k != "transformer.h.1.mlp.c_fc.bias"}
    with pytest.raises(ValueError, match=r"state_dict: .*missing \['transformer.h.1.mlp.c_fc.bias"):
        models.gpt_params_from_hf(missing, model)
    with pytest.raises(ValueError, match=r"unexpected \['transformer.h.0.attn.extra'\]"):
        models.gpt_params_from_hf({**sd, "transformer.h.0.attn.extra": np.zeros(3)}, model)
    bad = {**sd, "transformer.h.0.attn.c_proj.weight": np.zeros((64, 65))}
    with pytest.raises(
        ValueError,
        match=r"state_dict\['transformer.h.0.attn.c_proj.weight'\]: "
        r"expected shape \(64, 64\), got shape \(64, 65\)",
    ):
        models.gpt_params_from_hf(bad, model)
    wrong = {**sd, "lm_head.weight": sd["lm_head.weight"] + 1.0}
    with pytest.raises(ValueError, match=r"state_dict\['lm_head.weight'\].*tied"):
        models.gpt_params_from_hf(wrong, model)
    for other, what in (
        (models.gpt(97, 32, 3, 4, 64), "depth"),
        (models.gpt(97, 64, 2, 4, 64), "context"),
        (models.gpt(96, 32, 2, 4, 64), "vocab_size"),
    ):
        with pytest.raises(ValueError, match=rf"state_dict: expected weights for gpt.*{what}"):
            models.gpt_params_from_hf(sd, other)
    with pytest.raises(TypeError, match="state_dict"):
        models.gpt_params_from_hf([1, 2], model)
    with pytest.raises(TypeError, match="model: expected a model made by purenet.models.gpt"):
        models.gpt_params_from_hf(sd, L.dense(3))
    with pytest.raises(ValueError, match="config.activation_function"):
        models.gpt_config_from_hf({**CONFIG, "activation_function": "silu"})


# ------------------------------------------------------ referees of the backward

SMALL = models.gpt(11, 8, 1, 2, 8)
SMALL_UNTIED = models.gpt(11, 8, 2, 2, 8, tied=False, activation="gelu")


def small_batch(m=2, T=6, seed=0):
    ids = jnp.asarray(np.random.default_rng(seed).integers(0, 11, (m, T)))
    return ids, targets(ids)


def perturbed(model, seed=0):
    """Params with every leaf moved off its initial value (biases and gains too)."""
    _, params, _ = model.init(jax.random.key(seed), (8,), jnp.float64)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)), params)


def test_gpt_vs_jax_grad_and_finite_differences(x64):
    ids, t = small_batch()
    assert_gradients(SMALL, LOSS, perturbed(SMALL), ids, t)


def test_gpt_vs_jax_grad_jit_vmap_dropout(x64):
    model = models.gpt(11, 8, 1, 2, 8, dropout=0.25)
    params = perturbed(model, 1)
    ids, t = small_batch(4, 8, 1)
    key = jax.random.key(3)
    grad_fn = jax.jit(purenet.backprop(model, LOSS), static_argnames="train")
    manual = grad_fn(params, ids, t, train=True, key=key)[1]
    auto = jax.jit(jax.grad(purenet.objective(model, LOSS)), static_argnames="train")(
        params, ids, t, train=True, key=key
    )
    assert rel(manual, auto) <= 1e-10
    eval_mode = grad_fn(params, ids, t)[1]
    assert rel(eval_mode, manual) > 1e-3  # the dropout masks act

    # Per-example gradients under vmap, hand-written vs jax.grad; the untied head.
    params = perturbed(SMALL_UNTIED, 2)

    def per_example(f):
        return jax.jit(jax.vmap(lambda x, t: f(params, x[None], t[None])))

    manual = per_example(lambda p, x, t: purenet.backprop(SMALL_UNTIED, LOSS)(p, x, t)[1])(ids, t)
    auto = per_example(jax.grad(purenet.objective(SMALL_UNTIED, LOSS)))(ids, t)
    assert rel(manual, auto) <= 1e-10
    assert manual[5]["W"].shape == (4, 8, 11)


def test_gpt_cache_crosses_jit_and_flash(x64):
    params = perturbed(SMALL, 4)
    ids, t = small_batch(2, 8, 4)
    y, cache = jax.jit(SMALL.forward)(params, ids)
    dy = jnp.asarray(np.random.default_rng(4).standard_normal(y.shape))
    eager = SMALL.backward(params, SMALL.forward(params, ids)[1], dy)
    assert rel(jax.jit(SMALL.backward)(params, cache, dy), eager) <= 1e-13
    flash = models.gpt(11, 8, 1, 2, 8, flash=True)
    grads = jax.jit(purenet.backprop(flash, LOSS))(params, ids, t)[1]
    assert rel(grads, jax.jit(purenet.backprop(SMALL, LOSS))(params, ids, t)[1]) <= 1e-12


# ------------------------------------------------------------------- sharing


def test_tied_sums_the_gradients_of_every_use(x64):
    body = L.serial(L.dense(3), L.tanh(), L.dense(3), L.tanh(), L.dense(3))
    model = L.tied(body, [((0, "W"), (2, "W"), (4, "W")), ((0, "b"), (4, "b"))])
    _, params, _ = model.init(jax.random.key(0), (3,), jnp.float64)
    assert params[2]["W"] is None and params[4]["W"] is None and params[4]["b"] is None
    assert len(jax.tree.leaves(params)) == 3  # W, b of layer 0, b of layer 2
    params = jax.tree.map(lambda a: a + 0.1, params)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)))
    t = jnp.array([0, 2, 1, 1])
    assert_gradients(model, losses.softmax_cross_entropy, params, x, t)
    # The sum, explicitly: the untied model's gradients at the three slots.
    full = jax.tree.map(lambda a: a, params)
    full = (full[0], (), {**full[2], "W": full[0]["W"]}, (), {"W": full[0]["W"], "b": full[0]["b"]})
    _, g_full = purenet.backprop(body, losses.softmax_cross_entropy)(full, x, t)
    _, g = purenet.backprop(model, losses.softmax_cross_entropy)(params, x, t)
    assert rel(g[0]["W"], g_full[0]["W"] + g_full[2]["W"] + g_full[4]["W"]) <= 1e-14
    assert rel(g[0]["b"], g_full[0]["b"] + g_full[4]["b"]) <= 1e-14


def test_tied_bad_input():
    body = L.serial(L.dense(3), L.dense(4))
    with pytest.raises(ValueError, match=r"ties\[0\]: expected arrays of one shape"):
        L.tied(body, [((0, "W"), (1, "W"))]).init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match=r"ties: expected paths into the model's params"):
        L.tied(body, [((0, "W"), (2, "W"))]).init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match=r"ties\[0\]: expected a group of at least two"):
        L.tied(body, [((0, "W"),)])
    with pytest.raises(ValueError, match=r"ties: expected a non-empty sequence"):
        L.tied(body, [])
    model = L.tied(L.serial(L.dense(3), L.dense(3)), [((0, "W"), (1, "W"))])
    _, params, _ = model.init(jax.random.key(0), (3,))
    filled = (params[0], {**params[1], "W": params[0]["W"]})
    with pytest.raises(ValueError, match=r"params\[1\]\['W'\].*expected None"):
        model.forward(filled, jnp.ones((2, 3)))


# ---------------------------------------------------------------- bad input


def test_gpt_bad_input():
    with pytest.raises(ValueError, match="heads: expected a number of heads that divides width"):
        models.gpt(11, 8, 1, 3, 8)
    for kwargs, name in (
        (dict(vocab_size=0), "vocab_size"),
        (dict(depth=-1), "depth"),
        (dict(dropout=1.0), "dropout"),
        (dict(eps=0.0), "eps"),
        (dict(activation="tanh"), "activation"),
    ):
        with pytest.raises((ValueError, TypeError), match=name):
            models.gpt(**{**dict(vocab_size=11, context=8, depth=1, heads=2, width=8), **kwargs})
    with pytest.raises(TypeError, match="tied"):
        models.gpt(11, 8, 1, 2, 8, tied="yes")
    _, params, _ = SMALL.init(jax.random.key(0), (8,))
    with pytest.raises(
        ValueError,
        match=r"x: expected token ids in \[0, vocab_size\) = \[0, 11\), "
        r"got id 11",
    ):
        SMALL.forward(params, jnp.array([[1, 11]]))
    with pytest.raises(ValueError, match=r"got id -1"):
        SMALL.forward(params, jnp.array([[-1, 2]]))
    with pytest.raises(ValueError, match=r"x: expected at most context = 8 positions.*T = 9"):
        SMALL.forward(params, jnp.zeros((1, 9), jnp.int32))
    with pytest.raises(ValueError, match="x: expected integer token ids"):
        SMALL.forward(params, jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"in_shape: expected \(T,\) with T <= context"):
        SMALL.init(jax.random.key(0), (9,))


# --------------------------------------------------------------- generation

GEN = models.gpt(13, 16, 2, 2, 8)


def gen_params(seed=0):
    _, params, _ = GEN.init(jax.random.key(seed), (16,), jnp.float64)
    # Larger weights than GPT-2's initialisation: logits far from uniform.
    return jax.tree.map(lambda a: a * 20 if a.ndim == 2 else a, params)


def test_cached_logits_equal_full_forward(x64):
    params = gen_params()
    ids, _ = small_batch(3, 16, 4)
    ids = ids % 13
    full = GEN.forward(params, ids)[0]
    cached = generate_module._cached_logits(GPTConfig.of(GEN), params, ids)
    err = rel(cached, full)
    print(f"\nlogits through the key-value cache vs full forward: {err:.2e}")
    assert err <= 1e-12


def test_greedy_generation_equals_full_recomputation(x64):
    params = gen_params()
    prompt = jnp.array([[1, 2, 3], [4, 5, 6]])
    out = models.generate(GEN, params, prompt, 10, key=jax.random.key(0), top_k=1)
    assert out.shape == (2, 13)
    # The rerun of the whole context at each step (padded to one length, which
    # the causal mask makes harmless: position t - 1 sees nothing after it).
    forward = jax.jit(lambda ids: GEN.forward(params, ids)[0])
    ids = jnp.zeros((2, 13), prompt.dtype).at[:, :3].set(prompt)
    for t in range(3, 13):
        ids = ids.at[:, t].set(jnp.argmax(forward(ids)[:, t - 1], axis=-1))
    np.testing.assert_array_equal(out, ids)
    assert len(set(np.asarray(out[:, 3:]).ravel().tolist())) > 1  # not a constant
    one = models.generate(GEN, params, prompt[0], 10, key=jax.random.key(5), top_k=1)
    np.testing.assert_array_equal(one, ids[0])
    np.testing.assert_array_equal(
        models.generate(GEN, params, prompt, 0, key=jax.random.key(0)), prompt
    )


def test_sampling_top_k_and_temperature(x64):
    params = gen_params(1)
    prompt = jnp.zeros((64, 1), jnp.int32)
    logits = GEN.forward(params, prompt)[0][:, -1][0]
    order = np.argsort(-np.asarray(logits))
    key = jax.random.key(7)
    first = models.generate(GEN, params, prompt, 1, key=key, top_k=3)[:, 1]
    assert set(np.asarray(first).tolist()) <= set(order[:3].tolist())
    assert len(set(np.asarray(first).tolist())) > 1
    again = models.generate(GEN, params, prompt, 1, key=key, top_k=3)[:, 1]
    np.testing.assert_array_equal(first, again)  # same key, same tokens
    cold = models.generate(GEN, params, prompt, 1, key=key, temperature=1e-6)[:, 1]
    assert set(np.asarray(cold).tolist()) == {int(order[0])}
    hot = models.generate(GEN, params, prompt, 1, key=key, temperature=1e3)[:, 1]
    assert len(set(np.asarray(hot).tolist())) > 5  # near uniform over 13 ids


def test_generate_bad_input():
    params = gen_params()
    k = jax.random.key(0)
    p = jnp.array([[1, 2]])
    cases = [
        (dict(prompt=jnp.zeros((1, 0), jnp.int32)), "prompt: expected at least one token"),
        (dict(prompt=jnp.zeros((1, 17), jnp.int32)), "prompt: expected at most context = 16"),
        (dict(prompt=jnp.array([[1, 13]])), r"prompt: expected token ids in \[0, vocab_size\)"),
        (dict(steps=-1), "steps: expected an int >= 0"),
        (dict(steps=15), "steps: expected at most context - len"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_k=0), r"top_k: expected None or an int in \[1, vocab_size = 13\]"),
        (dict(top_k=14), "top_k"),
    ]
    for change, message in cases:
        args = {"prompt": p, "steps": 3, **change}
        with pytest.raises(ValueError, match=message):
            models.generate(GEN, params, args.pop("prompt"), args.pop("steps"), key=k, **args)
    with pytest.raises(TypeError, match="model: expected a model made by purenet.models.gpt"):
        models.generate(L.dense(3), params, p, 3, key=k)
    with pytest.raises(TypeError, match="key"):
        models.generate(GEN, params, p, 3, key=0)
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\]"):
        models.generate(GEN, SMALL.init(jax.random.key(0), (8,))[1], p, 3, key=k)


# ------------------------------------------------------------ training pieces


def test_accumulated_micro_batches_give_the_large_batch_update(x64):
    params = perturbed(SMALL, 3)
    ids, t = small_batch(8, 8, 3)
    grad_fn = purenet.backprop(SMALL, LOSS)
    opt = optim.adamw(1e-2, weight_decay=0.1)
    state = opt.init(params)
    J1, g1 = jax.jit(grad_fn)(params, ids, t)
    J4, g4 = jax.jit(train.accumulate_gradients(grad_fn, 4))(params, ids, t)
    assert abs(float(J4 - J1)) <= 1e-14 * abs(float(J1))
    assert rel(g4, g1) <= 1e-13
    assert rel(opt.step(params, g4, state)[0], opt.step(params, g1, state)[0]) <= 1e-13
    _, g_one = jax.jit(grad_fn)(params, ids[:2], t[:2])
    assert rel(g_one, g1) > 1e-3  # one micro-batch alone is not the batch
    with pytest.raises(ValueError, match="micro_batches = 3"):
        train.accumulate_gradients(grad_fn, 3)(params, ids, t)


def test_decay_mask():
    _, params, _ = SMALL_UNTIED.init(jax.random.key(0), (8,))
    mask = models.gpt_decay_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    (ln1, attn, _), (ln2, fc, _, proj, _) = mask[3][0]
    assert not mask[0]["W"] and not mask[1]["W"]  # embeddings
    assert all(attn[k] for k in ("Wq", "Wk", "Wv", "Wo")) and not attn["bq"]
    assert fc["W"] and proj["W"] and not fc["b"] and not ln1["gamma"] and not ln2["beta"]
    assert mask[5]["W"] and not mask[4]["gamma"]
    tied_mask = models.gpt_decay_mask(SMALL.init(jax.random.key(0), (8,))[1])
    assert tied_mask[5]["W"] is None
    assert sum(jax.tree.leaves(tied_mask)) == 4 + 2  # Wq, Wk, Wv, Wo, two MLP matrices


# ----------------------------------------------------- the model carries its config


def test_config_is_read_from_the_model_and_survives_replace():
    model = models.gpt(13, 16, 2, 2, 8, tied=False, dropout=0.1, eps=1e-6, flash=True)
    assert model.name == "gpt(13, 16, 2, 2, 8, tied=False, dropout=0.1, eps=1e-06, flash=True)"
    config = models.gpt_config(model)
    assert models.gpt(**config).name == model.name
    # A rebuilt layer (another backward, a wrapped forward) keeps its configuration.
    rebuilt = model._replace(backward=lambda params, cache, dy: model.backward(params, cache, dy))
    rebuilt = rebuilt._replace(forward=lambda params, x, **ctx: model.forward(params, x, **ctx))
    assert models.gpt_config(rebuilt) == config
    assert GPTConfig.of(rebuilt) == GPTConfig(**config)
    renamed = model._replace(name="my_gpt")
    with pytest.raises(TypeError, match="model: expected a model made by purenet.models.gpt"):
        models.gpt_config(renamed)


def test_generate_on_a_model_rebuilt_with_replace():
    params = gen_params()
    prompt = jnp.array([[1, 2, 3], [4, 5, 6]])
    rebuilt = GEN._replace(backward=lambda params, cache, dy: GEN.backward(params, cache, dy))
    key = jax.random.key(0)
    out = models.generate(rebuilt, params, prompt, 5, key=key, top_k=3)
    np.testing.assert_array_equal(out, models.generate(GEN, params, prompt, 5, key=key, top_k=3))


def test_unpack_and_pack_name_the_layout():
    from purenet.models.gpt import pack, unpack

    _, params, _ = SMALL_UNTIED.init(jax.random.key(0), (8,))
    parts = unpack(params)
    assert len(parts.blocks) == 2
    assert parts.blocks[1].attn is params[3][1][0][1]
    assert parts.head is params[5] and parts.wte is params[0]
    assert jax.tree.structure(pack(parts)) == jax.tree.structure(params)
    packed = jax.tree.leaves(pack(parts))
    assert all(a is b for a, b in zip(packed, jax.tree.leaves(params), strict=True))
