"""Squared-norm energies: half the squared norm of a vector-valued network."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy


class SquaredNorm(AbstractEnergy):
    r"""Energy :math:`U(x) = \frac12 |f(x)|^2` of a network :math:`f: \mathbb R^d \to \mathbb R^k`.

    Where a SiLU or ReLU network ends up growing linearly, away from the data, ``U`` grows
    quadratically: the tails are Gaussian, as they are for mixtures of Gaussians and for
    rings with a Gaussian radial profile. A scalar network's energy extrapolates linearly
    instead, and no data or walker reaches those regions to correct it. A linear ``f(x) =
    A(x - m)`` is exactly the Gaussian :math:`\mathcal N(m, (A^\top A)^{-1})`.

    ``U >= 0``, with equality where ``f`` vanishes. Compose it with :class:`Tilted` to start
    from a base distribution (``f`` then starts near, not at, zero).

    Args:
        net: a callable module ``(d,) -> (k,)``, e.g. ``eqx.nn.MLP(d, k, width, depth, ...)``;
            see :meth:`mlp`.
        dim: the sample dimension (read from ``net.in_size`` when not given).
    """

    net: Any
    _dim: int = eqx.field(static=True)

    def __init__(self, net: Any, dim: int | None = None):
        if dim is None:
            dim = getattr(net, "in_size", None)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(
                f"SquaredNorm: cannot infer the dimension from net; pass dim=. Got {dim!r}."
            )
        self.net = net
        self._dim = dim

    @classmethod
    def mlp(
        cls,
        dim: int,
        out: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation=jax.nn.silu,
    ) -> SquaredNorm:
        """``U = |f|^2 / 2``, ``f`` an equinox MLP ``(dim,) -> (out,)`` (SiLU layers by default)."""
        if out < 1:
            raise ValueError(f"SquaredNorm.mlp: out must be >= 1; got {out}.")
        return cls(eqx.nn.MLP(dim, out, width, depth, activation=activation, key=key), dim)

    @property
    def dim(self) -> int:
        return self._dim

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return 0.5 * jnp.sum(jnp.square(self.net(x)))
