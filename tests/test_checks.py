"""purenet._checks: one message shape, TypeError for a wrong kind, ValueError for a bad value.

Number checks validate concrete values eagerly and let traced values through
unchanged, which is what lets ``jax.vmap`` sweep a hyperparameter.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import _checks


def test_fail_and_fail_type_share_one_message_shape():
    with pytest.raises(ValueError, match=r"^lr: expected a number, got -1$"):
        _checks.fail("lr", "a number", -1)
    with pytest.raises(TypeError, match=r"^lr: expected a number, got str$"):
        _checks.fail_type("lr", "a number", "str")


@pytest.mark.parametrize("check", [_checks.positive, _checks.nonnegative])
@pytest.mark.parametrize("value", ["0.1", None, True, [0.1], 1j, jnp.array(True)])
def test_a_non_number_is_a_type_error(check, value):
    with pytest.raises(TypeError, match=r"^eps: expected a real number, got "):
        check("eps", value)


@pytest.mark.parametrize("value", [-1.0, 0.0, math.nan, math.inf, -math.inf])
def test_a_bad_number_is_a_value_error(value):
    with pytest.raises(ValueError, match=r"^eps: expected a "):
        _checks.positive("eps", value)


def test_concrete_numbers_come_back_as_python_floats():
    for value in (0.5, np.float32(0.5), np.float64(0.5), np.asarray(0.5), jnp.array(0.5)):
        out = _checks.positive("lr", value)
        assert type(out) is float and out == 0.5
    assert type(_checks.positive("lr", 2)) is float
    assert _checks.nonnegative("lr", 0) == 0.0
    assert _checks.number_in("p", 1.0, 0.0, 1.0) == 1.0


def test_concrete_arrays_are_checked_eagerly():
    with pytest.raises(ValueError, match=r"^lr: expected a number in \(0.0, inf\), got -0.5"):
        _checks.positive("lr", jnp.array(-0.5))
    with pytest.raises(ValueError, match=r"^lr: expected a finite real number"):
        _checks.positive("lr", np.asarray(np.nan))
    with pytest.raises(ValueError, match=r"^lr: expected a scalar, got an array of shape \(2,\)"):
        _checks.positive("lr", jnp.array([0.1, 0.2]))


def test_traced_values_pass_through_unchanged_under_vmap_and_jit():
    seen = []

    def f(lr):
        out = _checks.positive("lr", lr)
        seen.append(out is lr)
        return out * 2.0

    # -1 would be refused if it were concrete: a traced value is not checked.
    np.testing.assert_allclose(jax.vmap(f)(jnp.array([0.1, -1.0])), [0.2, -2.0])
    np.testing.assert_allclose(jax.jit(f)(3.0), 6.0)
    np.testing.assert_allclose(jax.grad(f)(3.0), 2.0)
    assert seen == [True, True, True]


def test_traced_values_still_get_their_static_checks():
    with pytest.raises(ValueError, match=r"^lr: expected a scalar"):
        jax.jit(lambda lr: _checks.positive("lr", lr))(jnp.ones(2))
    with pytest.raises(TypeError, match=r"^lr: expected a real number"):
        jax.jit(lambda lr: _checks.positive("lr", lr))(jnp.array(True))


def test_number_in_intervals():
    assert _checks.number_in("b1", 0.0, 0.0, 1.0, high_open=True) == 0.0
    with pytest.raises(ValueError, match=r"^b1: expected a number in \[0.0, 1.0\), got 1.0$"):
        _checks.number_in("b1", 1.0, 0.0, 1.0, high_open=True)
    with pytest.raises(ValueError, match=r"^p: expected a number in \(0.0, 1.0\], got 0$"):
        _checks.number_in("p", 0, 0.0, 1.0, low_open=True)


def test_positive_int():
    assert _checks.positive_int("n", 3) == 3
    assert _checks.positive_int("n", np.int64(3)) == 3
    for bad in (0, -2, 2.5, 2.0):
        with pytest.raises(ValueError, match=r"^n: expected a positive integer"):
            _checks.positive_int("n", bad)
    for wrong_kind in ("3", None, True):
        with pytest.raises(TypeError, match=r"^n: expected a positive integer"):
            _checks.positive_int("n", wrong_kind)


def test_array_and_float_array():
    x = jnp.ones(2)
    assert _checks.array("x", x) is x
    assert _checks.float_array("x", x) is x
    for wrong_kind in ([1.0, 2.0], "abc", None):
        with pytest.raises(TypeError, match=r"^x: expected an array, got "):
            _checks.float_array("x", wrong_kind)
    with pytest.raises(ValueError, match=r"^x: expected float32 or float64 data"):
        _checks.float_array("x", jnp.ones(2, jnp.float16))
    with pytest.raises(ValueError, match=r"^x: expected float32 or float64 data"):
        _checks.float_array("x", jnp.ones(2, jnp.int32))


def test_all_finite_is_eager_only():
    with pytest.raises(ValueError, match=r"^x: expected finite values, got 1 NaN or inf entries"):
        _checks.all_finite("x", jnp.array([1.0, jnp.nan]))
    jax.jit(lambda x: _checks.all_finite("x", x) or x)(jnp.array([jnp.nan]))  # skipped
