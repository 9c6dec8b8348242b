"""Energies: exact log partitions, exact samplers, MLP zero init, tilted energies."""

import math

import equinox as eqx
import flowjax.distributions as fd
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax
import pytest
import scipy.integrate
import scipy.stats
from _stats import weighted_mean_and_se, z_bound

import smc_ebm as se
from smc_ebm.energies import MLP, Gaussian, GaussianMixture, Tilted

# Energies are float32: U is accurate to ~1e-7 |U| and the integrands below are evaluated
# where |U| <~ 100, so log Z from quadrature agrees to ~1e-5; quadrature error itself is
# small by comparison (scipy's own error estimate is asserted below 1e-6 relative).
LOGZ_ATOL = 2e-5


def _gmm(means, logits, sigma):
    return GaussianMixture(
        means=jnp.asarray(means, jnp.float32), logits=jnp.asarray(logits, jnp.float32), sigma=sigma
    )


# --------------------------------------------------------------------------- log partitions
def test_gmm_log_partition_1d_matches_quadrature():
    gmm = _gmm([[-2.0], [0.5], [3.0]], [0.3, -1.2, 0.8], sigma=0.7)
    u = jax.jit(lambda x: gmm(x))

    def integrand(x):
        return math.exp(-float(u(jnp.array([x], jnp.float32))))

    z, err = scipy.integrate.quad(integrand, -np.inf, np.inf, limit=200)
    assert err < 1e-6 * z
    np.testing.assert_allclose(float(gmm.log_partition()), math.log(z), atol=LOGZ_ATOL)


def test_gmm_log_partition_2d_matches_grid():
    gmm = _gmm([[-1.5, 0.5], [2.0, -1.0]], [1.0, -0.4], sigma=0.8)
    # Trapezoid rule on a grid with spacing 0.03 << sigma: for a smooth integrand that is
    # ~1e-30 at the border, the error is exponentially small (~exp(-2 pi^2 sigma^2 / dx^2)).
    g = np.linspace(-12.0, 12.0, 801)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
    u = np.asarray(jax.jit(jax.vmap(gmm))(pts), np.float64).reshape(xx.shape)
    z = np.trapezoid(np.trapezoid(np.exp(-u), g, axis=1), g)
    np.testing.assert_allclose(float(gmm.log_partition()), math.log(z), atol=LOGZ_ATOL)


def test_gaussian_log_partition_and_log_prob():
    mean = jnp.array([0.3, -1.0, 2.0])
    scale = jnp.array([0.5, 1.0, 2.5])
    g = Gaussian(mean, scale)
    expected = np.sum(np.log(np.sqrt(2 * np.pi) * np.asarray(scale)))
    np.testing.assert_allclose(float(g.log_partition()), expected, rtol=1e-6)
    x = jnp.array([1.0, 0.0, -3.0])
    ref = scipy.stats.norm.logpdf(np.asarray(x), np.asarray(mean), np.asarray(scale)).sum()
    np.testing.assert_allclose(float(g.log_prob(x)), ref, rtol=1e-6)
    # 1-D log partition by quadrature, also for a negative scale (U depends on s^2 only; a
    # trained scale may cross zero).
    for s1 in (1.3, -1.3):
        g1 = Gaussian(jnp.array([0.7]), jnp.array([s1]))
        z, _ = scipy.integrate.quad(
            lambda t, g1=g1: math.exp(-float(g1(jnp.array([t])))), -np.inf, np.inf
        )
        np.testing.assert_allclose(float(g1.log_partition()), math.log(z), atol=LOGZ_ATOL)
    st = Gaussian.standard(4)
    np.testing.assert_allclose(float(st.log_partition()), 2 * math.log(2 * math.pi), rtol=1e-6)


def test_gmm_log_partition_depends_on_unnormalised_logits():
    gmm = _gmm([[0.0, 0.0], [3.0, 1.0]], [0.2, -0.7], sigma=1.5)
    shifted = _gmm(gmm.means, gmm.logits + 2.0, sigma=1.5)
    np.testing.assert_allclose(float(shifted.log_partition() - gmm.log_partition()), 2.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(shifted.weights), np.asarray(gmm.weights), atol=1e-7)


# --------------------------------------------------------------------------- GMM basics
def test_gmm_weights_are_softmax_of_logits():
    logits = np.array([0.3, -2.0, 1.1, 0.0], np.float32)
    gmm = _gmm(np.zeros((4, 2)), logits, sigma=1.0)
    ref = np.exp(logits - logits.max())
    ref /= ref.sum()
    np.testing.assert_allclose(np.asarray(gmm.weights), ref, rtol=1e-6)
    np.testing.assert_allclose(float(jnp.sum(gmm.weights)), 1.0, rtol=1e-6)


