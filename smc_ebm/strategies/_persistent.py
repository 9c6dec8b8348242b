"""Persistent walkers without weights: PCD (from the data) and Unweighted (from the model)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from smc_ebm.kernels import Kernel, evaluate_uniform, make_kernel
from smc_ebm.strategies._base import (
    AbstractStrategy,
    ModelTerm,
    StepInfo,
    WalkerState,
    walker_checks,
)
from smc_ebm.strategies._jarzynski import Jarzynski, move_batch
from smc_ebm.strategies._start import (
    anchor_of,
    check_euclidean,
    check_walkers,
    evaluate_state_jit,
    resample_once,
    validate_init,
    walker_start,
)


@dataclasses.dataclass(frozen=True)
class PersistentWalkers(AbstractStrategy):
    """Persistent walkers moved by ULA or MALA and counted equally (no weights).

    The engine of :class:`PCD` and :class:`Unweighted`; the model term is the plain mean over
    the walkers (or over the moved batch with ``walker_batch``).
    """

    num_walkers: int = 1000
    step_size: float = 0.1
    kernel: str | Kernel = "ula"
    walker_batch: int | None = None
    init: Any = "model"
    num_anneal: int = 200
    anneal_base: Any = None

    weighted = False
    walker_grad = "batch"

    def __post_init__(self) -> None:
        check_walkers(self)

    @property
    def minibatched(self) -> bool:
        return self.walker_batch is not None and self.walker_batch < self.num_walkers

    @property
    def moved_fraction(self) -> float:
        return self.walker_batch / self.num_walkers if self.minibatched else 1.0

    def validate(self, dim: int, n_data: int) -> None:
        validate_init(self.init, self.num_walkers, dim)

    def start(self, key, energy, data, n, init=None):
        """``n`` walkers from ``init`` (default: the strategy's own).

        Returns ``(x, log_weights, log Z_0 estimate or None)``. ``init="model"`` gives a
        weighted sample of the model whatever the strategy's ``init``: the start of observers
        (:func:`~smc_ebm.strategies.with_observers`), which must sample the model even where
        the walkers themselves start at the data.
        """
        return walker_start(self, key, energy, data, n, init)

    def init_state(self, key, energy, data, log_Z0):
        check_euclidean(energy)
        k_walk, _ = jax.random.split(key)
        x, a, log_z_est = self.start(k_walk, energy, data, self.num_walkers)
        if log_z_est is not None:
            # Annealed walkers carry weights since their last resampling; walkers that will be
            # counted equally start from an equally weighted population.
            x = resample_once(jax.random.fold_in(k_walk, 1), x, a)
        a = jnp.zeros_like(a)
        if log_Z0 is None:
            log_Z0 = log_z_est if log_z_est is not None else jnp.asarray(0.0, data.dtype)
        log_Z0 = jnp.asarray(log_Z0, data.dtype)
        return evaluate_state_jit(energy, x, a, anchor_of(log_Z0, a), False)

    def model_term(self, key, state, energy, batch):
        one = jnp.asarray(1.0, state.energy.dtype)
        nan = jnp.asarray(jnp.nan, state.energy.dtype)
        return state, ModelTerm(state.param_grad, state.model_energy, one, nan)

    def step(self, key, state, energy_old, energy_new, step):
        k_move, _ = jax.random.split(key)
        kernel = make_kernel(self.kernel, self.step_size)
        if self.minibatched:
            every = self.walker_grad == "all"
            x, u, g, a, pgrad, model_energy, acc, _ = move_batch(
                k_move, state, energy_old, energy_new, kernel, int(self.walker_batch), every, False
            )
        else:
            x, move = kernel.move(k_move, state.population.walkers, energy_old)
            u, g, pgrad = evaluate_uniform(energy_new, x)
            a, model_energy, acc = state.log_weights, jnp.mean(u), jnp.mean(move.acceptance)
        new = WalkerState(x, u, g, a, state.log_Z_anchor, pgrad, model_energy)
        return new, StepInfo(jnp.asarray(False), acc, walker_checks(new))


@dataclasses.dataclass(frozen=True)
class PCD(PersistentWalkers):
    """Persistent contrastive divergence: persistent walkers started at data, no weights.

    Args:
        num_walkers: number of walkers.
        step_size: Langevin step ``h``.
        kernel: ``"ula"``, ``"mala"`` or a :class:`~smc_ebm.kernels.Kernel`.
        walker_batch: move only this many walkers per step (the model term from them).
        init: ``"data"`` (default), ``"model"`` or an ``(N, d)`` array.
    """

    init: Any = "data"


@dataclasses.dataclass(frozen=True)
class Unweighted(PersistentWalkers):
    """Persistent walkers started at the model, without weights (the Jarzynski moves alone).

    When the energy cannot sample itself, the start is annealed from ``anneal_base`` (default:
    the data's moment-matched Gaussian) in ``num_anneal`` weighted steps, as for
    :class:`Jarzynski`, and the annealed population is then resampled once (systematic) so
    that the walkers, counted equally from there on, start as draws of the model.
    """


def Walkers(**kwargs: Any) -> Any:  # noqa: N802  (the class of the first interface)
    """Deprecated engine of the first interface.

    Use :class:`Jarzynski`, :class:`PCD` or :class:`Unweighted`.
    """
    warnings.warn(
        "se.strategies.Walkers is deprecated; use se.Jarzynski, se.PCD or se.Unweighted",
        DeprecationWarning,
        stacklevel=2,
    )
    weighted = kwargs.pop("weighted", True)
    kwargs.pop("walker_grad", None) if not weighted else None
    kwargs.pop("resampling", None) if not weighted else None
    return Jarzynski(**kwargs) if weighted else Unweighted(**kwargs)
