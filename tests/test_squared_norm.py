"""SquaredNorm: a linear network is exactly a Gaussian; construction errors name the input."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax
import pytest

import smc_ebm as se
from smc_ebm.energies import SquaredNorm, Tilted


def _linear(a, m):
    """The linear map f(x) = A (x - m) as an equinox Linear layer."""
    lin = eqx.nn.Linear(a.shape[1], a.shape[0], key=jax.random.key(0))
    return eqx.tree_at(lambda l: (l.weight, l.bias), lin, (a, -a @ m))


def test_linear_net_is_the_gaussian_with_precision_ata(key):
    # U = |A(x - m)|^2 / 2 is N(m, (A^T A)^-1) up to log Z = (d/2) log 2pi - log|det A|;
    # numpyro's MultivariateNormal is the independent reference.
    k1, k2, k3 = jax.random.split(key, 3)
    d = 3
    a = jax.random.normal(k1, (d, d)) + 2.0 * jnp.eye(d)
    m = jax.random.normal(k2, (d,))
    energy = SquaredNorm(_linear(a, m), dim=d)
    ref = nd.MultivariateNormal(m, precision_matrix=a.T @ a)
    x = 2.0 * jax.random.normal(k3, (200, d))
    log_z = 0.5 * d * math.log(2 * math.pi) - jnp.log(jnp.abs(jnp.linalg.det(a)))
    np.testing.assert_allclose(
        np.asarray(-jax.vmap(energy)(x) - log_z), np.asarray(ref.log_prob(x)), rtol=1e-4, atol=1e-4
    )


def test_dimension_is_read_from_the_net_and_errors_name_the_input(key):
    energy = SquaredNorm.mlp(2, 5, 16, 2, key=key)
    assert energy.dim == 2
    assert energy.net.out_size == 5
    u = jax.vmap(energy)(jnp.ones((7, 2)))
    assert u.shape == (7,) and bool(jnp.all(u >= 0))
    with pytest.raises(ValueError, match="dim"):
        SquaredNorm(lambda x: x)
    with pytest.raises(ValueError, match="out"):
        SquaredNorm.mlp(2, 0, 16, 2, key=key)


def test_fit_trains_a_tilted_squared_norm(key):
    # The generic evaluation path: a few Jarzynski steps change the net and stay finite.
    data = se.datasets.eight_gaussians(jax.random.key(0), 256).samples
    base = nd.Normal(jnp.zeros(2), jnp.ones(2)).to_event(1)
    energy = Tilted(SquaredNorm.mlp(2, 4, 16, 2, key=key), base)
    res = se.fit(
        energy,
        data,
        strategy=se.Jarzynski(64, 0.01),
        optimizer=optax.sgd(0.01),
        num_steps=20,
        key=key,
        progress=False,
    )
    before = jax.vmap(energy)(data[:32])
    after = jax.vmap(res.energy)(data[:32])
    assert bool(jnp.all(jnp.isfinite(after))) and float(jnp.max(jnp.abs(after - before))) > 0
