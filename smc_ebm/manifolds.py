r"""The space the samples live in: :math:`\mathbb R^d` or the unit sphere :math:`S^{d-1}`.

An energy says where its samples live through a ``manifold`` attribute (default
:data:`EUCLIDEAN`, read with :func:`manifold_of`); strategies ask the manifold for the
Langevin move, the tangent projection of gradients and, where it exists, the uniform
distribution. Nothing else in the library special-cases the sphere.

Example:
    >>> import jax, jax.numpy as jnp, smc_ebm as se
    >>> sphere = se.manifolds.Sphere()
    >>> x = sphere.uniform(jax.random.key(0), 4, 3)
    >>> y = sphere.langevin(jax.random.key(1), x, jnp.zeros_like(x), 0.1)
    >>> bool(jnp.allclose(jnp.linalg.norm(y, axis=-1), 1.0, atol=1e-5))
    True
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.kernels import Kernel, MoveInfo, standard_normal, ula_propose

__all__ = ["EUCLIDEAN", "SPHERE", "Euclidean", "ProjectedLangevin", "Sphere", "manifold_of"]


@dataclasses.dataclass(frozen=True)
class Euclidean:
    r"""The flat space :math:`\mathbb R^d`: ULA moves, no projection."""

    def project(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        """The nearest point of the manifold (identity)."""
        return x

    def to_tangent(
        self, x: Float[Array, "... d"], v: Float[Array, "... d"]
    ) -> Float[Array, "... d"]:
        """Project ``v`` onto the tangent space at ``x`` (identity)."""
        return v

    def langevin(
        self,
        key: PRNGKeyArray,
        x: Float[Array, "n d"],
        grad: Float[Array, "n d"],
        step_size: float | Array,
    ) -> Float[Array, "n d"]:
        r"""ULA move :math:`x' = x - h \nabla U(x) + \sqrt{2h}\,\xi` from the cached gradient."""
        return ula_propose(key, x, grad, step_size)

    def uniform(self, key: PRNGKeyArray, n: int, dim: int) -> Float[Array, "n d"]:
        """There is no uniform distribution on ``R^d``."""
        raise ValueError(
            "there is no uniform distribution on R^d; start the walkers at 'data' or 'model'."
        )


@dataclasses.dataclass(frozen=True)
class Sphere:
    r"""The unit sphere :math:`S^{d-1} = \{x \in \mathbb R^d : |x| = 1\}`.

    Moves are projected (retracted) Langevin steps: the drift and the noise are projected onto
    the tangent space :math:`T_x = \{v : v \cdot x = 0\}` and the result is normalised,

    .. math::
        x' = \frac{x + P_x(-h \nabla U(x) + \sqrt{2h}\,\xi)}
                  {|x + P_x(-h \nabla U(x) + \sqrt{2h}\,\xi)|},
        \qquad P_x v = v - (v \cdot x)\,x,

    a first-order discretisation of the Langevin diffusion of :math:`e^{-U}` with respect to
    the uniform measure of the sphere (the normalisation supplies the Itô drift
    :math:`-(d-1)h\,x` to leading order).
    """

    def project(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        """Normalise onto the sphere."""
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)

    def to_tangent(
        self, x: Float[Array, "... d"], v: Float[Array, "... d"]
    ) -> Float[Array, "... d"]:
        """``P_x v = v - (v . x) x``: the Riemannian part of a Euclidean gradient ``v``."""
        return v - jnp.sum(v * x, axis=-1, keepdims=True) * x

    def langevin(
        self,
        key: PRNGKeyArray,
        x: Float[Array, "n d"],
        grad: Float[Array, "n d"],
        step_size: float | Array,
    ) -> Float[Array, "n d"]:
        """Projected Langevin move from the cached Euclidean gradient ``grad`` (see the class)."""
        noise = standard_normal(key, x.shape, x.dtype)
        v = self.to_tangent(x, -step_size * grad + jnp.sqrt(2.0 * step_size) * noise)
        return self.project(x + v)

    def uniform(self, key: PRNGKeyArray, n: int, dim: int) -> Float[Array, "n d"]:
        """``n`` independent uniform points on ``S^{dim-1}`` (normalised Gaussians)."""
        return self.project(jax.random.normal(key, (n, dim)))


EUCLIDEAN = Euclidean()
"""The flat space, the manifold of every energy without a ``manifold`` attribute."""
SPHERE = Sphere()
"""The unit sphere :math:`S^{d-1}`."""


def manifold_of(energy: Any) -> Euclidean | Sphere:
    """The manifold of an energy: its ``manifold`` attribute, :data:`EUCLIDEAN` by default."""
    return getattr(energy, "manifold", EUCLIDEAN)


class ProjectedLangevin(Kernel):
    """Langevin moves on a manifold (:meth:`Sphere.langevin`, ULA on ``R^d``).

    From cached gradients; not invariant (the walkers of :class:`~smc_ebm.Dual` carry no
    weights).
    """

    invariant: ClassVar[bool] = False

    def __init__(self, manifold: Euclidean | Sphere, step_size: float | Array):
        self.manifold, self.step_size = manifold, step_size

    def move(self, key, state, energy):
        x = self.manifold.langevin(key, state.position, state.grad, self.step_size)
        return x, MoveInfo(jnp.ones_like(state.energy))
