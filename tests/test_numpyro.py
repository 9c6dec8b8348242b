"""NumPyro front end: energies from models, the distribution adapter, posterior SMC."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints

import smc_ebm as se
from smc_ebm.energies import as_base, from_numpyro

LOG_2PI = math.log(2 * math.pi)


def normalised():
    """x ~ N(1, 2^2) (3-d), r ~ LogNormal(0, 0.5): e^{-U} integrates to 1 in R^4."""
    numpyro.sample("x", dist.Normal(1.0, 2.0).expand([3]).to_event(1))
    numpyro.sample("r", dist.LogNormal(0.0, 0.5))


def ggm(d):
    """Zero-mean Gaussian through its precision L L^T, normaliser left out (numpyro.factor)."""
    chol = numpyro.param("L", jnp.eye(d), constraint=constraints.scaled_unit_lower_cholesky)
    x = numpyro.sample("x", dist.ImproperUniform(constraints.real_vector, (), (d,)))
    numpyro.factor("quad", -0.5 * jnp.sum((chol.T @ x) ** 2))


def regression(x, y):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    scale = numpyro.param("scale", 1.0, constraint=constraints.positive)
    numpyro.sample("y", dist.Normal(x @ w, scale), obs=y)


def test_energy_is_numpyro_potential_with_jacobian():
    energy = from_numpyro(normalised)
    assert energy.dim == 4 and energy.site_names == ("r", "x")
    z = jnp.array([0.3, -1.0, 0.5, 2.0])  # (log r, x)
    x, log_r = z[1:], z[0]
    # -log N(x; 1, 4) - log LogNormal(r; 0, .5) - log r (Jacobian of r = e^z)
    exact = 0.5 * jnp.sum(((x - 1) / 2) ** 2) + 3 * (math.log(2.0) + 0.5 * LOG_2PI)
    exact += 0.5 * (log_r / 0.5) ** 2 + math.log(0.5) + 0.5 * LOG_2PI
    np.testing.assert_allclose(energy(z), exact, rtol=1e-5)
    sites = energy.constrain(z)
    np.testing.assert_allclose(sites["r"], jnp.exp(log_r), rtol=1e-6)
    np.testing.assert_allclose(energy.unconstrain(sites), z, rtol=1e-5, atol=1e-6)
    batch = energy.constrain(jnp.stack([z, 2 * z]))
    assert batch["x"].shape == (2, 3) and batch["r"].shape == (2,)


def test_params_are_trained_and_fixed_inputs_are_not():
    x, y = jnp.ones((20, 3)), jnp.zeros(20)
    energy = from_numpyro(regression, x, y)
    params, _ = eqx.partition(energy, eqx.is_inexact_array)
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 1 and leaves[0].shape == ()  # log scale only: not x, y
    np.testing.assert_allclose(energy.param_values()["scale"], 1.0)
    frozen = from_numpyro(regression, x, y, trainable=False)
    assert not jax.tree.leaves(eqx.partition(frozen, eqx.is_inexact_array)[0])
    np.testing.assert_allclose(frozen(jnp.zeros(3)), energy(jnp.zeros(3)))


def test_factor_adds_its_term():
    energy = from_numpyro(ggm, 2)
    z = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(energy(z), 0.5 * jnp.sum(z**2), rtol=1e-6)


def test_bad_models_name_the_site():
    def discrete():
        numpyro.sample("k", dist.Poisson(3.0))

    def no_bijection():
        numpyro.sample("u", dist.ProjectedNormal(jnp.ones(3)))

    def wrong_obs(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", 10):
            numpyro.sample("obs_y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match="'k' is discrete"):
        from_numpyro(discrete)
    with pytest.raises(ValueError, match="'u'.*no bijection"):
        from_numpyro(no_bijection)
    with pytest.raises(ValueError, match="'obs_y'.*shape"):
        from_numpyro(wrong_obs, jnp.zeros(5))
    with pytest.raises(ValueError, match="no numpyro.param"):
        from_numpyro(normalised, trainable=True)
    with pytest.raises(ValueError, match="no trainable numpyro.param site"):
        se.fit(
            from_numpyro(normalised),
            np.zeros((10, 4), np.float32),
            strategy=se.PCD(4, 0.1),
            optimizer=optax.sgd(0.1),
            num_steps=1,
            key=jax.random.key(0),
            progress=False,
        )


@pytest.mark.slow
def test_sample_a_numpyro_energy_gives_log_z_zero():
    out = se.sample(
        from_numpyro(normalised),
        key=jax.random.key(0),
        num_walkers=2000,
        num_steps=50,
        num_runs=8,
        step_size=0.05,
        init=dist.Normal(0.0, 3.0).expand([4]).to_event(1),
    )
    # 8 independent unbiased runs: |t| < 4 fails with probability < 0.01 (t, 7 dof). A flat
    # 4, not z_bound(1) = 3.29: the se comes from the spread of 8 runs and the normal bound
    # would understate the t_7 tail (the t_7 quantile of the 1e-3 budget is 5.41).
    assert out.log_Z_se < 0.1
    assert abs(out.log_Z) < 4 * out.log_Z_se + 0.01


def test_adapter_everywhere(key):
    import flowjax.distributions as fd

    gauss = se.energies.Gaussian(jnp.zeros(2), jnp.ones(2))
    out = se.sample(
        gauss, key=key, num_walkers=200, num_steps=10, num_runs=2, init=fd.Normal(jnp.zeros(2), 3.0)
    )
    assert np.isfinite(out.log_Z)
    diag = se.diagnose(
        gauss, key=key, num_chains=4, num_steps=8, init=dist.Normal(0, 1).expand([2])
    )
    assert diag.num_chains == 4
    for d in (dist.Normal(0.0, 2.0).expand([2]), dist.Normal(0.0, 2.0).expand([2]).to_event(1)):
        base = as_base(d)
        assert base.dim == 2 and float(base.log_partition()) == 0.0 and base.can_sample
        np.testing.assert_allclose(base(jnp.zeros(2)), 2 * (math.log(2.0) + 0.5 * LOG_2PI))
        assert base.sample(key, 5).shape == (5, 2)
    tilted = se.energies.Tilted(lambda x: jnp.zeros(()), dist.Normal(0.0, 1.0).expand([3]))
    assert tilted.dim == 3 and tilted(jnp.zeros(3)).shape == ()
    assert tilted.sample_base(key, 4).shape == (4, 3)


@pytest.fixture(scope="module")
def ggm_data():
    d = 2
    prec = jnp.array([[2.0, 0.6], [0.6, 1.0]])
    data = jax.random.multivariate_normal(
        jax.random.key(0), jnp.zeros(d), jnp.linalg.inv(prec), (1000,)
    )
    mle = jnp.linalg.inv(data.T @ data / data.shape[0])
    return d, data, mle


@pytest.mark.parametrize("strategy", ["jarzynski", "pcd"])
def test_fit_ggm_reaches_the_mle(ggm_data, strategy):
    d, data, mle = ggm_data
    energy = from_numpyro(ggm, d, trainable=True)
    log_z0 = 0.5 * d * LOG_2PI  # exact at L = I
    if strategy == "jarzynski":
        strat = se.Jarzynski(
            128, 0.05, num_observers=256, num_anneal=50, anneal_base=dist.Normal(0, 1).expand([d])
        )
    else:
        strat = se.PCD(128, 0.05)

    def lr(k):
        return 0.05 * 0.1 ** (k.astype(jnp.float32) / 75)

    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float
        res = se.fit(
            energy,
            data,
            strategy=strat,
            num_steps=300,
            key=jax.random.key(1),
            optimizer=optax.adam(lr),
            progress=False,
            log_Z0=log_z0,
        )
    chol = res.energy.param_values()["L"]
    prec = chol @ chol.T
    # Stationary noise of Adam at lr 5e-5 plus the walkers' O(1/sqrt(N)) error: a few %.
    assert float(jnp.linalg.norm(prec - mle) / jnp.linalg.norm(mle)) < 0.08
    if strategy == "jarzynski":
        exact = 0.5 * d * LOG_2PI - 0.5 * float(jnp.linalg.slogdet(prec)[1])
        assert abs(res.log_Z - exact) < 0.1


def test_diagnose_a_numpyro_model_names_its_sites():
    """se.diagnose on a NumPyro model: the posterior holds x (3-d) and r (positive) under their
    names; r is exp of one unconstrained coordinate (LogNormal's bijection) and x the other
    three (identity), draw by draw; az.summary reads the sites directly."""
    import arviz as az

    diag = se.diagnose(
        from_numpyro(normalised),
        key=jax.random.key(0),
        num_chains=4,
        num_steps=20,
        init=dist.Normal(0, 1).expand([4]).to_event(1),
        progress=False,
    )
    post = diag.idata.posterior
    z = diag.idata.unconstrained_posterior["x"].values  # (chain, draw, 4)
    x, r = post["x"].values, post["r"].values
    assert x.shape == (4, 20, 3) and r.shape == (4, 20) and post["x"].dims[-1] == "x_dim_0"
    j = [c for c in range(4) if np.allclose(np.exp(z[..., c]), r, rtol=1e-5)]
    assert len(j) == 1
    rest = [c for c in range(4) if c != j[0]]
    np.testing.assert_allclose(x, z[..., rest], rtol=1e-6)
    assert set(az.summary(diag.idata, var_names=["x", "r"]).index) == {"x[0]", "x[1]", "x[2]", "r"}


def shifted_gaussian(d):
    """N(mu, I) with its mean a numpyro.param, normaliser left out."""
    mu = numpyro.param("mu", jnp.zeros(d))
    x = numpyro.sample("x", dist.ImproperUniform(constraints.real_vector, (), (d,)))
    numpyro.factor("quad", -0.5 * jnp.sum((x - mu) ** 2))


SMALL_FLOW = dict(num_proposals=8, num_global=1, num_local=1, flow_layers=2, flow_width=8)
EUCLIDEAN = {  # every registered strategy whose walkers live in R^d, small
    "Jarzynski": dict(num_walkers=64, step_size=0.1),
    "PCD": dict(num_walkers=64, step_size=0.1),
    "CD": dict(num_walkers=64, num_steps=2, step_size=0.1),
    "Unweighted": dict(num_walkers=64, step_size=0.1),
    "FlowMC": dict(num_walkers=64, step_size=0.05, **SMALL_FLOW),
    "FlowJarzynski": dict(num_walkers=64, step_size=0.05, **SMALL_FLOW),
    "ScoreMatching": dict(method="exact"),
}


def test_the_euclidean_list_holds_every_strategy_but_dual():
    assert set(EUCLIDEAN) == set(se.strategies.REGISTRY) - {"Dual"}


class MeanGaussian(eqx.Module):
    """The same model written by hand as an equinox energy: U(x) = |x - mu|^2 / 2."""

    mu: jax.Array

    def __call__(self, x):
        return 0.5 * jnp.sum((x - self.mu) ** 2)


@pytest.mark.parametrize("name", list(EUCLIDEAN))
def test_every_euclidean_strategy_trains_a_numpyro_energy_as_its_equinox_twin(name):
    """Each strategy trains the NumPyro model N(mu, I) (mu a numpyro.param) exactly as it trains
    the same energy written as an equinox module, from the same key: the same walkers, moves
    and updates, so the learned means agree to float32 rounding (1e-4 over 60 steps). Both
    also move mu from 0 towards the data mean (1, -1): a run that trains nothing, or trains a
    different site, stays 1.4 away."""
    data = jax.random.normal(jax.random.key(0), (400, 2)) + jnp.array([1.0, -1.0])
    xbar = np.asarray(data).mean(0)
    mus = []
    for energy in (from_numpyro(shifted_gaussian, 2, trainable=True), MeanGaussian(jnp.zeros(2))):
        strategy = se.strategies.build_strategy({"name": name, **EUCLIDEAN[name]})
        res = se.fit(
            energy,
            data,
            strategy=strategy,
            optimizer=optax.sgd(0.1),
            num_steps=60,
            key=jax.random.key(1),
            progress=False,
        )
        e = res.energy
        mus.append(np.asarray(e.param_values()["mu"] if hasattr(e, "param_values") else e.mu))
    np.testing.assert_allclose(mus[0], mus[1], atol=1e-4)
    assert np.linalg.norm(mus[0] - xbar) < 0.5 * np.linalg.norm(xbar), (mus[0], xbar)


def _blr(n=20, d=5, noise=0.5):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=d) + noise * rng.normal(size=n)).astype(np.float32)
    cov_y = noise**2 * np.eye(n) + x.astype(np.float64) @ x.T
    log_z = -0.5 * (n * LOG_2PI + np.linalg.slogdet(cov_y)[1] + y @ np.linalg.solve(cov_y, y))
    cov = np.linalg.inv(np.eye(d) + x.T.astype(np.float64) @ x / noise**2)
    return jnp.asarray(x), jnp.asarray(y), float(log_z), cov @ x.T @ y / noise**2, cov


def blr_model(x, y):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Normal(x @ w, 0.5).to_event(1), obs=y)


def test_posterior_evidence_and_moments_of_conjugate_regression():
    x, y, log_z, mean, cov = _blr()
    res = se.posterior(blr_model, x, y, key=jax.random.key(0), num_walkers=400, num_runs=6)
    # 6 independent runs, each unbiased for Z up to the adaptive schedule: |t| < 4 (t, 5 dof)
    # fails with probability 0.01; the se must be small for the check to mean something.
    # Flat bounds (4 here, 5 for the means below), not z_bound(6) = 3.76: every se in this
    # test comes from the spread of 6 runs, so the normal bound would understate the t_5 tail
    # (the t_5 quantile of the 1e-3 budget over 6 comparisons is 10.05).
    assert res.log_evidence_se < 0.15
    assert abs(res.log_evidence - log_z) < 4 * res.log_evidence_se
    w = res.samples["w"].reshape(-1, 5)
    sd = np.sqrt(np.diag(cov))
    # Runs are independent: the se of the mean of a coordinate is sd_runs / sqrt(6).
    run_means = res.samples["w"].mean(1)
    se_mean = run_means.std(0, ddof=1) / np.sqrt(6)
    assert np.all(np.abs(w.mean(0) - mean) < 5 * se_mean + 0.02 * sd)
    np.testing.assert_allclose(w.std(0), sd, rtol=0.15)
    summary = __import__("arviz").summary(res.to_arviz(), kind="stats")
    assert list(summary.index) == [f"w[{i}]" for i in range(5)]


@pytest.mark.slow
def test_posterior_hmc_and_constrained_sites():
    def model(y):
        scale = numpyro.sample("scale", dist.HalfNormal(2.0))
        numpyro.sample("y", dist.Normal(0.0, scale).expand([y.shape[0]]).to_event(1), obs=y)

    res = se.posterior(
        model, jnp.ones(4), key=jax.random.key(0), num_walkers=300, num_runs=4, kernel="hmc"
    )
    assert np.all(res.samples["scale"] > 0) and np.isfinite(res.log_evidence)
