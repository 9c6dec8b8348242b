"""Langevin moves: ULA with cached energy/gradient, and MALA from blackjax."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import blackjax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.kernels._base import Kernel, KernelState, MoveInfo
from smc_ebm.kernels._normal import standard_normal


def ula_propose(
    key: PRNGKeyArray, x: Float[Array, "n d"], grad: Float[Array, "n d"], step_size: float
) -> Float[Array, "n d"]:
    r"""Unadjusted Langevin move :math:`x' = x - h \nabla U(x) + \sqrt{2h}\,\xi`.

    ``grad`` is the cached :math:`\nabla U(x)` so the move itself evaluates nothing. The
    noise is ``jax.random.normal(key, x.shape)``'s numbers (:func:`standard_normal`).
    """
    noise = standard_normal(key, x.shape, x.dtype)
    return x - step_size * grad + jnp.sqrt(2.0 * step_size) * noise


def ula_log_alpha(
    u: Float[Array, " n"],
    g: Float[Array, "n d"],
    x: Float[Array, "n d"],
    y: Float[Array, "n d"],
    step_size: float,
) -> Float[Array, " n"]:
    r""":math:`\alpha(x, y) = U(x) + \tfrac12 (y - x)\cdot\nabla U(x) + \tfrac h4 |\nabla U(x)|^2`.

    ``-alpha(x, y)`` is, up to the symmetric term :math:`-|y-x|^2/4h` and a constant, the
    log of :math:`e^{-U(x)} q(x \to y)` for the ULA kernel :math:`q`; ``u`` and ``g`` are
    the energy and gradient at ``x``.
    """
    return u + 0.5 * jnp.sum((y - x) * g, axis=-1) + 0.25 * step_size * jnp.sum(g * g, axis=-1)


def mala_move(
    key: PRNGKeyArray,
    x: Float[Array, "n d"],
    u: Float[Array, " n"],
    g: Float[Array, "n d"],
    energy_fn: Callable[[Array], Array],
    step_size: float | Array,
) -> tuple[Float[Array, "n d"], Float[Array, " n"], Float[Array, "n d"], Float[Array, " n"]]:
    """One MALA step per walker with :func:`blackjax.mala`, from cached ``(u, g)``.

    Returns the new positions, their energies and gradients (under the same energy) and
    the acceptance probabilities.
    """
    kernel = blackjax.mala.build_kernel()

    def logdensity(z):
        return -energy_fn(z)

    def one(k, xi, ui, gi):
        st = blackjax.mcmc.mala.MALAState(xi, -ui, -gi)
        new, info = kernel(k, st, logdensity, step_size)
        return new.position, -new.logdensity, -new.logdensity_grad, info.acceptance_rate

    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(one)(keys, x, u, g)


class ULA(Kernel):
    r"""Unadjusted Langevin :math:`x' = x - h \nabla U(x) + \sqrt{2h}\,\xi` (cached gradient).

    Not invariant: inside an SMC over a moving target its bias is removed by the Jarzynski
    increment (:func:`smc_ebm.smc.jarzynski`), for any step size.
    """

    invariant: ClassVar[bool] = False

    def __init__(self, step_size: float | Array):
        self.step_size = step_size

    def move(self, key, state, energy):
        x = ula_propose(key, state.position, state.grad, self.step_size)
        return x, MoveInfo(jnp.ones_like(state.energy))

    def with_step_size(self, step_size: float | Array) -> ULA:
        return ULA(step_size)

    def __repr__(self) -> str:
        return f"ULA(step_size={self.step_size!r})"


class MALA(Kernel):
    """Metropolis-adjusted Langevin (blackjax's kernel), invariant for its energy."""

    invariant: ClassVar[bool] = True

    def __init__(self, step_size: float | Array):
        self.step_size = step_size

    def move(self, key, state, energy):
        x, u, _, acc = mala_move(
            key, state.position, state.energy, state.grad, energy, self.step_size
        )
        return x, MoveInfo(acc, u)

    def step(self, key, state, energy):
        x, u, g, acc = mala_move(
            key, state.position, state.energy, state.grad, energy, self.step_size
        )
        return KernelState(x, u, g), MoveInfo(acc, u)

    def with_step_size(self, step_size: float | Array) -> MALA:
        return MALA(step_size)

    def __repr__(self) -> str:
        return f"MALA(step_size={self.step_size!r})"


KERNELS = {"ula": ULA, "mala": MALA}
"""Kernel classes by name, as accepted by :func:`make_kernel` and the ``kernel=`` keywords."""


def make_kernel(kernel: str | Kernel, step_size: float | Array) -> Kernel:
    """A :class:`Kernel` from a name in :data:`KERNELS` (with ``step_size``) or a kernel."""
    if isinstance(kernel, Kernel):
        return kernel
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {tuple(KERNELS)}; got {kernel!r}.")
    return KERNELS[kernel](step_size)
