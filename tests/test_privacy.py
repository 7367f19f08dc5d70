"""purenet.privacy: the Renyi-DP accountant of the sampled Gaussian mechanism.

Known answers (the Gaussian mechanism, order 2 in closed form), the fractional
series against the integer sum where both apply, properties of epsilon, and
Google's `dp_accounting` as the reference where it is installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purenet import privacy


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
