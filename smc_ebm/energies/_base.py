"""The energy interface: an equinox module mapping one sample to a scalar energy."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class AbstractEnergy(eqx.Module):
    r"""An energy :math:`U_\theta(x)`, the model being :math:`\rho_\theta \propto e^{-U_\theta}`.

    Subclasses implement ``__call__`` for ONE sample ``x`` of shape ``(dim,)`` and return a
    scalar; the library vmaps over walkers and data. Energies that know their normaliser
    override :meth:`log_partition`; energies that can draw exact samples override
    :meth:`sample` and set ``can_sample`` to ``True``.
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Dimension ``d`` of a sample."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, ""]:
        """Energy of one sample ``x`` of shape ``(dim,)``."""

    def log_partition(self) -> Float[Array, ""]:
        r"""Exact :math:`\log Z_\theta = \log \int e^{-U_\theta(x)} dx`, when known."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form log partition.")

    @property
    def can_sample(self) -> bool:
        """Whether :meth:`sample` draws exact samples of the model."""
        return False

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n dim"]:
        """Draw ``n`` exact samples of the model, when possible."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample itself.")


def has_log_partition(energy: AbstractEnergy) -> bool:
    """Whether ``energy.log_partition()`` is implemented (checked without tracing).

    Any callable equinox module is an energy; one without the method has no known log Z.
    """
    log_partition = getattr(energy, "log_partition", None)
    if log_partition is None:
        return False
    try:
        jax.eval_shape(log_partition)
    except NotImplementedError:
        return False
    return True


def energy_batch(energy: AbstractEnergy, x: Float[Array, "n dim"]) -> Float[Array, " n"]:
    """Energies of a batch of samples, ``(n, dim) -> (n,)``."""
    return jax.vmap(energy)(x)


def mean_energy(energy: AbstractEnergy, x: Float[Array, "n dim"]) -> Float[Array, ""]:
    """Mean energy of a batch, the data term of the cross-entropy."""
    return jnp.mean(energy_batch(energy, x))


def split_energy(energy: eqx.Module) -> tuple[Any, Any]:
    """Split an energy into its trainable arrays and its static structure."""
    return eqx.partition(energy, eqx.is_inexact_array)
