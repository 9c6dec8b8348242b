"""i-SIR invariance, the FlowMC strategy, flow-Jarzynski weights, mixture datasets and metrics."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import smc_ebm as se
from smc_ebm.energies import Gaussian
from smc_ebm.flows import make_flow
from smc_ebm.kernels import isir_move

Z = 4.0  # standard errors allowed in every Monte Carlo comparison


@functools.cache
def _flow2(sigma=0.8):
    return make_flow(jax.random.key(7), 2, sigma=sigma, n_layers=3, width=16)


def test_isir_leaves_a_gaussian_invariant_with_a_mismatched_proposal():
    """Exact samples of N(m, diag s^2) stay exact after i-SIR moves with q = N(0, 0.8^2 I).

    The proposal is off-centre and too narrow along the second axis, so importance
    weights vary a lot; each chain is independent, so the moments of N chains have
    standard error sd/sqrt(N) (first) and sd(x^2)/sqrt(N) (second).
    """
    target = Gaussian(jnp.array([1.0, -0.5]), jnp.array([0.7, 1.3]))
    flow = _flow2()
    n, n_moves = 4000, 4

    @eqx.filter_jit
    def run(flow, key):
        k0, key = jax.random.split(key)
        x = target.sample(k0, n)
        u = jax.vmap(target)(x)

        def body(carry, k):
            x, u = carry
            x, u, p = isir_move(k, x, u, target, flow, 8)
            return (x, u), (x, jnp.mean(p))

        _, (xs, p) = jax.lax.scan(body, (x, u), jax.random.split(key, n_moves))
        return xs, p

    xs, p_move = run(flow, jax.random.key(3))
    xs, p_move = np.asarray(xs, np.float64), np.asarray(p_move)
    m1, m2 = np.array([1.0, -0.5]), np.array([1.0, -0.5]) ** 2 + np.array([0.7, 1.3]) ** 2
    for x in xs:
        se1 = x.std(0) / np.sqrt(n)
        se2 = (x**2).std(0) / np.sqrt(n)
        assert np.all(np.abs(x.mean(0) - m1) < Z * se1), (x.mean(0), m1, se1)
        assert np.all(np.abs((x**2).mean(0) - m2) < Z * se2), ((x**2).mean(0), m2, se2)
    # The moves are real: most chains leave their point, not all.
    assert np.all((p_move > 0.3) & (p_move < 0.99)), p_move


def test_isir_needs_two_candidates(key):
    target = Gaussian(jnp.zeros(2), jnp.ones(2))
    x = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="n_proposals"):
        isir_move(key, x, jax.vmap(target)(x), target, _flow2(), 1)
