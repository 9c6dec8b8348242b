"""Gaussian mixture energy with an exact partition function and exact sampler."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm._naming import renamed
from smc_ebm.energies._base import AbstractEnergy, split_energy


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
        >>> gmm = se.energies.GaussianMixture.init(jax.random.key(0), num_modes=2, dim=3, scale=0.1)
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
    @renamed()
    def init(
        cls, key: PRNGKeyArray, num_modes: int, dim: int, scale: float = 1.0, sigma: float = 1.0
    ) -> GaussianMixture:
        """Means drawn from ``N(0, scale^2 I)``, equal weights (zero logits)."""
        means = scale * jax.random.normal(key, (num_modes, dim))
        return cls(means=means, logits=jnp.zeros(num_modes), sigma=sigma)

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

    def evaluate_batch(
        self, x: Float[Array, "n d"]
    ) -> tuple[Float[Array, " n"], Float[Array, "n d"], Callable[[Array], Any]] | None:
        r"""Energies, x-gradients and a weighted parameter gradient in closed form.

        The contract of :func:`smc_ebm.kernels.evaluate`. With responsibilities
        :math:`r_{ik} = \mathrm{softmax}_k(\ell_k - |x_i-\mu_k|^2 / 2\sigma^2)` (``(n, K)``),

        .. math::
            \nabla_x U(x_i) = \frac{x_i - \sum_k r_{ik}\mu_k}{\sigma^2}, \quad
            \sum_i w_i \frac{\partial U(x_i)}{\partial \ell_k} = -c_k, \quad
            \sum_i w_i \frac{\partial U(x_i)}{\partial \mu_k}
            = -\frac{\sum_i w_i r_{ik} x_i - c_k \mu_k}{\sigma^2},

        with :math:`c_k = \sum_i w_i r_{ik}`. Only ``r`` is kept for ``param_grad``, whose
        cost is one ``(K, n) x (n, d)`` product, where per-walker gradients would write and
        read an ``(n, K (d + 1))`` array. Returns ``None`` (the generic path) for subclasses
        that change the energy.
        """
        if type(self).__call__ is not GaussianMixture.__call__ or x.ndim != 2:
            return None
        s2 = self.sigma**2
        sq = jnp.sum((x[:, None, :] - self.means[None]) ** 2, axis=-1)  # (n, K)
        z = self.logits - 0.5 * sq / s2
        u = -jax.nn.logsumexp(z, axis=-1)
        r = jax.nn.softmax(z, axis=-1)
        g = (x - r @ self.means) / s2
        params = split_energy(self)[0]  # the pytree that evaluate's callers expect

        def param_grad(w: Float[Array, " n"]) -> Any:
            wr = w.astype(x.dtype)[:, None] * r  # (n, K)
            c = jnp.sum(wr, axis=0)
            grad_means = -(wr.T @ x - c[:, None] * self.means) / s2
            return eqx.tree_at(lambda p: (p.means, p.logits), params, (grad_means, -c))

        return u, g, param_grad

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
