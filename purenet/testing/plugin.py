"""A pytest plugin for gradient tests, registered when purenet is installed.

purenet declares it under the `pytest11` entry point, so every test suite of
an environment where purenet is installed gets these fixtures with nothing to
configure (`-p no:purenet` turns the plugin off):

* `x64`: 64-bit types on for one test (`jax_enable_x64`) and the previous
  setting restored after it, whatever it was (a suite that enables float64
  globally keeps it). Request it first, before the test makes its arrays. A
  gradient check run in float32 points here: float64 is where a check is
  tight.
* `prng_key`: a `jax.random.key` seeded by `--purenet-seed` (default 0),
  the same in every test: a failure reproduces.
* `gradient_check`: float64 on, and [`purenet.testing`][purenet.testing]'s
  assertions with the key filled in: `gradient_check.layer(layer, params, x)`,
  `gradient_check.gradients(model, loss, params, x, t)`,
  `gradient_check.vjp(f, vjp, *primals)` (keywords such as `mask=` pass
  through).

Example:

```python
def test_my_layer(gradient_check):
    layer = my_layer(3)
    _, params, _ = layer.init(jax.random.key(0), (4,), jnp.float64)
    gradient_check.layer(layer, params, jnp.ones((2, 4)))
```

Loading the plugin imports `purenet` (and so jax) when pytest starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["GradientCheck", "gradient_check", "prng_key", "x64"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("purenet")
    group.addoption(
        "--purenet-seed",
        type=int,
        default=0,
        help="seed of the prng_key fixture (default 0)",
    )


@pytest.fixture
def x64() -> Iterator[None]:
    """64-bit types (`jax_enable_x64`) for the duration of one test."""
    import jax

    previous = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def prng_key(request: pytest.FixtureRequest) -> Any:
    """`jax.random.key(seed)`, seed from `--purenet-seed` (default 0)."""
    import jax

    return jax.random.key(request.config.getoption("purenet_seed"))


class GradientCheck:
    """The assertions of [`purenet.testing`][purenet.testing] with a fixed random key."""

    def __init__(self, key: Any):
        self.key = key

    def gradients(self, model, loss, params, x, t, **kwargs) -> None:
        """[`assert_gradients`][purenet.testing.assert_gradients]."""
        from purenet.testing import assert_gradients

        assert_gradients(model, loss, params, x, t, **kwargs)

    def layer(self, layer, params, x, **kwargs) -> None:
        """[`assert_layer`][purenet.testing.assert_layer], `dy` drawn with the key."""
        from purenet.testing import assert_layer

        kwargs.setdefault("dy_key", self.key)
        assert_layer(layer, params, x, **kwargs)

    def vjp(self, f, vjp, *primals, **kwargs) -> None:
        """[`assert_vjp`][purenet.testing.assert_vjp], the cotangent drawn with the key."""
        from purenet.testing import assert_vjp

        kwargs.setdefault("key", self.key)
        assert_vjp(f, vjp, *primals, **kwargs)


@pytest.fixture
def gradient_check(x64: None, prng_key: Any) -> GradientCheck:
    """[`GradientCheck`][purenet.testing.plugin.GradientCheck] in float64 (it uses
    the `x64` fixture)."""
    return GradientCheck(prng_key)
