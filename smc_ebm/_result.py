"""What ``fit`` returns (:class:`FitResult`) and raises (:class:`TrainingError`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from smc_ebm.energies import mean_energy
from smc_ebm.strategies import AbstractStrategy, FlowStrategy

__all__ = ["FitResult", "TrainingError", "make_result"]


class TrainingError(RuntimeError):
    """A non-finite quantity appeared during training.

    Attributes:
        step: the optimizer step at which it appeared. When the data's energy is the
            non-finite quantity, the parameters are to blame, and ``step`` is the step that
            produced them (``result`` is the state before it, whose energy is finite).
        quantity: which quantity (e.g. ``"walker log-weights"``).
        result: a :class:`FitResult` holding the last finite state (nothing learned before
            ``step`` is lost); it can be passed to ``fit(..., resume=...)``.
    """

    def __init__(self, step: int, quantity: str, result: FitResult):
        self.step, self.quantity, self.result = step, quantity, result
        super().__init__(
            f"non-finite {quantity} at step {step}; training stopped. The last finite state "
            f"(after {step} steps) is in `error.result`. A step size that diverges or a too "
            f"large learning rate are the usual causes."
        )


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        energy: the trained energy module.
        walkers: ``(N, d)`` final walker positions.
        log_weights: ``(N,)`` final log-weights (zeros for unweighted strategies).
        history: dict of numpy arrays, one entry per recorded step: ``step``, ``ess``,
            ``log_Z``, ``cross_entropy``, ``resampled`` (resamplings since the previous
            record), ``loss``, ``acceptance`` and every user metric. Each record describes
            the parameters *before* the update of that step (step 0 is the initial model).
        log_Z: final log Z estimate (NaN for unweighted strategies).
        cross_entropy: final cross-entropy estimate ``log Z + mean_data U`` on all the data.
        steps: number of optimizer steps done.
        wall_time: seconds spent in :func:`fit` (compilation included).
        interrupted: the run was stopped by Ctrl-C or SIGTERM and this is its state after
            ``steps`` steps (every step done; ``fit(..., resume=result)`` continues it).
        opt_state, state, strategy: what ``fit(..., resume=result)`` continues from.
        traces: with ``fit(..., trace_walkers=M)``: ``position (T, M, d)``,
            ``log_weights (T, M)``, ``step (T,)``, ``walker (M,)``; else ``None``.
        chunk_seconds: ``(C,)`` wall-clock seconds of each compiled chunk of ``chunk_size``
            steps, up to the host receiving its records (the first includes compilation, unless
            the chunk was compiled by an earlier call); the time of the steps without
            ``fit``'s setup and final evaluation.
        key: the ``key`` of the call (a resumed run with another key warns).
    """

    energy: Any
    walkers: Any
    log_weights: Any
    history: dict[str, np.ndarray]
    log_Z: float
    cross_entropy: float
    steps: int
    wall_time: float
    interrupted: bool
    opt_state: Any
    state: Any
    strategy: AbstractStrategy
    traces: dict[str, np.ndarray] | None = None
    chunk_seconds: np.ndarray | None = None
    key: Any = None

    @property
    def flow(self) -> Any:
        """The trained companion flow of flow strategies (:func:`FlowMC`), else ``None``."""
        if isinstance(self.strategy, FlowStrategy):
            return self.strategy.flow_of(self.state)
        return None

    @property
    def weights(self) -> np.ndarray:
        """Normalised weights ``softmax(log_weights)``, shape ``(N,)``."""
        return np.asarray(jax.nn.softmax(jnp.asarray(self.log_weights)))

    def to_arviz(self, **kwargs: Any) -> Any:
        """ArviZ ``InferenceData`` (``DataTree`` on ArviZ 1.x) of the walkers and history.

        See :func:`smc_ebm.diagnostics.to_arviz` for the groups and the keyword arguments.
        """
        from smc_ebm.diagnostics import to_arviz

        return to_arviz(self, **kwargs)

    def summary(self) -> Any:
        """Headline numbers (:class:`~smc_ebm.diagnostics.FitSummary`); ``print`` it."""
        from smc_ebm.diagnostics import summarize

        return summarize(self)


# Jitted once at module level (a fresh lambda per call would be compiled at every call).
_mean_energy = eqx.filter_jit(mean_energy)


def make_result(
    params,
    static,
    opt_state,
    state,
    strategy,
    data,
    history,
    steps,
    wall,
    interrupted,
    traces=None,
    chunk_seconds=None,
    key=None,
):
    energy = eqx.combine(params, static)
    ess, log_z = strategy.ess_and_log_Z(state)
    data_u = float(_mean_energy(energy, data))
    x, a = strategy.walkers(state)
    log_z = float(log_z)
    return FitResult(
        energy=energy,
        walkers=x,
        log_weights=a,
        history=history,
        log_Z=log_z,
        cross_entropy=log_z + data_u if math.isfinite(log_z) else float("nan"),
        steps=int(steps),
        wall_time=wall,
        interrupted=interrupted,
        opt_state=opt_state,
        state=state,
        strategy=strategy,
        traces=traces,
        chunk_seconds=chunk_seconds,
        key=key,
    )
