r"""The kernel interface: a state ``(position, energy, grad)`` and ``step(key, state, energy)``.

Every move of the library is a :class:`Kernel` in the style of blackjax: it acts on a batch of
walkers held in a :class:`KernelState` and returns ``(state, info)``. A kernel has two entry
points:

* :meth:`Kernel.move` proposes and (for Metropolis-adjusted kernels) accepts new positions under
  ``energy``; it evaluates nothing at the new positions that the kernel itself does not need.
  The SMC step (:func:`smc_ebm.smc.step`) moves with the OLD energy and evaluates the NEW one
  once at the new positions, so ULA costs one energy and gradient per walker per step.
* :meth:`Kernel.step` is a complete transition at a fixed energy (``move``, then the energy and
  its gradient at the new positions): what the chain runner :func:`run_chains` iterates.

``Kernel.invariant`` decides the log-weight increment that makes the kernel exact inside an SMC
over a moving target (:func:`smc_ebm.smc.default_increment`): the Jarzynski increment for ULA,
the AIS increment for kernels that leave their target invariant (MALA, i-SIR).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm._naming import RenamedArguments, renamed


class KernelState(NamedTuple):
    """A batch of walkers with their cached energies and gradients under one energy.

    Attributes:
        position: ``(n, d)`` positions.
        energy: ``(n,)`` ``U(position)``.
        grad: ``(n, d)`` ``grad_x U(position)``.
    """

    position: Float[Array, "n d"]
    energy: Float[Array, " n"]
    grad: Float[Array, "n d"]


class MoveInfo(NamedTuple):
    """What a move reports.

    Attributes:
        acceptance: ``(n,)`` acceptance probability of each walker's move (1 for ULA).
        energy: ``(n,)`` the moving energy at the new positions when the kernel computed it
            (Metropolis-adjusted kernels do; the AIS increment needs it), else ``None``.
    """

    acceptance: Float[Array, " n"]
    energy: Float[Array, " n"] | None = None


def energy_and_grad(energy: Any, x: Float[Array, "n d"]) -> tuple[Array, Array]:
    """``(U(x_i), grad U(x_i))`` for each row, ``(n, d) -> ((n,), (n, d))``."""
    return jax.vmap(jax.value_and_grad(energy))(x)


class Kernel(metaclass=RenamedArguments):
    """A Markov kernel acting on a batch of walkers (see the module docstring).

    Subclasses implement :meth:`move`; ``invariant`` says whether the kernel leaves ``e^{-U}``
    invariant (then the AIS increment is exact; otherwise :func:`smc_ebm.smc.step` uses the
    Jarzynski increment by default).
    """

    invariant: ClassVar[bool] = True

    @abc.abstractmethod
    def move(
        self, key: PRNGKeyArray, state: KernelState, energy: Any
    ) -> tuple[Float[Array, "n d"], MoveInfo]:
        """New positions from ``state`` (cached under ``energy``), and the move's info."""

    def init(self, position: Float[Array, "n d"], energy: Any) -> KernelState:
        """The state of walkers at ``position`` under ``energy``."""
        u, g = energy_and_grad(energy, position)
        return KernelState(position, u, g)

    def step(
        self, key: PRNGKeyArray, state: KernelState, energy: Any
    ) -> tuple[KernelState, MoveInfo]:
        """One transition at a fixed ``energy``: :meth:`move`, then evaluate at the new points."""
        x, info = self.move(key, state, energy)
        return self.init(x, energy), info

    def with_step_size(self, step_size: float | Array) -> Kernel:
        """The same kernel at another (possibly traced) step size.

        Used by step adaptation (:func:`smc_ebm.strategies.with_step_adaptation`). Kernels
        with a step size override it; the others raise ``TypeError``.
        """
        raise TypeError(f"{type(self).__name__} has no step size to set.")


@renamed()
def run_chains(
    key: PRNGKeyArray,
    kernel: Kernel,
    energy: Any,
    x0: Float[Array, "C d"],
    num_records: int,
    *,
    thin: int = 1,
    num_warmup: int = 0,
    on_step: Any = None,
) -> tuple[Float[Array, "R C d"], Float[Array, "R C"], Float[Array, "R C"]]:
    """Independent chains of ``kernel`` under a FIXED ``energy``: the one chain runner.

    Runs ``num_warmup`` unrecorded steps, then ``num_records`` records of ``thin`` steps each.
    Pure and jittable. Returns ``(positions (R, C, d), energies (R, C), acceptance (R, C))``,
    the acceptance averaged over the ``thin`` steps of each record. ``on_step(i)`` (traced,
    called for its effect, e.g. a progress poll) runs before step ``i`` (the warm-up steps
    count first); ``None`` adds nothing.
    """

    def one(carry, k):
        return kernel.step(k, carry, energy)

    def counted(carry, ki):
        on_step(ki[1])
        return one(carry, ki[0])

    def scan_steps(state, keys, first):
        if on_step is None:
            return jax.lax.scan(one, state, keys)
        return jax.lax.scan(counted, state, (keys, first + jnp.arange(keys.shape[0])))

    def record(state, kr):
        k, r = kr
        state, infos = scan_steps(state, jax.random.split(k, thin), num_warmup + r * thin)
        return state, (state.position, state.energy, jnp.mean(infos.acceptance, axis=0))

    k_warm, k_run = jax.random.split(key)
    state = kernel.init(x0, energy)
    if num_warmup:
        state, _ = scan_steps(state, jax.random.split(k_warm, num_warmup), 0)
    records = (jax.random.split(k_run, num_records), jnp.arange(num_records))
    _, out = jax.lax.scan(record, state, records)
    return out
