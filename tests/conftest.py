"""Test configuration.

64-bit types are enabled for the whole session so gradient checks can run in
float64; float32 behaviour is tested with explicitly float32 arrays (the
library never changes the dtype it is given).
"""

import jax
import jax.numpy as jnp
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.key(0)


def random_batch(key, m, n, dtype=jnp.float64):
    return jax.random.normal(key, (m, n), dtype)
