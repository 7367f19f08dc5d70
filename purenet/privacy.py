"""Differentially private training: DP-SGD and the privacy it spends.

**DP-SGD** (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang 2016,
"Deep Learning with Differential Privacy", Algorithm 1). Each step takes a
batch drawn by Poisson sampling (every example of the `n` independently with
probability `q`), clips each example's gradient to global L2 norm `C`, sums,
adds Gaussian noise and divides by the expected batch size `q n`:

```text
g_i   = grad of example i's own loss            (purenet.per_example)
g_i  <- g_i * min(1, C / |g_i|)                  (clip to global norm C)
g     = (sum_i g_i + N(0, sigma^2 C^2 I)) / (q n)
```

`sigma` is the *noise multiplier*. The sum's sensitivity to adding or removing
one example is `C`, so each step is the sampled Gaussian mechanism with
sampling rate `q` and noise `sigma`.

**Accounting.** [`epsilon`][purenet.privacy.epsilon] is the `(epsilon, delta)`
spent by `steps` such steps, by the Renyi-DP accountant (Mironov 2017):
each step's Renyi divergence at order `alpha` is that of the sampled Gaussian
mechanism (Mironov, Talwar & Zhang 2019, "Renyi Differential Privacy of the
Sampled Gaussian Mechanism", Sections 3.2 and 3.3), RDP composes by addition
over steps, and the conversion to `(epsilon, delta)` is the improved one of
Balle, Barthe, Gaboardi, Hsu & Sato 2020 (Proposition 12 of
arXiv:2004.00010 v4), minimised over a grid of orders. This is what Google's
`dp_accounting.rdp.RdpAccountant` and Opacus's `RDPAccountant` compute; the
tests compare with `dp_accounting` when it is installed.

**What the guarantee assumes.** Batches drawn by Poisson sampling with rate
`q` (not shuffled fixed-size batches, for which this accounting is not
proven); each individual's data in at most one example; clipping of each
example's *whole* gradient (all layers together); noise from a source the
adversary cannot predict. `jax.random` is a counter-based generator, not a
cryptographically secure one, and floating-point Gaussian sampling leaks
through the low bits of its output (Mironov 2012, "On Significance of the
Least Significant Bits for Differential Privacy"): for a deployment, use a
secure source (as Opacus's `secure_mode` does); for research, this is the
standard practice of the field. `delta` should be well below `1 / n`: a
`delta` of `1 / n` is met by publishing one random example in the clear.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet import _checks, per_example
from purenet.cost import check_model_loss
from purenet.layers import Layer, call_forward
from purenet.losses import Loss

DEFAULT_ORDERS: tuple[float, ...] = (
    tuple(1 + k / 10 for k in range(1, 100)) + tuple(range(11, 64)) + (128, 256, 512, 1024)
)
"""Renyi orders `alpha` over which [`epsilon`][purenet.privacy.epsilon]
minimises: 1.1 to 10.9 in steps of 0.1, the integers 11 to 63, and 128 to
1024 (the grid of `dp_accounting`'s `RdpAccountant`)."""


# ------------------------------------------------------------ log-space sums


def _log_add(a: float, b: float) -> float:
    """`log(exp(a) + exp(b))` without overflow."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _log_erfc(x: float) -> float:
    """`log(erfc(x))`, with the asymptotic series where `erfc` underflows."""
    value = math.erfc(x)
    if value > 0:
        return math.log(value)
    # erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4)), x large
    return (
        -x * x
        - math.log(x)
        - 0.5 * math.log(math.pi)
        + math.log1p(-1 / (2 * x * x) + 3 / (4 * x**4))
    )


def _log_binomial(alpha: float, k: int) -> float:
    """`log |C(alpha, k)|` for real `alpha > 0` and integer `k >= 0` (the
    generalised binomial coefficient `alpha (alpha-1) ... (alpha-k+1) / k!`;
    `lgamma` gives the logarithm of `|Gamma|`)."""
    return math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)


# ------------------------------------------------ RDP of the sampled Gaussian


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """`log A_alpha` for an integer order (Mironov et al. 2019, Section 3.2):
    `A_alpha = sum_k C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2 - k) / (2 sigma^2))`."""
    total = -math.inf
    for k in range(alpha + 1):
        term = (
            math.lgamma(alpha + 1)
            - math.lgamma(k + 1)
            - math.lgamma(alpha - k + 1)
            + k * math.log(q)
            + (alpha - k) * math.log1p(-q)
            + (k * k - k) / (2 * sigma**2)
        )
        total = _log_add(total, term)
    return total


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """`log A_alpha` for a fractional order (Mironov et al. 2019, Section 3.3):
    the integral split at `z0 = sigma^2 log(1/q - 1) + 1/2`, each half a series
    over `k` in the generalised binomial coefficients `C(alpha, k)`.

    Past `k = alpha` those coefficients alternate in sign; the terms are
    summed in absolute value, which bounds `A_alpha` from above (so epsilon
    from below is never under-reported) and avoids cancellation, as
    `dp_accounting` does. The series stops when both halves' terms decrease
    and lie `e^30` below the total; an order whose series has not converged
    after `_MAX_TERMS` terms gives `inf` (it is left out of the minimum)."""
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    scale = math.sqrt(2) * sigma
    total = first_sum = second_sum = -math.inf
    last_first = last_second = -math.inf
    for k in range(_MAX_TERMS):
        log_binom = _log_binomial(alpha, k)
        j = alpha - k
        first = (
            log_binom
            + k * math.log(q)
            + j * math.log1p(-q)
            + (k * k - k) / (2 * sigma**2)
            + math.log(0.5)
            + _log_erfc((k - z0) / scale)
        )
        second = (
            log_binom
            + j * math.log(q)
            + k * math.log1p(-q)
            + (j * j - j) / (2 * sigma**2)
            + math.log(0.5)
            + _log_erfc((z0 - j) / scale)
        )
        first_sum, second_sum = _log_add(first_sum, first), _log_add(second_sum, second)
        total = _log_add(first_sum, second_sum)
        if first < last_first and second < last_second and max(first, second) < total - 30:
            return total
        last_first, last_second = first, second
    return math.inf


_MAX_TERMS = 1000


def _rdp_one_order(q: float, sigma: float, alpha: float) -> float:
    if q == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if q == 1:
        return alpha / (2 * sigma**2)  # the Gaussian mechanism itself
    if math.isinf(alpha):
        return math.inf
    if float(alpha).is_integer():
        log_a = _log_a_integer(q, sigma, int(alpha))
    else:
        log_a = _log_a_fractional(q, sigma, float(alpha))
    return log_a / (alpha - 1)


def _check_accounting(noise_multiplier, sample_rate):
    sigma = _checks.nonnegative("noise_multiplier", noise_multiplier)
    q = _checks.number_in("sample_rate", sample_rate, 0.0, 1.0, low_open=True)
    return sigma, q


def _as_orders(orders) -> np.ndarray:
    try:
        values = np.asarray(orders, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        _checks.fail_type("orders", "a sequence of real numbers above 1", repr(orders))
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 1):
        _checks.fail("orders", "a non-empty sequence of finite numbers above 1", repr(orders))
    return values


def rdp(
    noise_multiplier: float, sample_rate: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> np.ndarray:
    """The Renyi-DP of one step of the sampled Gaussian mechanism, per order.

    Args:
      noise_multiplier: `sigma`, the noise's standard deviation over the clip norm.
      sample_rate: `q`, the probability that an example is in a batch (Poisson sampling).
      orders: Renyi orders `alpha > 1`.

    Returns:
      A float64 array of `RDP(alpha)`, one per order (compose `steps` steps by
      multiplying by `steps`).
    """
    sigma, q = _check_accounting(noise_multiplier, sample_rate)
    return np.array([_rdp_one_order(q, sigma, float(a)) for a in _as_orders(orders)])


def _epsilon_from_rdp(orders: np.ndarray, rdp_values: np.ndarray, delta: float):
    """The smallest epsilon over the orders (Balle et al. 2020, Prop. 12):
    `eps(alpha) = RDP(alpha) + log(1 - 1/alpha) - log(delta * alpha) / (alpha - 1)`."""
    best, best_order = math.inf, math.nan
    for alpha, r in zip(orders, rdp_values, strict=True):
        if r <= 0 or delta**2 + math.expm1(-r) > 0:
            # no privacy spent, or delta already met through the KL bound
            # (delta <= sqrt(1 - exp(-KL)), and KL <= RDP(alpha) for alpha > 1)
            eps = 0.0
        else:
            eps = r + math.log1p(-1 / alpha) - math.log(delta * alpha) / (alpha - 1)
        if eps < best:
            best, best_order = max(eps, 0.0), float(alpha)
    return best, best_order


def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    orders: Sequence[float] = DEFAULT_ORDERS,
    dataset_size: int | None = None,
) -> float:
    """The privacy `epsilon` spent by `steps` steps of DP-SGD, at `delta`.

    Renyi-DP accounting of the sampled Gaussian mechanism (module docstring):
    `epsilon = min_alpha [steps * RDP_q,sigma(alpha) + log(1 - 1/alpha)
    - log(delta alpha) / (alpha - 1)]`.

    Args:
      noise_multiplier: `sigma >= 0` (0 gives no privacy: `inf`).
      sample_rate: `q` in `(0, 1]`: the Poisson sampling rate, the expected
        batch size over the data set's size.
      steps: how many steps were taken (`>= 0`).
      delta: in `(0, 1)`.
      orders: the Renyi orders to minimise over.
      dataset_size: the data set's size `n`; when given, a `delta` not below
        `1 / n` is warned about (the guarantee is then void: publishing one
        random example in the clear meets it).

    Returns:
      `epsilon` as a Python float (`inf` without noise).

    Examples:
      >>> round(epsilon(1.1, 256 / 60000, 10_000, 1e-5), 2)  # Abadi et al.'s MNIST setting
      2.16
    """
    sigma, q = _check_accounting(noise_multiplier, sample_rate)
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        _checks.fail("steps", "a non-negative int", repr(steps))
    delta = _checks.number_in("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
    if dataset_size is not None:
        n = _checks.positive_int("dataset_size", dataset_size)
        if delta >= 1 / n:
            warnings.warn(
                f"delta={delta:g} is not below 1/dataset_size = {1 / n:g}: the (epsilon, delta) "
                "guarantee is void at this delta (choose delta << 1/n, e.g. 1e-5 for 60,000)",
                stacklevel=2,
            )
    order_values = _as_orders(orders)
    if steps == 0:
        return 0.0
    per_step = np.array([_rdp_one_order(q, sigma, float(a)) for a in order_values])
    return float(_epsilon_from_rdp(order_values, steps * per_step, delta)[0])


def noise_multiplier_for(
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    orders: Sequence[float] = DEFAULT_ORDERS,
    tolerance: float = 0.01,
) -> float:
    """The smallest noise multiplier whose `steps` steps spend at most
    `target_epsilon` (bisection on [`epsilon`][purenet.privacy.epsilon], as
    Opacus's `get_noise_multiplier`), to within `tolerance` in epsilon.

    Args:
      target_epsilon: the budget, `> 0`.
      sample_rate, steps, delta, orders: as in [`epsilon`][purenet.privacy.epsilon].
      tolerance: stop when the epsilon of the answer is within this of the target.

    Returns:
      `sigma` as a Python float; its epsilon is at most `target_epsilon`.
    """
    target = _checks.positive("target_epsilon", target_epsilon)
    tolerance = _checks.positive("tolerance", tolerance)
    _check_accounting(1.0, sample_rate)
    low, high = 0.0, 1.0
    while epsilon(high, sample_rate, steps, delta, orders=orders) > target:
        low, high = high, 2 * high
        if high > 1e6:
            _checks.fail(
                "target_epsilon",
                "a budget some noise can meet at this sample rate and step count",
                repr(target_epsilon),
            )
    while True:
        middle = (low + high) / 2
        eps = epsilon(middle, sample_rate, steps, delta, orders=orders)
        if eps > target:
            low = middle
        else:
            high = middle
            if target - eps < tolerance:
                return high
        if high - low < 1e-9:
            return high


# ------------------------------------------------------------------- DP-SGD


def _check_dp(l2_clip, noise_multiplier):
    l2_clip = _checks.positive("l2_clip", l2_clip)
    noise_multiplier = _checks.nonnegative("noise_multiplier", noise_multiplier)
    return l2_clip, noise_multiplier


def _scale_rows(tree, v):
    """Row `i` of every leaf of `tree` times `v[i]`."""
    return jax.tree.map(lambda a: a * v.reshape(v.shape + (1,) * (a.ndim - 1)), tree)


def dp_gradient(model: Layer, loss: Loss, *, l2_clip: float, noise_multiplier: float) -> Callable:
    """The DP-SGD gradient (Abadi et al. 2016, Algorithm 1): each example's
    gradient clipped to global L2 norm `l2_clip`, summed, Gaussian noise of
    standard deviation `noise_multiplier * l2_clip` added to every entry, and
    the result divided by the expected batch size.

    ```text
    g = (sum_i g_i min(1, C / |g_i|) + N(0, sigma^2 C^2 I)) / batch_size
    ```

    **Two backward passes, one forward.** The norms `|g_i|` come from
    [`purenet.per_example`][purenet.per_example]'s rules on the forward's
    cache (Goodfellow's identity or the ghost Gram form: no per-example
    gradient is formed where that is cheaper). Each example's parameter
    gradient is linear in its own output gradient `dy_i`, so the clipped sum
    is the model's ordinary backward with `dy_i` scaled by
    `min(1, C / |g_i|)`: the ghost clipping of Li, Tramer, Liang & Hashimoto
    2022 (Bu et al. 2023's book-keeping would fold the two passes into one).

    **Clipping.** `min(1, C / |g_i|)` exactly (an example with a zero gradient
    keeps it); Opacus multiplies by `min(1, C / (|g_i| + 1e-6))`, which
    differs from this in the seventh digit for norms near `C`.

    Args:
      model: a [`Layer`][purenet.layers.core.Layer] whose layers all have
        per-example rules (examples must not interact: batch norm in training
        mode is refused).
      loss: a [`Loss`][purenet.losses.Loss]; example `i`'s gradient is that
        of its own loss (the loss of a batch of one).
      l2_clip: `C > 0`, the clipping norm (Opacus's `max_grad_norm`).
      noise_multiplier: `sigma >= 0`; 0 gives clipping without noise (no privacy).

    Returns:
      `f(params, x, t, *, key, batch_size=None, sampled=None, **ctx) -> (J, grads)`.
      `key` draws the noise (split from the forward's `key`, which dropout
      uses); it may be `None` only when `noise_multiplier` is 0.
      `batch_size` is the divisor, the *expected* batch size under Poisson
      sampling (`q n`; default the batch's own row count). `sampled`, a bool
      `(m,)` or `None`, marks the rows that are in the Poisson sample: the
      others are padding that keeps shapes fixed under `jit` and contribute
      nothing. `J` is the mean loss over the sampled rows; `grads` has the
      structure of `params`. `**ctx` (`state`, `train`, `mask`) goes to the
      forward as in [`backprop`][purenet.cost.backprop].

    Raises:
      ValueError: `l2_clip <= 0`, `noise_multiplier < 0`; at call time, a
        missing `key` with noise, a `sampled` of the wrong shape or dtype, or a
        model whose examples interact.
    """
    check_model_loss(model, loss, None)
    l2_clip, noise_multiplier = _check_dp(l2_clip, noise_multiplier)
    noisy = not (_checks.is_concrete(noise_multiplier) and noise_multiplier == 0)

    def passes(params, x, t, ctx):
        ctx = dict(ctx)  # passes runs twice: traced for refusals, then for real
        key, batch_size, sampled = ctx.pop("key"), ctx.pop("batch_size"), ctx.pop("sampled")
        forward_key = None
        if key is not None:
            key, forward_key = jax.random.split(key)
        y, cache = call_forward(model, params, x, **ctx, key=forward_key)
        losses, dy = per_example.example_losses_and_grads(loss, y, t)
        m = losses.shape[0]
        weight = jnp.ones((m,), losses.dtype) if sampled is None else sampled.astype(losses.dtype)
        dy = _scale_rows(dy, weight)
        sq_norms, _ = per_example.layer_sq_norms(model, params, cache, dy)
        norm = jnp.sqrt(sum(jax.tree.leaves(sq_norms), jnp.zeros((m,), losses.dtype)))
        # min(1, C / |g_i|), written so that |g_i| = 0 gives 1, not 0 / 0
        factor = l2_clip / jnp.maximum(norm, l2_clip)
        clipped_dy = _scale_rows(dy, factor)
        summed, _ = model.backward(params, cache, clipped_dy)
        divisor = m if batch_size is None else batch_size
        if noisy:
            leaves, treedef = jax.tree.flatten(summed)
            keys = jax.random.split(key, len(leaves))
            std = noise_multiplier * l2_clip
            leaves = [
                g + std * jax.random.normal(k, g.shape, g.dtype)
                for g, k in zip(leaves, keys, strict=True)
            ]
            summed = jax.tree.unflatten(treedef, leaves)
        grads = jax.tree.map(lambda g: (g / divisor).astype(g.dtype), summed)
        J = jnp.sum(losses * weight) / jnp.maximum(jnp.sum(weight), 1)
        return J, grads

    checked = per_example.checked_passes(model, passes)

    def gradient(params, x, t, *, key=None, batch_size=None, sampled=None, **ctx):
        if noisy and key is None:
            _checks.fail(
                "key",
                "a jax.random key to draw the Gaussian noise (noise_multiplier > 0)",
                "None",
            )
        if batch_size is not None:
            batch_size = _checks.positive("batch_size", batch_size)
        if sampled is not None:
            _checks.array("sampled", sampled)
            m = jnp.shape(jax.tree.leaves(t)[0])[0]  # t may be a tuple such as (labels, mask)
            if sampled.dtype != jnp.bool_ or sampled.shape != (m,):
                _checks.fail(
                    "sampled",
                    f"a bool array of shape ({m},) marking the Poisson sample's rows",
                    f"{sampled.dtype} of shape {tuple(sampled.shape)}",
                )

        return checked(params, x, t, key=key, batch_size=batch_size, sampled=sampled, **ctx)

    return gradient


# ------------------------------------------------------ training with DP-SGD


class DPSGD(NamedTuple):
    """DP-SGD's settings for the training loops (`fit(..., privacy=...)`,
    `make_epoch`, `make_train`); make one with [`dp_sgd`][purenet.privacy.dp_sgd].

    Attributes:
      l2_clip: the clipping norm `C`.
      noise_multiplier: `sigma`.
      delta: the `delta` at which `fit` reports the `epsilon` spent.
      max_batch_size: the fixed row count of each step's padded Poisson
        sample (`None`: [`max_batch_size`][purenet.privacy.max_batch_size]'s default).
    """

    l2_clip: float
    noise_multiplier: float
    delta: float
    max_batch_size: int | None = None


def dp_sgd(
    *, l2_clip: float, noise_multiplier: float, delta: float, max_batch_size: int | None = None
) -> DPSGD:
    """Checked [`DPSGD`][purenet.privacy.DPSGD] settings.

    With them, a training loop draws each step's batch by Poisson sampling
    (every example independently with probability `q = batch_size /
    num_examples`, so `batch_size` is the *expected* batch size), takes
    [`dp_gradient`][purenet.privacy.dp_gradient] and hands it to the
    optimizer; an epoch is `num_examples // batch_size` steps.

    Args:
      l2_clip: `C > 0`.
      noise_multiplier: `sigma >= 0`.
      delta: in `(0, 1)`, well below `1 / num_examples`.
      max_batch_size: rows of the padded sample; a sample larger than this
        (probability below `1e-12` per step with the default) is cut to it.
    """
    l2_clip, noise_multiplier = _check_dp(l2_clip, noise_multiplier)
    delta = _checks.number_in("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
    if max_batch_size is not None:
        max_batch_size = _checks.positive_int("max_batch_size", max_batch_size)
    return DPSGD(l2_clip, noise_multiplier, delta, max_batch_size)


def max_batch_size(num_examples: int, sample_rate: float, tail: float = 1e-12) -> int:
    """The smallest row count `c` with `P(Binomial(n, q) > c) < tail`: the
    fixed size of a padded Poisson sample.

    A step whose sample is larger is cut to `c` rows (under `jit` every step
    has one shape). Its output then differs from the sampled Gaussian
    mechanism's only on that event, so the `(epsilon, delta)` of the
    accounting holds as `(epsilon, delta + steps * tail)`: with the default
    `tail`, ten thousand steps add at most `1e-8` to `delta`.
    """
    import scipy.stats

    n = _checks.positive_int("num_examples", num_examples)
    q = _checks.number_in("sample_rate", sample_rate, 0.0, 1.0, low_open=True)
    return int(min(n, max(1, scipy.stats.binom.isf(tail, n, q) + 1)))


def poisson_sample(key: jax.Array, num_examples: int, sample_rate, capacity: int):
    """One Poisson sample of `range(num_examples)` with rate `sample_rate`,
    padded to `capacity` rows.

    Returns:
      `(rows, sampled)`: `rows` int32 `(capacity,)`, the sampled examples'
      indices first (in increasing order), then padding (index 0);
      `sampled` bool `(capacity,)`, True on the sampled rows.
    """
    chosen = jax.random.bernoulli(key, sample_rate, (num_examples,))
    (rows,) = jnp.nonzero(chosen, size=capacity, fill_value=0)
    sampled = jnp.arange(capacity) < jnp.sum(chosen)
    return rows.astype(jnp.int32), sampled
