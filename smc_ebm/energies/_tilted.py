"""Tilted energies: a network correction on top of a tractable base distribution."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._adapter import as_base
from smc_ebm.energies._base import AbstractEnergy, split_energy


class Tilted(AbstractEnergy):
    r"""Energy :math:`U(x) = \mathrm{net}(x) - \log \rho_0(x)` for a base density :math:`\rho_0`.

    The model is :math:`\rho_\theta(x) \propto e^{-\mathrm{net}(x)} \rho_0(x)`, so
    :math:`Z_\theta = \mathbb E_{\rho_0}[e^{-\mathrm{net}}]` and, when ``net`` is identically
    zero, the model *is* the base: it can be sampled exactly and :math:`\log Z = 0`.

    Args:
        net: any callable module ``(d,) -> ()`` (e.g. :class:`MLP` with ``zero_init=True``).
        base: a distribution with ``log_prob(x)`` and ``sample(key, shape)`` — numpyro and
            flowjax distributions both fit. The base's parameters are held fixed (they are
            wrapped in ``stop_gradient``) unless ``train_base=True``.
        dim: the sample dimension (inferred from ``net`` or ``base`` when possible).
    """

    net: Any
    base: Any
    _dim: int = eqx.field(static=True)
    train_base: bool = eqx.field(static=True, default=False)

    def __init__(self, net: Any, base: Any, dim: int | None = None, train_base: bool = False):
        if getattr(base, "batch_shape", ()) or len(getattr(base, "event_shape", (0,))) > 1:
            base = as_base(base)  # a NumPyro batch, or a matrix event: flat draws, summed log_prob
        if dim is None:
            dim = getattr(net, "dim", getattr(base, "dim", None))
        if dim is None:
            for attr in ("event_shape", "shape"):  # numpyro: event_shape; flowjax: shape
                shape = getattr(base, attr, None)
                if shape is not None and not callable(shape) and len(shape):
                    dim = int(shape[-1])
                    break
        if dim is None:
            raise ValueError("Tilted: cannot infer the dimension; pass dim=.")
        self.net = net
        self.base = base
        self._dim = int(dim)
        self.train_base = train_base

    @property
    def dim(self) -> int:
        return self._dim

    def _base(self) -> Any:
        if self.train_base:
            return self.base
        # Only the array leaves: flowjax distributions also hold functions.
        return jax.tree.map(
            lambda leaf: jax.lax.stop_gradient(leaf) if eqx.is_array(leaf) else leaf, self.base
        )

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return jnp.reshape(self.net(x), ()) - jnp.reshape(self._base().log_prob(x), ())

    def evaluate_batch(
        self, x: Float[Array, "n d"]
    ) -> tuple[Float[Array, " n"], Float[Array, "n d"], Any] | None:
        """The net's shared-backward evaluation (see :meth:`MLP.evaluate_batch`), minus the base.

        ``None`` (the generic path) when the net has none or the base is trained.
        """
        fast = getattr(self.net, "evaluate_batch", None)
        out = None if fast is None or self.train_base else fast(x)
        if out is None:
            return None
        u_net, g_net, net_grad = out
        base = self._base()
        lp, glp = jax.vmap(jax.value_and_grad(lambda z: jnp.reshape(base.log_prob(z), ())))(x)
        params = split_energy(self)[0]  # the pytree that evaluate's callers expect
        zero_base = jax.tree.map(jnp.zeros_like, params.base)

        def param_grad(w: Float[Array, " n"]) -> Any:
            return eqx.tree_at(
                lambda p: (p.net, p.base), params, (net_grad(w), zero_base), is_leaf=_is_none
            )

        return u_net - lp, g_net - glp, param_grad

    def net_is_zero(self, points: Float[Array, "n d"]) -> bool:
        """Host-side check that the net is exactly zero at ``points`` (then model == base)."""
        vals = jax.vmap(self.net)(points)
        return bool(jnp.all(vals == 0.0))

    def sample_base(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """Samples of the base distribution, shape ``(n, d)``."""
        return jnp.reshape(self.base.sample(key, (n,)), (n, self.dim))


def _is_none(node: Any) -> bool:
    return node is None
