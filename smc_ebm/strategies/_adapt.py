r"""A step size adapted to the acceptance: a part around a strategy with Metropolis-adjusted moves.

:func:`with_step_adaptation` keeps the step size of the wrapped strategy's walkers in the state
and, after each step, moves its log by :math:`\gamma(\bar a - a^*)`
(:func:`~smc_ebm.kernels.adapt_step_size`, the rule of the flow strategies' MALA moves), where
:math:`\bar a` is the walkers' mean acceptance of that step. The step of step :math:`k` depends
only on the moves before it, so the kernel of step :math:`k` still leaves the model of step
:math:`k` invariant and the AIS increments keep the weights exact (adaptive SMC).

ULA accepts every move, so it has nothing to adapt to: the wrapped strategy must move its
walkers with a Metropolis-adjusted kernel that has a step size: ``kernel="mala"``, or a kernel
object such as ``se.kernels.Repeated(se.kernels.MALA(h), k)`` (its
:meth:`~smc_ebm.kernels.Kernel.with_step_size` sets the adapted step).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from smc_ebm._naming import renamed
from smc_ebm.kernels import Kernel, adapt_step_size
from smc_ebm.strategies._base import reads_walker_fields
from smc_ebm.strategies._options import _Wrapper, core


class AdaptedState(NamedTuple):
    """The wrapped strategy's state and the step size of its next move."""

    walkers: Any
    step_size: Float[Array, ""]


reads_walker_fields(AdaptedState, core)


def _adaptable(kernel: Any) -> bool:
    """Whether ``kernel`` (a name or a :class:`Kernel`) is Metropolis-adjusted with a step size."""
    if not isinstance(kernel, Kernel):
        return kernel == "mala"
    if not kernel.invariant:
        return False
    try:  # Kernel.with_step_size raises TypeError where there is no step size to set
        kernel.with_step_size(kernel.step_size)
    except (TypeError, AttributeError):
        return False
    return True


def _first_step_size(strategy: Any) -> Any:
    """The step of the first move: the kernel object's own, else the strategy's."""
    kernel = strategy.kernel
    return kernel.step_size if isinstance(kernel, Kernel) else strategy.step_size


def _at_step_size(strategy: Any, step_size: Array) -> Any:
    """``strategy`` with a (traced) ``step_size``, in its kernel object too if it has one.

    A shallow copy with the fields set directly: ``dataclasses.replace`` would run the
    constructor's checks, which read the step as a Python float.
    """
    moved = copy.copy(strategy)
    object.__setattr__(moved, "step_size", step_size)
    if isinstance(strategy.kernel, Kernel):
        object.__setattr__(moved, "kernel", strategy.kernel.with_step_size(step_size))
    return moved


@dataclasses.dataclass(frozen=True)
class AdaptedStep(_Wrapper):
    """A strategy whose walkers' step follows their acceptance (:func:`with_step_adaptation`)."""

    inner: Any
    target_accept: float = 0.57
    adapt_rate: float = 0.05

    def __post_init__(self):
        if not 0.0 < float(self.target_accept) < 1.0:
            raise ValueError(f"target_accept must be in (0, 1); got {self.target_accept}.")
        if not float(self.adapt_rate) > 0.0:
            raise ValueError(f"adapt_rate must be > 0; got {self.adapt_rate}.")
        if not _adaptable(getattr(self.inner, "kernel", None)) or isinstance(self.inner, _Wrapper):
            raise ValueError(
                "with_step_adaptation wraps a strategy whose own walkers move with MALA "
                "(e.g. se.Jarzynski(..., kernel='mala'), or a kernel object with a step size "
                "such as se.kernels.Repeated(se.kernels.MALA(h), k), before any other option); got "
                f"{type(self.inner).__name__} with kernel={getattr(self.inner, 'kernel', None)!r}."
            )

    @property
    def weighted(self):
        return self.inner.weighted

    def init_state(self, key, energy, data, log_Z0):
        walkers = self.inner.init_state(key, energy, data, log_Z0)
        dtype = core(walkers).position.dtype
        return AdaptedState(walkers, jnp.asarray(_first_step_size(self.inner), dtype))

    def step(self, key, state, energy_old, energy_new, step):
        inner = _at_step_size(self.inner, state.step_size)
        walkers, info = inner.step(key, state.walkers, energy_old, energy_new, step)
        h = adapt_step_size(
            state.step_size, info.acceptance, float(self.target_accept), float(self.adapt_rate)
        )
        return AdaptedState(walkers, h), info


@renamed()
def with_step_adaptation(
    strategy: Any, target_accept: float = 0.57, adapt_rate: float = 0.05
) -> AdaptedStep:
    r"""Adapt the step size of a strategy's MALA walkers to their acceptance.

    After each step, :math:`\log h \mathrel{+}= \gamma(\bar a - a^*)` with :math:`\bar a` the
    walkers' mean acceptance of that step: a model that sharpens during training gets a
    smaller step instead of walkers that no longer move, and a flat one a larger step. The
    step of each move depends only on the moves before it, so the weights stay exact. The
    current step is ``state.step_size`` (``result.state.step_size`` after :func:`~smc_ebm.fit`).

    Args:
        strategy: a persistent-walker strategy whose walkers move with MALA
            (``se.Jarzynski(..., kernel="mala")``, ``se.PCD(..., kernel="mala")``), or with
            a Metropolis-adjusted kernel object that has a step size
            (``kernel=se.kernels.Repeated(se.kernels.MALA(h), k)``: all ``k`` steps of a
            move take the adapted step, and the acceptance is their mean). Its
            ``step_size`` (the kernel object's, when it has one) is the first step. Wrap it
            before other options (observers keep their own step).
        target_accept: the acceptance :math:`a^*` to aim at (0.57 is optimal for MALA on
            Gaussian-like targets in high dimension).
        adapt_rate: :math:`\gamma`; at 0.05 a step whose acceptance is 0 shrinks by half in
            about 24 steps.
    """
    return AdaptedStep(strategy, float(target_accept), float(adapt_rate))
