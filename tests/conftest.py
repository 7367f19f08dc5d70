"""Test configuration.

64-bit types are enabled for the whole session so gradient checks can run in
float64; float32 behaviour is tested with explicitly float32 arrays (the
library never changes the dtype it is given).

Hypothesis profiles: every property test states its own budget
(``max_examples``) next to the property; the profile fixes how examples are
drawn. ``ci`` (selected when the environment has ``CI=true``) draws the same
examples on every run (``derandomize``), keeps no example database and never
fails on timing (``deadline=None``: the first example of a new shape pays
for XLA compilation); ``dev`` (the default) draws new examples each run and
remembers failures in ``.hypothesis/``. Choose one with
``pytest --hypothesis-profile=ci``.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture
def key():
    return jax.random.key(0)


def normal(seed, shape, scale=1.0, dtype=jnp.float64):
    """Normal test data from NumPy, ``scale`` times standard normal. Not
    ``jax.random``: an eager draw compiles a program for every new shape, which
    a hypothesis test would pay on every example."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), dtype)
