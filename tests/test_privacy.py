"""purenet.privacy: DP-SGD and the Renyi-DP accountant of the sampled Gaussian mechanism.

The accountant: known answers (the Gaussian mechanism, order 2 in closed
form), the fractional series against the integer sum where both apply,
properties of epsilon, and Google's `dp_accounting` as the reference where it
is installed. DP-SGD: the clipped mean against `jax.grad` of each example's
own loss clipped with NumPy, the noise's distribution, Poisson sampling, `fit`
with privacy, and Opacus's step where PyTorch and Opacus are installed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import purenet
from purenet import layers as L
from purenet import losses, optim, privacy
from purenet.train import fit


def test_full_batch_is_the_gaussian_mechanism():
    # q = 1: every step is the Gaussian mechanism, RDP(alpha) = alpha / (2 sigma^2)
    orders = np.array([1.5, 2.0, 7.3, 32.0])
    np.testing.assert_allclose(privacy.rdp(1.7, 1.0, orders), orders / (2 * 1.7**2), rtol=1e-15)


@pytest.mark.parametrize("sigma, q", [(0.8, 0.01), (1.1, 0.3), (4.0, 0.999)])
def test_order_two_in_closed_form(sigma, q):
    # A_2 = (1-q)^2 + 2q(1-q) + q^2 e^(1/sigma^2) = 1 + q^2 (e^(1/sigma^2) - 1)
    expected = math.log1p(q**2 * math.expm1(1 / sigma**2))
    np.testing.assert_allclose(privacy.rdp(sigma, q, [2.0]), [expected], rtol=1e-12)


@pytest.mark.parametrize("sigma, q", [(0.9, 0.01), (2.0, 0.1), (1.2, 0.5)])
def test_fractional_series_meets_the_integer_sum(sigma, q):
    # orders just off an integer go through the series of Section 3.3
    for alpha in (2, 3, 8):
        near = privacy.rdp(sigma, q, [alpha - 1e-7, alpha, alpha + 1e-7])
        np.testing.assert_allclose(near, near[1], rtol=1e-5)


def test_no_noise_no_privacy_and_no_steps_no_cost():
    assert privacy.epsilon(0.0, 0.01, 10, 1e-5) == math.inf
    assert privacy.epsilon(1.0, 0.01, 0, 1e-5) == 0.0


@settings(max_examples=20)
@given(
    sigma=st.floats(0.5, 8.0),
    q=st.floats(1e-4, 1.0),
    steps=st.integers(1, 5000),
)
def test_epsilon_grows_with_steps_and_shrinks_with_noise(sigma, q, steps):
    eps = privacy.epsilon(sigma, q, steps, 1e-5)
    assert 0 <= eps < math.inf
    assert privacy.epsilon(sigma, q, steps + 100, 1e-5) >= eps
    assert privacy.epsilon(sigma * 1.5, q, steps, 1e-5) <= eps
    assert privacy.epsilon(sigma, q, steps, 1e-3) <= eps


def test_abadi_mnist_setting():
    # Abadi et al. 2016's MNIST: sigma 1.1, batch 256 of 60,000, 10,000 steps
    # (about 43 epochs); their moments accountant reported about 2 at delta 1e-5;
    # the RDP accountant of dp_accounting 0.6.0 gives 2.16159... (measured).
    assert privacy.epsilon(1.1, 256 / 60_000, 10_000, 1e-5) == pytest.approx(2.1615948, abs=1e-6)


CASES = [
    (1.1, 256 / 60000, 10000, 1e-5),
    (0.7, 0.01, 1000, 1e-5),
    (4.0, 0.1, 100, 1e-6),
    (0.5, 1.0, 10, 1e-5),
    (2.0, 0.5, 3, 1e-3),
    (1.0, 0.001, 1, 1e-5),
    (0.3, 0.02, 50, 1e-5),
    (10.0, 0.9, 5, 1e-5),
]


@pytest.mark.parametrize("sigma, q, steps, delta", CASES)
def test_matches_dp_accounting(sigma, q, steps, delta):
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant(list(privacy.DEFAULT_ORDERS))
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(event, steps)
    expected = accountant.get_epsilon(delta)
    assert privacy.epsilon(sigma, q, steps, delta) == pytest.approx(expected, rel=1e-9)


def test_noise_multiplier_for_meets_the_budget():
    q, steps, delta = 256 / 60_000, 2_000, 1e-5
    for target in (0.5, 2.0, 8.0):
        sigma = privacy.noise_multiplier_for(target, q, steps, delta)
        eps = privacy.epsilon(sigma, q, steps, delta)
        assert target - 0.01 <= eps <= target


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: privacy.epsilon(-1.0, 0.1, 10, 1e-5), "noise_multiplier"),
        (lambda: privacy.epsilon(1.0, 0.0, 10, 1e-5), "sample_rate"),
        (lambda: privacy.epsilon(1.0, 1.5, 10, 1e-5), "sample_rate"),
        (lambda: privacy.epsilon(1.0, 0.1, -1, 1e-5), "steps"),
        (lambda: privacy.epsilon(1.0, 0.1, 2.5, 1e-5), "steps"),
        (lambda: privacy.epsilon(1.0, 0.1, 10, 0.0), "delta"),
        (lambda: privacy.epsilon(1.0, 0.1, 10, 1.0), "delta"),
        (lambda: privacy.epsilon(1.0, 0.1, 10, 1e-5, orders=[0.5, 2]), "orders"),
        (lambda: privacy.noise_multiplier_for(0.0, 0.1, 10, 1e-5), "target_epsilon"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_delta_not_below_one_over_n_is_warned_about():
    with pytest.warns(UserWarning, match="1/dataset_size"):
        privacy.epsilon(1.0, 0.01, 10, 1e-3, dataset_size=1000)


# ------------------------------------------------------------------- DP-SGD

M = 12


def _mlp():
    model = L.serial(L.dense(5), L.tanh(), L.dense(3))
    _, params, _ = model.init(jax.random.key(1), (4,), jnp.float64)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((M, 4)) * 3)
    t = jnp.asarray(rng.integers(0, 3, M))
    return model, params, x, t


def _clipped_mean_reference(model, loss, params, x, t, clip, divisor):
    """jax.grad of each example's own loss, clipped with NumPy, summed, divided."""
    J = purenet.objective(model, loss)
    per = jax.vmap(lambda xi, ti: jax.grad(J)(params, xi[None], ti[None]))(x, t)
    leaves, treedef = jax.tree.flatten(per)
    flat = np.concatenate([np.asarray(a).reshape(len(x), -1) for a in leaves], axis=1)
    norms = np.linalg.norm(flat, axis=1)
    factor = np.minimum(1.0, clip / norms)
    summed = [np.tensordot(factor, np.asarray(a), axes=1) / divisor for a in leaves]
    return jax.tree.unflatten(treedef, summed), norms


