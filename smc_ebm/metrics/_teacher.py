"""Metrics against a known teacher: the exact KL and the weight of a mixture mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def exact_kl(
    samples: Float[Array, "n d"], teacher_log_prob: Callable[[Array], Array]
) -> Callable[[Any], Array]:
    r"""KL(rho* || rho_theta) with the model's EXACT log Z (energies with ``log_partition``).

    :math:`\mathrm{KL} \approx \overline{\log\rho_*(x)} + \overline{U_\theta(x)} + \log Z_\theta`
    over the teacher samples ``x``; the only Monte Carlo error is that of the sample means.
    Returns a function of the energy, for ``fit(..., metrics={"kl": exact_kl(...)})``.
    """
    log_p = jnp.mean(jax.vmap(teacher_log_prob)(samples))

    def kl(energy: Any) -> Array:
        return log_p + jnp.mean(jax.vmap(energy)(samples)) + energy.log_partition()

    return kl


def mode_weight(index: int = 0) -> Callable[[Any], Array]:
    """Weight of mode ``index`` of a :class:`~smc_ebm.energies.GaussianMixture`."""

    def weight(energy: Any) -> Array:
        return energy.weights[index]

    return weight
