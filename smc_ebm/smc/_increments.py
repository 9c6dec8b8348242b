r"""Log-weight increments in the kernel form used by :func:`smc_ebm.smc.step`.

An increment is a function ``increment(kernel, old, new, move) -> (n,)`` of the walkers before
the move (``old``, a :class:`~smc_ebm.kernels.KernelState` under :math:`U_k`), after it
(``new``, under :math:`U_{k+1}`) and of the move's :class:`~smc_ebm.kernels.MoveInfo`. The
formulas are those of :mod:`smc_ebm.smc._weights` (DESIGN 1.1, 1.2).
"""

from __future__ import annotations

from typing import Any

from jaxtyping import Array, Float

from smc_ebm.smc._weights import ais_increment, jarzynski_increment


def jarzynski(kernel: Any, old: Any, new: Any, move: Any) -> Float[Array, " n"]:
    """The Jarzynski increment of a ULA move of step ``kernel.step_size`` (exact for any h)."""
    return jarzynski_increment(
        old.position, old.energy, old.grad, new.position, new.energy, new.grad, kernel.step_size
    )


def ais(kernel: Any, old: Any, new: Any, move: Any) -> Float[Array, " n"]:
    r"""The AIS increment :math:`U_k(x') - U_{k+1}(x')` of a move that leaves :math:`U_k` invariant.

    ``move.energy`` is :math:`U_k` at the new positions (the kernel computed it to accept).
    """
    return ais_increment(move.energy, new.energy)


def default_increment(kernel: Any) -> Any:
    """:func:`ais` for a kernel that leaves its target invariant, :func:`jarzynski` otherwise."""
    return ais if kernel.invariant else jarzynski
