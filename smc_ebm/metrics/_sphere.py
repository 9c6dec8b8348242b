"""Metrics against a teacher energy known up to its normaliser: KL from samples, score error.

Written for the sphere teachers of DESIGN 1.4 but valid for any energy: gradients are taken
on the energy's manifold (:func:`smc_ebm.manifolds.manifold_of`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from smc_ebm.manifolds import manifold_of


def kl_estimate(test_samples: Float[Array, "n d"], teacher: Any) -> Callable[[Any], Array]:
    r"""KL(rho* || rho_theta) from samples of the teacher, neither normaliser needed.

    With :math:`\rho_* \propto e^{-U_*}` and :math:`\rho_\theta \propto e^{-U_\theta}` on the
    same base measure, :math:`\log(Z_\theta/Z_*) = \log\mathbb E_{\rho_*}[e^{U_* - U_\theta}]`,
    so

    .. math::
        \mathrm{KL} \approx \log\overline{e^{U_*(x) - U_\theta(x)}}
            + \overline{U_\theta(x) - U_*(x)}

    over the test samples ``x ~ rho*`` (DESIGN 1.4 with ``U = beta f``). The estimate is
    ``>= 0`` by Jensen, consistent, and biased upwards by about ``Var(e^{U_* - U})/(2n)``.
    Returns a function of the energy for ``fit(..., metrics={"kl": kl_estimate(...)})``.
    """
    x = jnp.asarray(test_samples)
    u_star = jax.vmap(teacher)(x)

    def kl(energy: Any) -> Array:
        d = u_star - jax.vmap(energy)(x)
        return jax.nn.logsumexp(d) - jnp.log(d.shape[0]) - jnp.mean(d)

    return kl


def score_error(samples: Float[Array, "n d"], teacher: Any) -> Callable[[Any], Array]:
    r"""Score metric :math:`\overline{|\nabla U_\theta(x) - \nabla U_*(x)|^2}` on ``samples``.

    Gradients are Riemannian (projected onto the tangent space of the energy's manifold, so
    on the sphere the radial part, which does not act on the density, is ignored).
    """
    x = jnp.asarray(samples)
    manifold = manifold_of(teacher)
    g_star = manifold.to_tangent(x, jax.vmap(jax.grad(teacher))(x))

    def score(energy: Any) -> Array:
        g = manifold.to_tangent(x, jax.vmap(jax.grad(energy))(x))
        return jnp.mean(jnp.sum((g - g_star) ** 2, axis=-1))

    return score