def test_gmm_init_shapes_and_scale(key):
    gmm = GaussianMixture.init(key, num_modes=3, dim=5, scale=0.1, sigma=2.0)
    assert gmm.means.shape == (3, 5)
    assert gmm.logits.shape == (3,)
    assert gmm.dim == 5
    assert gmm.sigma == 2.0
    np.testing.assert_array_equal(np.asarray(gmm.logits), 0.0)
    np.testing.assert_allclose(np.asarray(gmm.weights), 1 / 3, rtol=1e-6)
    # The means are scale * N(0, I) with the same key.
    unit = GaussianMixture.init(key, num_modes=3, dim=5, scale=1.0)
    np.testing.assert_allclose(np.asarray(gmm.means), 0.1 * np.asarray(unit.means), rtol=1e-6)
    assert gmm.can_sample
    assert se.energies.has_log_partition(gmm)
    assert gmm.sample(key, 7).shape == (7, 5)


def test_gmm_sample_moments(key):
    means = np.array([[-4.0, 1.0], [0.0, -4.0], [5.0, 3.0]])
    logits = np.array([0.5, -0.5, 0.0])
    sigma = 0.6
    gmm = _gmm(means, logits, sigma)
    w = np.asarray(gmm.weights, np.float64)
    n = 200_000
    x = np.asarray(gmm.sample(key, n), np.float64)
    # SE = sample std / sqrt(n); 2 first moments + 2 second moments + 3 mode fractions = 7
    # comparisons.
    z = z_bound(7)
    for f, exact in [
        (x, w @ means),
        (x**2, w @ (means**2 + sigma**2)),
    ]:
        err = np.abs(f.mean(0) - exact)
        assert np.all(err < z * f.std(0) / np.sqrt(n)), (f.mean(0), exact)
    # Mode fractions: the closest pair of centres is 6.4 = 10.7 sigma apart, so nearest-centre
    # assignment misclassifies with probability < Phi(-5.3) ~ 1e-7, far below the binomial SE
    # (~1e-3). Tolerance: z binomial standard errors sqrt(w (1 - w) / n).
    comp = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    frac = np.bincount(comp, minlength=3) / n
    assert np.all(np.abs(frac - w) < z * np.sqrt(w * (1 - w) / n)), (frac, w)


def test_gaussian_sample_moments(key):
    g = Gaussian(jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0]))
    n = 100_000
    x = np.asarray(g.sample(key, n), np.float64)
    se_mean = x.std(0) / np.sqrt(n)
    z = z_bound(4)  # 2 means + 2 variances
    assert np.all(np.abs(x.mean(0) - [1.0, -2.0]) < z * se_mean)
    v = (x - x.mean(0)) ** 2
    assert np.all(np.abs(v.mean(0) - [0.25, 4.0]) < z * v.std(0) / np.sqrt(n))


# --------------------------------------------------------------------------- MLP
def test_mlp_zero_init_is_exactly_zero_and_trainable(key):
    k1, k2 = jax.random.split(key)
    x = 3.0 * jax.random.normal(k1, (64, 4))
    mlp = MLP(4, 16, 2, key=k2, zero_init=True)
    assert mlp.dim == 4
    out = jax.vmap(mlp)(x)
    assert out.shape == (64,)
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    # Not a dead network: the last layer receives a non-zero gradient.
    grads = eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(x) * x[:, 0]))(mlp)
    assert float(jnp.max(jnp.abs(grads.net.layers[-1].weight))) > 0
    # Without zero_init the net is not zero.
    assert float(jnp.max(jnp.abs(jax.vmap(MLP(4, 16, 2, key=k2))(x)))) > 0


def test_mlp_confinement_adds_quadratic(key):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (32, 3))
    mlp = MLP(3, 8, 1, key=k2, zero_init=True, confinement=2.5)
    np.testing.assert_allclose(
        np.asarray(jax.vmap(mlp)(x)), 1.25 * np.sum(np.asarray(x) ** 2, 1), rtol=1e-6
    )


# --------------------------------------------------------------------------- Tilted
D = 3
LOC = jnp.array([-1.0, 0.5, 2.0])
SCALE = jnp.array([2.0, 0.5, 1.0])

BASES = {
    "numpyro-normal": lambda: nd.Normal(LOC, SCALE).to_event(1),
    "numpyro-mvn": lambda: nd.MultivariateNormal(LOC, jnp.diag(SCALE**2)),
    "flowjax-normal": lambda: fd.Normal(LOC, SCALE),
}
BASE_PARAMS = [
    "numpyro-normal",
    "numpyro-mvn",
    "flowjax-normal",
]


