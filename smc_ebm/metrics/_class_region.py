r"""Annealing inside one class's region: the base and the target of ``class_masses(within=True)``.

The mass of class ``c``, :math:`M_c = \int \mathbf 1[\mathrm{clf}(x) = c]\, e^{-U(x)}\,dx`, is
the normalising constant of the energy restricted to the region :math:`R_c` where the
classifier says ``c``. Annealing from a base restricted to the same region, with MALA moves
that reject every proposal leaving it (the restricted energies are :math:`+\infty`, here a
penalty of ``PENALTY`` nats, outside), estimates :math:`M_c` directly: no walker leaves the
class, so none is wasted, and :math:`Z_0 = Z_{\mathcal N}\,P_{\mathcal N}(R_c)`, the
Gaussian's mass in the region, is estimated once by plain Monte Carlo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

# exp(-PENALTY) is 0 in float32 and float64: a MALA proposal out of the region is rejected.
PENALTY = 1e4


def in_region(index: Callable[[Array], Array], c: int, x: Any) -> np.ndarray:
    """``(n,)`` whether each of the samples ``x`` ``(n, d)`` is where ``index(x) == c``."""
    return np.asarray(jax.vmap(index)(jnp.asarray(x)) == c)


class InClass(eqx.Module):
    """``energy`` inside the region where ``index(x) == c``, ``+PENALTY`` outside."""

    energy: Any
    index: Callable[[Array], Array] = eqx.field(static=True)
    c: int = eqx.field(static=True)

    @property
    def dim(self) -> int:
        return int(self.energy.dim)

    def __call__(self, x: Array) -> Array:
        outside = jnp.where(self.index(x) == self.c, 0.0, PENALTY)
        return self.energy(x) + outside.astype(x.dtype)


class InClassBase(InClass):
    r"""A normalised base: a Gaussian restricted to the region.

    It samples by rejection and knows its log partition,
    :math:`\log Z_{\mathcal N} + \log P_{\mathcal N}(R_c)` (``log_inside`` the second term).
    """

    log_inside: float = eqx.field(static=True)

    def log_partition(self) -> Array:
        return self.energy.log_partition() + self.log_inside

    @property
    def can_sample(self) -> bool:
        return True

    def sample(self, key: PRNGKeyArray, n: int) -> Array:
        """``n`` draws of the Gaussian that fall in the region (called eagerly, on the host)."""
        kept, total = [], 0
        rate = math.exp(self.log_inside)
        while total < n:
            key, sub = jax.random.split(key)
            m = int(min(max(2 * (n - total) / rate, 1024), 2**22))
            x = self.energy.sample(sub, m)
            inside = in_region(self.index, self.c, x)
            kept.append(np.asarray(x)[inside])
            total += int(inside.sum())
        return jnp.asarray(np.concatenate(kept)[:n])


def in_class_base(
    gaussian: Any, index: Callable[[Array], Array], c: int, key: PRNGKeyArray, draws: int
) -> tuple[InClassBase, float]:
    r"""The Gaussian restricted to ``index(x) == c``, and the variance of its log mass there.

    The mass :math:`P` is estimated from ``draws`` draws; the variance of its log is
    :math:`(1 - P) / (P\,n)`.

    Raises:
        ValueError: no draw fell in the region.
    """
    x = gaussian.sample(key, int(draws))
    inside = int(np.sum(in_region(index, c, x)))
    if inside == 0:
        raise ValueError(
            f"class {c}: none of {draws} draws of its data's Gaussian is classified in it; "
            "the classifier and the data disagree."
        )
    p = inside / int(draws)
    return InClassBase(gaussian, index, c, math.log(p)), (1.0 - p) / (p * int(draws))
