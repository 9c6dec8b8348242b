"""One adapter: NumPyro and flowjax distributions as bases and starts of the library.

A base of :func:`smc_ebm.sample`, an ``anneal_base``, the base of a :class:`Tilted` energy or
the ``init`` of :func:`smc_ebm.diagnose` is an energy that can draw ``sample(key, n) -> (n, d)``
and knows its ``log_partition()``. :func:`as_base` turns a normalised distribution of either
library into one: ``U(x) = -log p(x)``, ``log Z = 0``.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy


def _numpyro_shape(dist: Any) -> tuple[int, ...] | None:
    try:
        from numpyro.distributions import Distribution
    except ImportError:  # pragma: no cover - numpyro is a dependency
        return None
    if isinstance(dist, Distribution):
        return tuple(dist.batch_shape) + tuple(dist.event_shape)
    return None


def _flowjax_shape(dist: Any) -> tuple[int, ...] | None:
    try:
        from flowjax.distributions import AbstractDistribution
    except ImportError:  # pragma: no cover - flowjax is a dependency
        return None
    if isinstance(dist, AbstractDistribution):
        return tuple(dist.shape)
    return None


def distribution_shape(dist: Any) -> tuple[int, ...] | None:
    """Shape of one draw of a NumPyro or flowjax distribution; ``None`` for anything else."""
    shape = _numpyro_shape(dist)
    return _flowjax_shape(dist) if shape is None else shape


class DistributionEnergy(AbstractEnergy):
    r"""A normalised distribution as an energy: :math:`U(x) = -\log p(x)`, :math:`\log Z = 0`.

    Draws of shape ``shape`` (a NumPyro distribution's ``batch_shape + event_shape``, a
    flowjax distribution's ``shape``) are flattened to vectors of ``dim`` numbers; the
    log-density of a vector is the sum over the batch. Build it with :func:`as_base`.

    Attributes:
        dist: the wrapped distribution (a pytree: its arrays are the module's leaves).
        shape: the shape of one draw.
    """

    dist: Any
    shape: tuple[int, ...] = eqx.field(static=True)

    @property
    def dim(self) -> int:
        return int(math.prod(self.shape))

    def log_prob(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        """Normalised log-density of one flat sample."""
        return jnp.sum(self.dist.log_prob(jnp.reshape(x, self.shape)))

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        return -self.log_prob(x)

    def log_partition(self) -> Float[Array, ""]:
        return jnp.zeros(())

    @property
    def can_sample(self) -> bool:
        return True

    def sample(self, key: PRNGKeyArray, n: int | tuple[int]) -> Float[Array, "n dim"]:
        """``n`` draws, shape ``(n, dim)`` (``n`` may also be ``(n,)``, as a distribution takes)."""
        n = int(n[0]) if isinstance(n, tuple) else int(n)
        return jnp.reshape(self.dist.sample(key, (n,)), (n, self.dim))


def is_distribution(obj: Any) -> bool:
    """Whether ``obj`` is a NumPyro or flowjax distribution."""
    return distribution_shape(obj) is not None


def as_base(obj: Any) -> Any:
    """A base energy from a NumPyro or flowjax distribution; anything else is returned as is.

    The distribution must be normalised (its ``log_prob`` a log-density): the base's
    ``log_partition()`` is 0. Draws are flattened, so ``dist.Normal(0, 3).expand([2])`` and
    ``dist.Normal(0, 3).expand([2]).to_event(1)`` give the same 2-d base.

    Example:
        >>> import numpyro.distributions as dist
        >>> base = as_base(dist.Normal(0.0, 3.0).expand([2]).to_event(1))
        >>> base.dim, float(base.log_partition())
        (2, 0.0)
    """
    shape = distribution_shape(obj)
    if shape is None:
        return obj
    if not shape:
        shape = (1,)
    return DistributionEnergy(obj, shape)