@pytest.mark.parametrize("base_name", BASE_PARAMS)
def test_tilted_with_zero_net_is_minus_base_log_prob(key, base_name):
    base = BASES[base_name]()
    k1, k2 = jax.random.split(key)
    net = MLP(D, 8, 2, key=k1, zero_init=True)
    tilted = Tilted(net, base)
    assert tilted.dim == D
    x = 2.0 * jax.random.normal(k2, (50, D))
    ref = -jax.vmap(base.log_prob)(x)
    np.testing.assert_allclose(np.asarray(jax.vmap(tilted)(x)), np.asarray(ref), rtol=1e-6)
    assert tilted.net_is_zero(x)
    # The tilted energy is trainable through the net (and only the net by default).
    grads = eqx.filter_grad(lambda t: jnp.sum(jax.vmap(t)(x) * x[:, 0]))(tilted)
    assert float(jnp.max(jnp.abs(grads.net.net.layers[-1].weight))) > 0


@pytest.mark.parametrize("base_name", BASE_PARAMS)
def test_fit_initialises_tilted_walkers_from_the_base(key, base_name):
    """A zero-net tilted energy IS its base: fit starts the walkers at exact base samples.

    The data sit far from the base (N(5, 0.3^2)), so neither a data start nor an annealed
    start (which would leave non-zero weights) could pass.
    """
    base = BASES[base_name]()
    k1, k2, k3 = jax.random.split(key, 3)
    tilted = Tilted(MLP(D, 8, 2, key=k1, zero_init=True), base)
    data = 5.0 + 0.3 * jax.random.normal(k2, (300, D))
    n = 4000
    res = se.fit(
        tilted,
        data,
        strategy=se.Jarzynski(n, 0.1),
        optimizer=optax.sgd(0.01),
        num_steps=0,
        key=k3,
        progress=False,
    )
    assert res.steps == 0
    np.testing.assert_array_equal(np.asarray(res.log_weights), 0.0)
    # Z = E_base[e^{-net}] = 1 exactly: log Z_0 = 0.
    assert res.log_Z == 0.0
    x = np.asarray(res.walkers, np.float64)
    assert x.shape == (n, D)
    a = np.zeros(n)
    # Standard errors of the (uniformly weighted) sample mean and variance: D means + D
    # variances = 2 D comparisons.
    z = z_bound(2 * D)
    m, s = weighted_mean_and_se(x, a)
    assert np.all(np.abs(m - np.asarray(LOC)) < z * s), (m, LOC)
    v, sv = weighted_mean_and_se((x - np.asarray(LOC)) ** 2, a)
    assert np.all(np.abs(v - np.asarray(SCALE) ** 2) < z * sv), (v, SCALE**2)


# --------------------------------------------------------------------------- datasets
def test_two_mode_teacher(key):
    dim, n = 4, 40_000
    data = se.datasets.two_mode_teacher(key, n=n, dim=dim)
    assert data.samples.shape == (n, dim) and data.dim == dim
    np.testing.assert_allclose(np.asarray(data.info["weights"]), [0.25, 0.75], rtol=1e-6)
    np.testing.assert_allclose(data.log_Z, dim / 2 * math.log(2 * math.pi), rtol=1e-6)
    # log_prob is the normalised mixture density.
    x = np.asarray(data.samples[:5], np.float64)
    ref = np.log(
        0.25 * scipy.stats.multivariate_normal.pdf(x, np.eye(dim)[0] * -10.0, np.eye(dim))
        + 0.75 * scipy.stats.multivariate_normal.pdf(x, np.eye(dim)[0] * 6.0, np.eye(dim))
    )
    np.testing.assert_allclose(
        np.asarray(jax.vmap(data.log_prob)(data.samples[:5])), ref, rtol=1e-5
    )
    # Fraction in the left mode (binomial standard error) and the entropy: 2 comparisons.
    z = z_bound(2)
    frac = float(np.mean(np.asarray(data.samples[:, 0]) < -2.0))
    assert abs(frac - 0.25) < z * math.sqrt(0.25 * 0.75 / n)
    # Entropy estimate: mean of -log rho*, SE = std / sqrt(n).
    lp = np.asarray(jax.vmap(data.log_prob)(data.samples), np.float64)
    exact_h = dim / 2 * math.log(2 * math.pi * math.e) - (
        0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    )
    assert abs(float(data.entropy()) - exact_h) < z * lp.std() / math.sqrt(n)


@pytest.mark.parametrize(
    "base_name",
    [
        "numpyro-normal",
        "numpyro-mvn",
        "flowjax-normal",
    ],
)
def test_tilted_infers_dim_from_the_base(key, base_name):
    """A net without a ``dim`` attribute (a bare equinox MLP): the base gives the dimension."""
    net = eqx.nn.MLP(D, "scalar", 8, 1, key=key)
    assert not hasattr(net, "dim")
    assert Tilted(net, BASES[base_name]()).dim == D


def test_tilted_without_any_dim_asks_for_it(key):
    class Base(eqx.Module):
        def log_prob(self, x):
            return -0.5 * jnp.sum(x**2)

    net = eqx.nn.MLP(D, "scalar", 8, 1, key=key)
    with pytest.raises(ValueError, match="cannot infer the dimension; pass dim="):
        Tilted(net, Base())
    assert Tilted(net, Base(), dim=D).dim == D