@pytest.fixture(scope="module")
def dp_mlp():
    jax.config.update("jax_enable_x64", True)
    return _mlp()


def test_without_noise_is_the_clipped_mean_of_jax_grads(dp_mlp):
    model, params, x, t = dp_mlp
    loss = losses.softmax_cross_entropy
    reference, norms = _clipped_mean_reference(model, loss, params, x, t, 2.0, M)
    assert np.sum(norms > 2.0) >= 3 and np.sum(norms < 2.0) >= 3  # both kinds of example
    f = jax.jit(privacy.dp_gradient(model, loss, l2_clip=2.0, noise_multiplier=0.0))
    J, grads = f(params, x, t)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14), grads, reference
    )
    assert J == pytest.approx(float(purenet.objective(model, loss)(params, x, t)), rel=1e-12)


def test_a_large_clip_without_noise_is_backprop(dp_mlp):
    model, params, x, t = dp_mlp
    loss = losses.softmax_cross_entropy
    _, expected = purenet.backprop(model, loss)(params, x, t)
    _, grads = privacy.dp_gradient(model, loss, l2_clip=1e6, noise_multiplier=0.0)(params, x, t)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), grads, expected)


def test_noise_has_the_stated_standard_deviation():
    model = L.dense(200)
    _, params, _ = model.init(jax.random.key(0), (50,), jnp.float64)
    x = jnp.ones((8, 50))
    t = jnp.zeros((8, 200))
    f = privacy.dp_gradient(model, losses.mse, l2_clip=2.0, noise_multiplier=1.5)
    _, clean = privacy.dp_gradient(model, losses.mse, l2_clip=2.0, noise_multiplier=0.0)(
        params, x, t
    )
    _, noisy = f(params, x, t, key=jax.random.key(3), batch_size=4)
    _, again = f(params, x, t, key=jax.random.key(3), batch_size=4)
    noise = np.asarray(noisy["W"]) - np.asarray(clean["W"]) * 8 / 4
    # 10,000 draws of N(0, (sigma C / batch_size)^2): the sample std within 3%
    assert np.std(noise) == pytest.approx(1.5 * 2.0 / 4, rel=0.03)
    assert abs(np.mean(noise)) < 4 * 0.75 / 100
    np.testing.assert_array_equal(noisy["W"], again["W"])  # same key, same noise


