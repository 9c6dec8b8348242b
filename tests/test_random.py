"""The fused normal draws: jax.random.normal's numbers, bit for bit, in one pass on the CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smc_ebm.kernels import standard_normal, ula_propose

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (1000, 50), (65537, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_standard_normal_draws_jax_random_normals_numbers(shape):
    # jax.random.normal is the independent truth: its hash is a rolled loop on the CPU.
    for seed in (0, 1, 2**31 + 5):
        for key in (jax.random.key(seed), jax.random.PRNGKey(seed)):
            key = jax.random.fold_in(key, 3)
            ours = jax.jit(lambda k, s=shape: standard_normal(k, s))(key)
            assert ours.shape == shape and ours.dtype == jnp.float32
            np.testing.assert_array_equal(ours, jax.random.normal(key, shape))


def test_standard_normal_is_one_fused_pass_on_the_cpu():
    # Without this the test above would pass on a fallback to jax.random.normal.
    key = jax.random.key(0)
    text = jax.jit(lambda k: standard_normal(k, (100, 5))).lower(key).compile().as_text()
    assert "while" not in text


def test_standard_normal_falls_back_outside_the_threefry_float32_case():
    rbg = jax.random.key(4, impl="rbg")
    np.testing.assert_array_equal(standard_normal(rbg, (6, 2)), jax.random.normal(rbg, (6, 2)))
    key = jax.random.key(4)
    half = standard_normal(key, (6, 2), jnp.float16)
    assert half.dtype == jnp.float16
    np.testing.assert_array_equal(half, jax.random.normal(key, (6, 2), jnp.float16))
    with jax.threefry_partitionable(False):
        np.testing.assert_array_equal(standard_normal(key, (6, 2)), jax.random.normal(key, (6, 2)))


def test_ula_move_uses_jax_random_normals_numbers():
    key, x, g = jax.random.key(9), jnp.ones((300, 4)), jnp.full((300, 4), 0.5)
    h = 0.01
    expected = x - h * g + jnp.sqrt(2 * h) * jax.random.normal(key, x.shape)
    np.testing.assert_allclose(jax.jit(ula_propose)(key, x, g, h), expected, rtol=0, atol=1e-6)
