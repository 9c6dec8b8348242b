"""One forward pass per walker, reused for the energy, its x-gradient and dU/dtheta."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

ParamGradFn = Callable[[Float[Array, " n"]], Any]


def split_energy(energy: eqx.Module) -> tuple[Any, Any]:
    """Split an energy into its trainable arrays and its static structure."""
    return eqx.partition(energy, eqx.is_inexact_array)


def evaluate(
    energy: eqx.Module, x: Float[Array, "n d"]
) -> tuple[Float[Array, " n"], Float[Array, "n d"], ParamGradFn]:
    r"""Energies, x-gradients and a weighted-parameter-gradient function, from ONE forward pass.

    Returns ``(U, G, param_grad)`` with ``U[i] = U(x_i)``, ``G[i] = \nabla_x U(x_i)`` and
    ``param_grad(w) = \sum_i w_i \, \partial_\theta U(x_i)`` (a pytree shaped like the
    energy's trainable arrays). ``param_grad`` reuses the forward pass's residuals, so the
    weights ``w`` may depend on ``U`` and ``G`` (as Jarzynski weights do).
    """
    params, static = split_energy(energy)

    def batch_energy(p, xs):
        return jax.vmap(eqx.combine(p, static))(xs)

    u, vjp = jax.vjp(batch_energy, params, x)
    _, g = vjp(jnp.ones_like(u))

    def param_grad(w: Float[Array, " n"]) -> Any:
        return vjp(w.astype(u.dtype))[0]

    return u, g, param_grad


def evaluate_uniform(
    energy: eqx.Module, x: Float[Array, "n d"]
) -> tuple[Float[Array, " n"], Float[Array, "n d"], Any]:
    r"""As :func:`evaluate` with uniform weights ``1/n``, in a single backward pass.

    Returns ``(U, G, mean_i \partial_\theta U(x_i))``.
    """
    params, static = split_energy(energy)
    n = x.shape[0]

    def batch_energy(p, xs):
        return jax.vmap(eqx.combine(p, static))(xs)

    u, vjp = jax.vjp(batch_energy, params, x)
    pg, g = vjp(jnp.full_like(u, 1.0 / n))
    return u, g * n, pg


def energies(energy: eqx.Module, x: Float[Array, "n d"]) -> Float[Array, " n"]:
    """Energies only (no gradient), ``(n, d) -> (n,)``."""
    return jax.vmap(energy)(x)


def mean_param_grad(energy: eqx.Module, x: Float[Array, "n d"]) -> tuple[Float[Array, ""], Any]:
    r"""``(mean_i U(x_i), mean_i \partial_\theta U(x_i))``: the data term of the gradient."""
    params, static = split_energy(energy)

    def mean_energy(p):
        return jnp.mean(jax.vmap(eqx.combine(p, static))(x))

    return jax.value_and_grad(mean_energy)(params)