def test_rows_outside_the_sample_contribute_nothing(dp_mlp):
    model, params, x, t = dp_mlp
    loss = losses.softmax_cross_entropy
    f = privacy.dp_gradient(model, loss, l2_clip=0.5, noise_multiplier=0.0)
    sampled = jnp.arange(M) % 3 != 0
    garbage = x.at[~np.asarray(sampled)].set(1e6)
    J, grads = f(params, garbage, t, sampled=sampled, batch_size=5.0)
    J_sub, sub = f(params, x[sampled], t[sampled], batch_size=5.0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), grads, sub)
    assert J == pytest.approx(float(J_sub), rel=1e-12)


def test_under_vmap_over_clips(dp_mlp):
    model, params, x, t = dp_mlp
    loss = losses.softmax_cross_entropy
    clips = jnp.array([0.5, 2.0, 100.0])

    def one(clip):
        return privacy.dp_gradient(model, loss, l2_clip=clip, noise_multiplier=0.0)(params, x, t)

    _, batched = jax.vmap(one)(clips)
    for i, clip in enumerate(np.asarray(clips)):
        reference, _ = _clipped_mean_reference(model, loss, params, x, t, clip, M)
        np.testing.assert_allclose(batched[2]["W"][i], reference[2]["W"], rtol=1e-10)


