"""Multilayer-perceptron energy with an optional quadratic confinement."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy


class MLP(AbstractEnergy):
    r"""Energy :math:`U(x) = \mathrm{net}(x) + \frac{c}{2}|x|^2`.

    ``net`` is an equinox MLP with scalar output. With ``confinement = c > 0`` the density
    :math:`e^{-U}` is integrable whenever ``net`` grows slower than quadratically (always
    true for SiLU/ReLU/tanh networks). ``zero_init=True`` zeroes the last layer so that
    ``net`` starts at exactly zero (used with :class:`Tilted`).

    Args:
        dim: sample dimension ``d``.
        width: hidden width.
        depth: number of hidden layers.
        key: PRNG key (keyword-only).
        confinement: coefficient ``c >= 0`` of the quadratic term (not trained).
        activation: hidden activation (default SiLU).
        zero_init: start with the output layer at zero.
    """

    net: eqx.nn.MLP
    confinement: float = eqx.field(static=True, default=0.0)
    _dim: int = eqx.field(static=True, default=0)

    def __init__(
        self,
        dim: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        confinement: float = 0.0,
        activation=jax.nn.silu,
        zero_init: bool = False,
    ) -> None:
        if confinement < 0:
            raise ValueError(f"confinement must be >= 0; got {confinement}.")
        net = eqx.nn.MLP(dim, "scalar", width, depth, activation=activation, key=key)
        if zero_init:
            last = net.layers[-1]
            net = eqx.tree_at(
                lambda n: (n.layers[-1].weight, n.layers[-1].bias),
                net,
                (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
            )
        self.net = net
        self.confinement = float(confinement)
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        out = self.net(x)
        if self.confinement:
            out = out + 0.5 * self.confinement * jnp.sum(x**2)
        return out
