"""Diagonal Gaussian energy: a tractable base and an analytic test target."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy


class Gaussian(AbstractEnergy):
    r"""Diagonal Gaussian energy of :math:`\mathcal N(m, \mathrm{diag}(s^2))`.

    :math:`U(x) = \sum_i (x_i - m_i)^2 / (2 s_i^2)`.
    Normalised up to the exact constant :math:`\log Z = \sum_i \log(\sqrt{2\pi} s_i)`.

    Args:
        mean: ``(d,)`` mean ``m``.
        scale: ``(d,)`` standard deviations ``s > 0``.
    """

    mean: Float[Array, " d"]
    scale: Float[Array, " d"]

    def __check_init__(self) -> None:
        if self.mean.ndim != 1 or self.scale.shape != self.mean.shape:
            raise ValueError(
                f"mean and scale must both have shape (d,); got {self.mean.shape}, "
                f"{self.scale.shape}."
            )

    @classmethod
    def standard(cls, dim: int) -> Gaussian:
        """The standard normal ``N(0, I_d)``."""
        return cls(jnp.zeros(dim), jnp.ones(dim))

    @classmethod
    def fit_to(cls, data: Float[Array, "n d"], min_scale: float = 1e-3) -> Gaussian:
        """Moment-matched diagonal Gaussian of ``data`` ``(n, d)``, scales floored at min_scale."""
        return cls(jnp.mean(data, 0), jnp.maximum(jnp.std(data, 0), min_scale))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return 0.5 * jnp.sum(((x - self.mean) / self.scale) ** 2)

    def log_partition(self) -> Float[Array, ""]:
        # |s|: the energy depends on s^2 only, and a trained scale may cross zero (SGD).
        return jnp.sum(jnp.log(jnp.abs(self.scale))) + 0.5 * self.dim * math.log(2 * math.pi)

    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """Normalised log-density of one sample."""
        return -self(x) - self.log_partition()

    @property
    def can_sample(self) -> bool:
        return True

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        eps = jax.random.normal(key, (n, self.dim), dtype=self.mean.dtype)
        return self.mean + self.scale * eps
