"""Score matching against the analytic loss and gradient of a diagonal Gaussian energy.

For U(x) = sum_i (x_i - m_i)^2 / (2 s_i^2): grad U = (x - m) / s^2 and tr Hess U = sum 1/s^2, so
on a sample the exact loss is J = 1/2 sum_i mean((x_i - m_i)^2) / s_i^4 - sum_i 1/s_i^2, with
dJ/dm_i = -mean(x_i - m_i) / s_i^4 and dJ/ds_i = -2 mean((x_i - m_i)^2) / s_i^5 + 2 / s_i^3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _stats import z_bound

import smc_ebm as se
from smc_ebm.energies import Gaussian

# Standard errors allowed per comparison: each unbiasedness test compares the loss (1) and its
# gradients in the mean (3) and the scale (3), 7 comparisons (tests/_stats.py).
Z = z_bound(7)


@pytest.fixture(scope="module")
def setup():
    energy = Gaussian(jnp.array([0.5, -1.0, 2.0]), jnp.array([0.8, 1.5, 1.1]))
    x = 1.3 * jax.random.normal(jax.random.key(0), (4000, 3)) + jnp.array([0.0, 1.0, 2.5])
    return energy, x


def _analytic(energy, x):
    m, s = np.asarray(energy.mean, np.float64), np.asarray(energy.scale, np.float64)
    x = np.asarray(x, np.float64)
    d = x - m
    loss = 0.5 * np.sum(np.mean(d**2, 0) / s**4) - np.sum(1 / s**2)
    gm = -np.mean(d, 0) / s**4
    gs = -2 * np.mean(d**2, 0) / s**5 + 2 / s**3
    return loss, gm, gs


def _per_sample_grads(sm, energy, x, key):
    """Per-sample loss and (d/dmean, d/dscale) of each data point's term."""
    keys = jax.random.split(key, x.shape[0])

    def one(k, xi):
        return jax.value_and_grad(lambda e: sm._one(k, e, xi))(energy)

    val, g = jax.vmap(one)(keys, x)
    return (
        np.asarray(val, np.float64),
        np.asarray(g.mean, np.float64),
        np.asarray(g.scale, np.float64),
    )


def test_exact_loss_and_gradient_are_analytic(setup):
    energy, x = setup
    sm = se.ScoreMatching("exact")
    loss, gm, gs = _analytic(energy, x)
    st = sm.init_state(jax.random.key(0), energy, x, None)
    _, grad, val, data_u, _ = sm.gradient(jax.random.key(1), st, energy, x)
    np.testing.assert_allclose(float(val), loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad.mean), gm, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grad.scale), gs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(data_u), float(jnp.mean(jax.vmap(energy)(x))), rtol=1e-6)


def test_sliced_rademacher_is_exact_for_a_diagonal_hessian(setup):
    """v_i^2 = 1, so v^T H v = tr H exactly when H is diagonal."""
    energy, x = setup
    loss, _, _ = _analytic(energy, x)
    got = se.ScoreMatching("sliced", projection="rademacher").loss(jax.random.key(2), energy, x)
    np.testing.assert_allclose(float(got), loss, rtol=1e-5)


@pytest.mark.parametrize("num_projections", [1, 4])
def test_sliced_gaussian_is_unbiased(setup, num_projections):
    """Mean of the sliced terms and gradients equals the exact ones within Z standard errors."""
    energy, x = setup
    loss, gm, gs = _analytic(energy, x)
    sm = se.ScoreMatching("sliced", num_projections=num_projections)
    val, g_m, g_s = _per_sample_grads(sm, energy, x, jax.random.key(3))
    ex_val, ex_m, ex_s = _per_sample_grads(se.ScoreMatching("exact"), energy, x, jax.random.key(3))
    n = x.shape[0]
    for est, ex, target in [(val, ex_val, loss), (g_m, ex_m, gm), (g_s, ex_s, gs)]:
        # Compare the difference to the exact per-sample terms: its mean is 0 and its
        # standard error is that of the slicing noise only.
        diff = est - ex
        se_ = diff.std(0) / np.sqrt(n)
        assert np.all(np.abs(diff.mean(0)) <= Z * se_ + 1e-6), (diff.mean(0), se_)
        np.testing.assert_allclose(ex.mean(0), target, rtol=1e-4, atol=1e-6)
    # More projections: smaller slicing noise (variance 2 sum s^-4 / P per sample).
    expected_sd = np.sqrt(2 * np.sum(np.asarray(energy.scale, np.float64) ** -4) / num_projections)
    np.testing.assert_allclose((val - ex_val).std(), expected_sd, rtol=0.1)


def test_denoising_matches_exact_plus_smoothing_bias(setup):
    """E[DSM] - d/(2 sigma^2) = J + sigma^2/2 tr(A^2), A = diag(1/s^2), and likewise for dJ."""
    energy, x = setup
    sigma = 0.2
    loss, gm, gs = _analytic(energy, x)
    s = np.asarray(energy.scale, np.float64)
    x_rep = jnp.tile(x, (5, 1))  # 5 noise draws per data point
    sm = se.ScoreMatching("denoising", noise_scale=sigma)
    val, g_m, g_s = _per_sample_grads(sm, energy, x_rep, jax.random.key(4))
    ex_val, ex_m, ex_s = _per_sample_grads(
        se.ScoreMatching("exact"), energy, x_rep, jax.random.key(4)
    )
    n = x_rep.shape[0]
    bias_val = 0.5 * sigma**2 * np.sum(s**-4)
    bias_s = -2 * sigma**2 * s**-5
    for est, ex, bias in [(val, ex_val, bias_val), (g_m, ex_m, 0.0), (g_s, ex_s, bias_s)]:
        diff = est - ex
        se_ = diff.std(0) / np.sqrt(n)
        assert np.all(np.abs(diff.mean(0) - bias) <= Z * se_), (diff.mean(0), bias, se_)
    np.testing.assert_allclose(ex_val.mean(), loss, rtol=1e-4)


def test_fit_with_score_matching_recovers_the_gaussian(setup):
    """Score matching is consistent for a Gaussian: its minimiser is the sample mean and sd.

    SGD for 1500 steps converges to ~1e-4; the tolerance 1e-2 is optimisation, not noise
    (the target is the sample's own moments).
    """
    _, x = setup
    start = Gaussian(jnp.zeros(3), jnp.ones(3))
    res = se.fit(
        start,
        x,
        strategy=se.ScoreMatching("exact"),
        optimizer=optax.sgd(0.1),
        num_steps=1500,
        key=jax.random.key(5),
        progress=False,
        record_every=100,
    )
    xs = np.asarray(x, np.float64)
    np.testing.assert_allclose(np.asarray(res.energy.mean), xs.mean(0), atol=1e-2)
    np.testing.assert_allclose(np.abs(np.asarray(res.energy.scale)), xs.std(0), rtol=1e-2)
    assert res.history["loss"][-1] < res.history["loss"][0]
    assert res.walkers.shape == (0, 3)
    assert np.isnan(res.log_Z)


def test_score_matching_bad_input():
    with pytest.raises(ValueError, match="method"):
        se.ScoreMatching("implicit")
    with pytest.raises(ValueError, match="noise_scale"):
        se.ScoreMatching("denoising", noise_scale=0.0)
    with pytest.raises(ValueError, match="num_projections"):
        se.ScoreMatching("sliced", num_projections=0)
    e = se.energies.ShallowReLU(4, 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="R\\^d"):
        se.ScoreMatching().init_state(jax.random.key(0), e, jnp.ones((2, 4)) / 2.0, None)
