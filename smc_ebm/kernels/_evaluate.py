"""One forward pass per walker, reused for the energy, its x-gradient and dU/dtheta."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from smc_ebm.energies._base import split_energy

ParamGradFn = Callable[[Float[Array, " n"]], Any]


# Energies with at most this many trainable numbers per input dimension get per-walker
# parameter gradients (memory O(N P) = O(N d)); larger ones (neural nets) a second backward pass.
PER_WALKER_PARAMS_PER_DIM = 8


def _count(params: Any) -> int:
    return sum(int(leaf.size) for leaf in jax.tree.leaves(params))


def n_params(energy: eqx.Module) -> int:
    """Number of trainable numbers (inexact array entries) of an energy."""
    return _count(split_energy(energy)[0])


def per_walker_sized(params: Any, dim: int) -> bool:
    """Whether trainable arrays ``params`` are few enough for per-walker parameter gradients.

    That is at most ``PER_WALKER_PARAMS_PER_DIM * dim`` numbers, ``dim`` the input dimension.
    """
    return _count(params) <= PER_WALKER_PARAMS_PER_DIM * dim


def _evaluate_batch(energy: eqx.Module, x: Float[Array, "n d"]) -> Any:
    """The energy's own ``evaluate_batch(x)`` triple, or ``None`` when it has none (or declines)."""
    fast = getattr(energy, "evaluate_batch", None)
    return None if fast is None else fast(x)


def evaluate(
    energy: eqx.Module, x: Float[Array, "n d"]
) -> tuple[Float[Array, " n"], Float[Array, "n d"], ParamGradFn]:
    r"""Energies, x-gradients and a weighted-parameter-gradient function, from ONE forward pass.

    Returns ``(U, G, param_grad)`` with ``U[i] = U(x_i)``, ``G[i] = \nabla_x U(x_i)`` and
    ``param_grad(w) = \sum_i w_i \, \partial_\theta U(x_i)`` (a pytree shaped like the
    energy's trainable arrays). The weights ``w`` may depend on ``U`` and ``G`` (as Jarzynski
    weights do), so the parameter gradient cannot share the backward pass of ``G`` in general:

    * an energy with ``P <= PER_WALKER_PARAMS_PER_DIM * d`` trainable numbers (e.g. a
      Gaussian) gets the per-walker gradients :math:`\partial_\theta U(x_i)` in the same
      backward pass as ``G`` (an ``(n, P)`` array, the size of ``x`` up to that factor), and
      ``param_grad`` is a weighted sum over walkers;
    * a larger energy (a neural net) keeps the forward pass's residuals and ``param_grad``
      runs one more backward pass with cotangent ``w``;
    * an energy with an ``evaluate_batch(x)`` method that returns this triple (not ``None``)
      is evaluated by it: :class:`~smc_ebm.energies.MLP` and a :class:`~smc_ebm.energies.Tilted`
      MLP keep the layer adjoints of the ``G`` pass and form only the weighted outer
      products for ``param_grad``, the cost of PCD's single pass;
      :class:`~smc_ebm.energies.GaussianMixture` keeps its responsibilities (closed form).
    """
    out = _evaluate_batch(energy, x)
    if out is not None:
        return out
    params, static = split_energy(energy)
    if per_walker_sized(params, x.shape[-1]):

        def one(p, xi):
            return eqx.combine(p, static)(xi)

        u, (jac, g) = jax.vmap(jax.value_and_grad(one, argnums=(0, 1)), in_axes=(None, 0))(
            params, x
        )

        def per_walker_grad(w: Float[Array, " n"]) -> Any:
            return jax.tree.map(lambda j: jnp.tensordot(w.astype(j.dtype), j, axes=1), jac)

        return u, g, per_walker_grad

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

    Returns ``(U, G, mean_i \partial_\theta U(x_i))``. An energy's ``evaluate_batch`` is used
    here too, with uniform weights, so that PCD and unweighted walkers get the same closed-form
    or shared-backward evaluation as weighted ones.
    """
    out = _evaluate_batch(energy, x)
    if out is not None:
        u, g, param_grad = out
        return u, g, param_grad(jnp.full_like(u, 1.0 / u.shape[0]))
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
