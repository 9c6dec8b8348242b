r"""Toy densities with exact log-densities: Gaussian mixtures and rings (Grenioux et al., 2023).

Every distribution here is also a normalised energy (:math:`U = -\log p`, :math:`\log Z = 0`)
that can sample itself, so it serves as a teacher, a target for samplers, or a reference
for the metrics of :mod:`smc_ebm.metrics`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.datasets._teacher import Dataset
from smc_ebm.energies._base import AbstractEnergy


class Mixture(AbstractEnergy):
    r"""Gaussian mixture :math:`p(x) = \sum_k w_k \mathcal N(x; \mu_k, \Sigma_k)`, normalised.

    Build it with :func:`mixture`. As an energy, :math:`U(x) = -\log p(x)` and
    :math:`\log Z = 0`.

    Attributes:
        means: ``(K, d)`` centres.
        chols: ``(K, d, d)`` lower Cholesky factors of the covariances.
        log_weights: ``(K,)`` normalised log-weights.
    """

    means: Float[Array, "K d"]
    chols: Float[Array, "K d d"]
    log_weights: Float[Array, " K"]

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def weights(self) -> Float[Array, " K"]:
        return jnp.exp(self.log_weights)

    def component_log_probs(self, x: Float[Array, " d"]) -> Float[Array, " K"]:
        """``log w_k + log N(x; mu_k, Sigma_k)`` for each component, ``(d,) -> (K,)``."""

        def one(m, chol):
            z = jax.scipy.linalg.solve_triangular(chol, x - m, lower=True)
            log_det = jnp.sum(jnp.log(jnp.diagonal(chol)))
            return -0.5 * jnp.sum(z**2) - log_det - 0.5 * self.dim * math.log(2 * math.pi)

        return self.log_weights + jax.vmap(one)(self.means, self.chols)

    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """Exact normalised log-density of one sample."""
        return jax.nn.logsumexp(self.component_log_probs(x))

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return -self.log_prob(x)

    def log_partition(self) -> Float[Array, ""]:
        return jnp.zeros((), self.means.dtype)

    @property
    def can_sample(self) -> bool:
        return True

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        kc, kz = jax.random.split(key)
        comp = jax.random.categorical(kc, self.log_weights, shape=(n,))
        z = jax.random.normal(kz, (n, self.dim), self.means.dtype)
        return self.means[comp] + jnp.einsum("nij,nj->ni", self.chols[comp], z)


def mixture(means, covs, weights=None) -> Mixture:
    """A Gaussian mixture from its centres, covariances and weights.

    Args:
        means: ``(K, d)`` centres.
        covs: a scalar variance shared by all components, ``(K,)`` isotropic variances,
            ``(K, d)`` diagonal variances, or ``(K, d, d)`` covariance matrices.
        weights: ``(K,)`` positive weights (normalised here); default equal.

    Example:
        >>> import jax, smc_ebm as se
        >>> mix = se.datasets.mixture([[-1.0, 0.0], [1.0, 0.0]], 0.1, [0.25, 0.75])
        >>> mix.sample(jax.random.key(0), 3).shape
        (3, 2)
    """
    means = jnp.asarray(means, jnp.float32)
    if means.ndim != 2:
        raise ValueError(f"mixture: means must have shape (K, d); got {means.shape}.")
    k, d = means.shape
    covs = jnp.asarray(covs, jnp.float32)
    if covs.ndim == 0:
        covs = jnp.broadcast_to(covs * jnp.eye(d), (k, d, d))
    elif covs.shape == (k,):
        covs = covs[:, None, None] * jnp.eye(d)
    elif covs.shape == (k, d):
        covs = jax.vmap(jnp.diag)(covs)
    elif covs.shape != (k, d, d):
        raise ValueError(
            f"mixture: covs must be a scalar, (K,), (K, d) or (K, d, d) with K={k}, d={d}; "
            f"got {covs.shape}."
        )
    chols = jnp.linalg.cholesky(covs)
    if not bool(jnp.all(jnp.isfinite(chols))):
        raise ValueError("mixture: every covariance must be symmetric positive definite.")
    w = jnp.full((k,), 1.0 / k) if weights is None else jnp.asarray(weights, jnp.float32)
    if w.shape != (k,) or not bool(jnp.all(w > 0)):
        raise ValueError(f"mixture: weights must be {k} positive numbers; got {w}.")
    return Mixture(means, chols, jnp.log(w / jnp.sum(w)))


class Rings(AbstractEnergy):
    r"""Concentric rings in 2-D: radius :math:`r \sim \sum_k w_k \mathcal N(r_k, s^2)`, any angle.

    :math:`p(x) = \sum_k w_k \mathcal N(|x|; r_k, s^2) / (2\pi |x|)`, exact up to the mass of
    negative radii (below :math:`10^{-11}` for the default radii 1..4 with ``s = 0.15``).
    """

    radii: Float[Array, " K"]
    sd: float = eqx.field(static=True)
    log_weights: Float[Array, " K"]

    @property
    def dim(self) -> int:
        return 2

    def log_prob(self, x: Float[Array, " 2"]) -> Float[Array, ""]:
        r = jnp.sqrt(jnp.sum(x**2) + 1e-12)
        lp = self.log_weights - 0.5 * ((r - self.radii) / self.sd) ** 2
        lp = lp - math.log(self.sd * math.sqrt(2 * math.pi))
        return jax.nn.logsumexp(lp) - jnp.log(2 * math.pi * r)

    def __call__(self, x: Float[Array, " 2"]) -> Float[Array, ""]:
        return -self.log_prob(x)

    def log_partition(self) -> Float[Array, ""]:
        return jnp.zeros((), self.radii.dtype)

    @property
    def can_sample(self) -> bool:
        return True

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n 2"]:
        kc, kr, ka = jax.random.split(key, 3)
        comp = jax.random.categorical(kc, self.log_weights, shape=(n,))
        r = self.radii[comp] + self.sd * jax.random.normal(kr, (n,), self.radii.dtype)
        t = jax.random.uniform(ka, (n,), self.radii.dtype, 0.0, 2 * math.pi)
        return jnp.stack([r * jnp.cos(t), r * jnp.sin(t)], axis=1)


def _dataset(key: PRNGKeyArray, n: int, dist) -> Dataset:
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}.")
    info = {"distribution": dist}
    if isinstance(dist, Mixture):
        info.update(means=dist.means, weights=dist.weights)
    return Dataset(
        samples=dist.sample(key, n), log_prob=dist.log_prob, log_Z=0.0, teacher=dist, info=info
    )


def two_gaussians(key: PRNGKeyArray, n: int) -> Dataset:
    """The motivating mixture: 1/3 at -1.5 (1, 1) (cov 0.05 I), 2/3 at +1.5 (1, 1) (0.1 I)."""
    dist = mixture([[-1.5, -1.5], [1.5, 1.5]], jnp.array([0.05, 0.1]), [1.0 / 3.0, 2.0 / 3.0])
    return _dataset(key, n, dist)


def four_gaussians(key: PRNGKeyArray, n: int) -> Dataset:
    """Weights 0.1, 0.2, 0.3, 0.4 at x = -3, -1, 1, 3 on the horizontal axis, cov 0.05 I."""
    means = np.stack([np.linspace(-3.0, 3.0, 4), np.zeros(4)], axis=1)
    return _dataset(key, n, mixture(means, 0.05, [0.1, 0.2, 0.3, 0.4]))


def eight_gaussians(key: PRNGKeyArray, n: int, radius: float = 1.0, sd: float = 0.15) -> Dataset:
    """Eight equal Gaussians (sd ``sd``) with means evenly spaced on a circle of ``radius``."""
    t = 2 * np.pi * np.arange(8) / 8
    means = radius * np.stack([np.cos(t), np.sin(t)], axis=1)
    return _dataset(key, n, mixture(means, sd**2))


def rings(key: PRNGKeyArray, n: int, radii=(1.0, 2.0, 3.0, 4.0), sd: float = 0.15) -> Dataset:
    """Equal-weight rings of radii ``radii`` with radial sd ``sd`` and uniform angle."""
    radii = jnp.asarray(radii, jnp.float32)
    k = radii.shape[0]
    dist = Rings(radii, float(sd), jnp.full((k,), -math.log(k), jnp.float32))
    return _dataset(key, n, dist)


def four_mode_mixture(key: PRNGKeyArray, n: int, dim: int, a: float = 0.5919) -> Dataset:
    r"""Four equal unit Gaussians at :math:`a\,s` for sign patterns ``s`` (Grenioux et al., C.5).

    The patterns are :math:`(+,\dots,+)`, :math:`(-,\dots,-)`, and the two that flip one
    half of the coordinates: :math:`(+\dots+,-\dots-)` and :math:`(-\dots-,+\dots+)` (first
    half of size ``dim // 2``). Neighbouring modes are :math:`2a\sqrt{d/2}` apart.
    """
    if dim < 2:
        raise ValueError(f"four_mode_mixture: dim must be >= 2; got {dim}.")
    h = dim // 2
    s = np.ones((4, dim))
    s[1] = -1.0
    s[2, h:] = -1.0
    s[3, :h] = -1.0
    return _dataset(key, n, mixture(a * s, 1.0))
