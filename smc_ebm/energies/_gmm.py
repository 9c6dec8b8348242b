"""Gaussian mixture energy with an exact partition function and exact sampler."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy


class GaussianMixture(AbstractEnergy):
    r"""Unnormalised isotropic Gaussian mixture energy.

    .. math::
        U(x) = -\log \sum_{k=1}^K \exp\Big(\ell_k - \frac{|x-\mu_k|^2}{2\sigma^2}\Big),
        \qquad Z = (2\pi\sigma^2)^{d/2} \sum_k e^{\ell_k},

    so the model is :math:`\sum_k w_k \mathcal N(\mu_k, \sigma^2 I)` with
    :math:`w = \mathrm{softmax}(\ell)` and :math:`\log Z` depends on the logits: the logits are
    *unnormalised*, as in Carbone et al. (2023, Sec. 5.1), so that the contrastive term of the
    gradient matters.

    Args:
        means: ``(K, d)`` mode centres.
        logits: ``(K,)`` unnormalised log-weights.
        sigma: standard deviation of every mode (not trained: a static float).

    Example:
        >>> import jax, smc_ebm as se
        >>> gmm = se.energies.GaussianMixture.init(jax.random.key(0), n_modes=2, dim=3, scale=0.1)
        >>> gmm.weights.shape, gmm.sample(jax.random.key(1), 5).shape
        ((2,), (5, 3))
    """

    means: Float[Array, "K d"]
    logits: Float[Array, " K"]
    sigma: float = eqx.field(static=True, default=1.0)

    def __check_init__(self) -> None:
        if self.means.ndim != 2:
            raise ValueError(f"means must have shape (K, d); got {self.means.shape}.")
        if self.logits.shape != self.means.shape[:1]:
            raise ValueError(
                f"logits must have shape (K,) = {self.means.shape[:1]}; got {self.logits.shape}."
            )
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive; got {self.sigma}.")

    @classmethod
    def init(
        cls, key: PRNGKeyArray, n_modes: int, dim: int, scale: float = 1.0, sigma: float = 1.0
    ) -> GaussianMixture:
        """Means drawn from ``N(0, scale^2 I)``, equal weights (zero logits)."""
        means = scale * jax.random.normal(key, (n_modes, dim))
        return cls(means=means, logits=jnp.zeros(n_modes), sigma=sigma)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def weights(self) -> Float[Array, " K"]:
        """Mode weights ``softmax(logits)``."""
        return jax.nn.softmax(self.logits)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        sq = jnp.sum((x - self.means) ** 2, axis=-1)
        return -jax.nn.logsumexp(self.logits - 0.5 * sq / self.sigma**2)

    def log_partition(self) -> Float[Array, ""]:
        return 0.5 * self.dim * math.log(2 * math.pi * self.sigma**2) + jax.nn.logsumexp(
            self.logits
        )

    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """Normalised log-density of one sample."""
        return -self(x) - self.log_partition()

    @property
    def can_sample(self) -> bool:
        return True

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        k1, k2 = jax.random.split(key)
        comp = jax.random.categorical(k1, self.logits, shape=(n,))
        noise = jax.random.normal(k2, (n, self.dim), dtype=self.means.dtype)
        return self.means[comp] + self.sigma * noise
