"""se.sample: weighted annealing from a base; log Z and moments against a Gaussian mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import z_bound

import smc_ebm as se
from smc_ebm.energies import Gaussian, GaussianMixture

# Unnormalised logits (log Z depends on them) and unequal modes 7 sigma apart.
MEANS = jnp.array([[-4.0, 0.0], [3.0, 1.0]])
LOGITS = jnp.array([0.5, 1.3])


@pytest.fixture(scope="module")
def target():
    return GaussianMixture(means=MEANS, logits=LOGITS, sigma=1.0)


@pytest.fixture(scope="module")
def base():
    return Gaussian(jnp.zeros(2), jnp.full(2, 4.0))


def _exact_moments(gmm):
    w = np.asarray(gmm.weights, np.float64)
    mu = np.asarray(gmm.means, np.float64)
    mean = w @ mu
    cov = gmm.sigma**2 * np.eye(2) + (mu.T * w) @ mu - np.outer(mean, mean)
    return mean, cov


def _check(out, gmm, n):
    """log Z and moments within their Monte Carlo error.

    log Z: the runs are independent, each unbiased for Z, so (log Z_hat - log Z) / se is
    approximately t-distributed with num_runs - 1 = 15 degrees of freedom; |t| < 4 fails with
    probability 0.0012. The bound stays at a flat 4: the se comes from the spread of 16 runs,
    so the normal z_bound(6) = 3.76 would understate the tail (P(|t_15| > 3.76) = 0.0019),
    and the t_15 quantile of the family-wise budget would be 4.97. The se must also be small
    (< 0.05) for the check to mean something.
    Moments: the equal-weight set has the variance of the weighted estimate (var / (n ESS))
    plus that of systematic resampling (at most var / n); z_bound(6) standard errors per
    comparison (log Z, 2 means, 2 variances and the mode fraction: 6 comparisons).
    """
    z = z_bound(6)
    exact = float(gmm.log_partition())
    assert 0 < out.log_Z_se < 0.05
    # A flat 4, not z: the t_15 statistic above.
    assert abs(out.log_Z - exact) < 4 * out.log_Z_se, (out.log_Z, exact, out.log_Z_se)
    mean, cov = _exact_moments(gmm)
    x = np.asarray(out.resampled, np.float64)
    assert x.shape == (n, 2)
    var = np.diag(cov)
    se_mean = np.sqrt(var * (1.0 / (n * out.ess) + 1.0 / n))
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), z * se_mean)
    # Var of the sample variance of a bimodal coordinate: (m4 - var^2) / n_eff; bounded
    # here by 2 var^2 + (spread of the modes)^4 / 4 (coordinate 0: modes 7 apart).
    m4_bound = 2 * var**2 + np.array([7.0, 1.0]) ** 4 / 4
    se_var = np.sqrt(m4_bound * (1.0 / (n * out.ess) + 1.0 / n))
    np.testing.assert_array_less(np.abs(x.var(0) - var), z * se_var)
    # The mode proportions: the weights correct the annealing's mode imbalance.
    w0 = float(gmm.weights[0])
    se_w = np.sqrt(w0 * (1 - w0) * (1.0 / (n * out.ess) + 1.0 / n))
    assert abs(np.mean(x[:, 0] < -0.5) - w0) < z * se_w


def test_sample_gaussian_mixture_log_Z_and_moments(target, base):
    n = 4096
    out = se.sample(
        target,
        key=jax.random.key(0),
        num_walkers=n,
        init=base,
        num_steps=200,
        step_size=0.1,
        num_runs=16,
    )
    assert out.samples.shape == (n, 2) and out.log_weights.shape == (n,)
    assert out.log_Z_runs.shape == (16,)
    np.testing.assert_allclose(out.weights.sum(), 1.0, rtol=1e-5)
    assert out.acceptance == 1.0
    _check(out, target, n)


@pytest.mark.slow
def test_sample_mala_log_Z_and_moments(target, base):
    n = 4096
    out = se.sample(
        target,
        key=jax.random.key(1),
        num_walkers=n,
        init=base,
        num_steps=200,
        step_size=0.3,
        kernel="mala",
        num_runs=16,
    )
    assert 0.5 < out.acceptance < 1.0
    _check(out, target, n)


@pytest.mark.slow
def test_log_Z_standard_error_is_calibrated(target, base):
    """Over 40 seeds the z-scores (log Z_hat - log Z) / se have mean ~0 and sd ~1.

    With 40 seeds the sd of the mean of z is 1/sqrt(40) = 0.16 (bound 0.5, 3 sd) and the
    sample sd of z is within [0.6, 1.5] with high probability (t_7 tails inflate it a bit).
    """
    exact = float(target.log_partition())
    z = []
    for seed in range(40):
        out = se.sample(
            target,
            key=jax.random.key(100 + seed),
            num_walkers=1024,
            init=base,
            num_steps=100,
            num_runs=8,
        )
        z.append((out.log_Z - exact) / out.log_Z_se)
    z = np.asarray(z)
    assert abs(z.mean()) < 0.5
    assert 0.6 < z.std() < 1.5


@pytest.mark.slow
def test_sample_default_base_and_single_run():
    gmm = GaussianMixture(means=jnp.array([[-1.0, 0.0], [1.0, 0.0]]), logits=jnp.zeros(2))
    out = se.sample(gmm, key=jax.random.key(2), num_walkers=512, num_steps=50, num_runs=1)
    assert out.resampled.shape == (512, 2)
    assert np.isfinite(out.log_Z) and out.log_Z_se > 0


def test_sample_rejects_bad_input(target, base):
    with pytest.raises(ValueError, match="multiple of num_runs"):
        se.sample(target, key=jax.random.key(0), num_walkers=100, init=base, num_runs=3)
    with pytest.raises(ValueError, match="num_steps"):
        se.sample(target, key=jax.random.key(0), num_walkers=100, init=base, num_steps=0)
    with pytest.raises(ValueError, match="kernel"):
        se.sample(target, key=jax.random.key(0), num_walkers=100, init=base, kernel="hmc")
    with pytest.raises(ValueError, match="step_size"):
        se.sample(target, key=jax.random.key(0), num_walkers=100, init=base, step_size=-1.0)
    mlp = se.energies.MLP(2, 4, 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="sample itself"):
        se.sample(target, key=jax.random.key(0), num_walkers=100, init=mlp)
    with pytest.raises(ValueError, match="dimension"):
        se.sample(target, key=jax.random.key(0), num_walkers=100, init=Gaussian.standard(3))