def test_dp_gradient_refuses_bad_input(dp_mlp):
    model, params, x, t = dp_mlp
    loss = losses.softmax_cross_entropy
    with pytest.raises(ValueError, match="l2_clip"):
        privacy.dp_gradient(model, loss, l2_clip=0.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        privacy.dp_gradient(model, loss, l2_clip=1.0, noise_multiplier=-0.5)
    f = privacy.dp_gradient(model, loss, l2_clip=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="key"):
        f(params, x, t)
    with pytest.raises(ValueError, match="sampled"):
        f(params, x, t, key=jax.random.key(0), sampled=jnp.ones(M))
    norm_model = L.serial(L.dense(5), L.batchnorm(), L.dense(3))
    _, p, s = norm_model.init(jax.random.key(0), (4,), jnp.float64)
    g = privacy.dp_gradient(norm_model, loss, l2_clip=1.0, noise_multiplier=0.0)
    with pytest.raises(ValueError, match="batchnorm|batch norm"):
        g(p, x, t, state=s, train=True)


def test_poisson_sample_rates_and_padding():
    n, q, capacity = 1000, 0.05, 120
    keys = jax.random.split(jax.random.key(0), 400)
    rows, sampled = jax.vmap(lambda k: privacy.poisson_sample(k, n, q, capacity))(keys)
    counts = np.asarray(sampled).sum(axis=1)
    assert counts.mean() == pytest.approx(n * q, rel=0.03)
    assert counts.std() == pytest.approx(np.sqrt(n * q * (1 - q)), rel=0.15)
    hits = np.zeros(n)
    for r, s in zip(np.asarray(rows), np.asarray(sampled), strict=True):
        chosen = r[s]
        assert np.all(np.diff(chosen) > 0)  # distinct, increasing
        hits[chosen] += 1
    # every example is drawn independently with probability q
    assert hits.mean() / len(keys) == pytest.approx(q, rel=0.03)
    assert privacy.max_batch_size(60_000, 256 / 60_000) > 256


def test_fit_with_privacy_trains_and_reports_epsilon():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((400, 2)), jnp.float32)
    t = jnp.asarray((x[:, 0] + x[:, 1] > 0).astype(np.int32))
    model = L.serial(L.dense(8), L.tanh(), L.dense(2))
    _, params, state = model.init(jax.random.key(0), (2,))
    settings = privacy.dp_sgd(l2_clip=1.0, noise_multiplier=1.0, delta=1e-4)
    result = fit(
        model,
        losses.softmax_cross_entropy,
        optim.sgd(0.5),
        params,
        x,
        t,
        key=jax.random.key(1),
        epochs=3,
        batch_size=40,
        state=state,
        privacy=settings,
    )
    eps = result.history["epsilon"]
    expected = [privacy.epsilon(1.0, 0.1, 10 * (e + 1), 1e-4) for e in range(3)]
    np.testing.assert_allclose(eps, expected, rtol=1e-12)
    assert result.history["train_metric"][-1] > 0.85
    with pytest.warns(UserWarning, match="1/dataset_size"):
        fit(
            model,
            losses.softmax_cross_entropy,
            optim.sgd(0.5),
            params,
            x,
            t,
            key=jax.random.key(1),
            epochs=1,
            batch_size=40,
            privacy=privacy.dp_sgd(l2_clip=1.0, noise_multiplier=1.0, delta=0.01),
        )


def test_one_step_with_noise_off_is_opacus_step():
    torch = pytest.importorskip("torch")
    opacus = pytest.importorskip("opacus")
    model, params, x, t = _mlp()
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()
    with torch.no_grad():
        for layer, p in zip((net[0], net[2]), (params[0], params[2]), strict=True):
            layer.weight.copy_(torch.tensor(np.asarray(p["W"]).T))
            layer.bias.copy_(torch.tensor(np.asarray(p["b"])))
    sgd = torch.optim.SGD(net.parameters(), lr=1.0)
    data = torch.utils.data.TensorDataset(torch.tensor(np.asarray(x)), torch.tensor(np.asarray(t)))
    loader = torch.utils.data.DataLoader(data, batch_size=M)
    engine = opacus.PrivacyEngine()
    net, sgd, loader = engine.make_private(
        module=net,
        optimizer=sgd,
        data_loader=loader,
        noise_multiplier=0.0,
        max_grad_norm=0.5,
        poisson_sampling=False,
    )
    xb, tb = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(t))
    sgd.zero_grad()
    torch.nn.functional.cross_entropy(net(xb), tb).backward()
    sgd.step()
    _, grads = privacy.dp_gradient(
        model, losses.softmax_cross_entropy, l2_clip=0.5, noise_multiplier=0.0
    )(params, x, t)
    new = optim.sgd(1.0).step(params, grads, optim.sgd(1.0).init(params))[0]
    got = net._module[0].weight.detach().numpy().T
    # Opacus divides by |g_i| + 1e-6: the two agree to about 1e-6 relative
    np.testing.assert_allclose(got, np.asarray(new[0]["W"]), rtol=1e-5)
