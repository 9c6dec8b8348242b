"""``result.summary()``: the headline numbers of a training run, as a dict and as text."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from smc_ebm._naming import OldAttributes

_BUILTIN = ("step", "ess", "log_Z", "cross_entropy", "resampled", "loss", "acceptance")


@dataclasses.dataclass(frozen=True)
class FitSummary(OldAttributes):
    """Headline numbers of a :class:`~smc_ebm.FitResult`.

    Attributes:
        strategy: name of the strategy's class (or constructor).
        steps: optimizer steps done.
        wall_time: seconds spent in ``fit`` (compilation included).
        final_ess: normalised ESS of the final walkers' weights.
        min_ess: smallest recorded ESS (before resampling).
        num_resamplings: resamplings over the run.
        log_Z: final log Z estimate (NaN for unweighted strategies).
        cross_entropy: final cross-entropy estimate.
        acceptance: mean acceptance of the moves over the recorded steps.
        metrics: final value of every user metric.
        interrupted: whether the run was interrupted.
    """

    strategy: str
    steps: int
    wall_time: float
    final_ess: float
    min_ess: float
    num_resamplings: int
    log_Z: float
    cross_entropy: float
    acceptance: float
    metrics: dict[str, float]
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable: NaN stays a float)."""
        return dataclasses.asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """``(name, formatted value)`` pairs, in display order."""

        def fmt(v: float, spec: str = ".4g") -> str:
            return "—" if not math.isfinite(v) else format(v, spec)

        ms_per_step = 1e3 * self.wall_time / max(self.steps, 1)
        rows = [
            ("strategy", self.strategy),
            ("steps", str(self.steps) + (" (interrupted)" if self.interrupted else "")),
            ("wall time", f"{self.wall_time:.1f} s ({ms_per_step:.2f} ms/step)"),
            ("final ESS", fmt(self.final_ess, ".3f")),
            ("minimum ESS", fmt(self.min_ess, ".3f")),
            ("resamplings", str(self.num_resamplings)),
            ("log Z", fmt(self.log_Z)),
            ("cross-entropy", fmt(self.cross_entropy)),
            ("acceptance", fmt(self.acceptance, ".3f")),
        ]
        rows += [(name, fmt(v)) for name, v in self.metrics.items()]
        return rows

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _nan_mean(col: np.ndarray) -> float:
    ok = np.isfinite(col)
    return float(np.mean(col[ok])) if np.any(ok) else float("nan")


def _finite_last(col: np.ndarray) -> float:
    col = np.asarray(col, np.float64)
    ok = np.isfinite(col)
    return float(col[ok][-1]) if np.any(ok) else float("nan")


def summarize(result: Any) -> FitSummary:
    """Summarise a :class:`~smc_ebm.FitResult` (what ``result.summary()`` returns).

    ``final_ess`` is the ESS of the final weights; ``min_ess`` the minimum over the
    recorded history (recorded before each step's resampling); ``num_resamplings`` the sum
    of the ``resampled`` column (it counts every step, not only the recorded ones).
    """
    import jax
    import jax.numpy as jnp

    from smc_ebm.smc._resampling import ess_fraction

    hist = {k: np.asarray(v) for k, v in result.history.items()}
    a = jnp.asarray(result.log_weights)
    final_ess = float(jax.device_get(ess_fraction(a))) if a.size else float("nan")
    ess = hist.get("ess", np.zeros(0))
    acc = hist.get("acceptance", np.zeros(0)).astype(np.float64)
    strategy = getattr(result, "strategy", None)
    name = type(strategy).__name__
    if name == "Walkers":
        weighted = getattr(strategy, "weighted", False)
        data_init = getattr(strategy, "init", None) == "data"
        name = "Jarzynski" if weighted else ("PCD" if data_init else "Unweighted")
    return FitSummary(
        strategy=name,
        steps=int(result.steps),
        wall_time=float(result.wall_time),
        final_ess=final_ess,
        min_ess=float(np.nanmin(ess)) if ess.size and np.any(np.isfinite(ess)) else float("nan"),
        num_resamplings=int(np.sum(hist.get("resampled", 0))),
        log_Z=float(result.log_Z),
        cross_entropy=float(result.cross_entropy),
        acceptance=float(np.nanmean(acc))
        if acc.size and np.any(np.isfinite(acc))
        else float("nan"),
        metrics={k: _finite_last(v) for k, v in hist.items() if k not in _BUILTIN},
        interrupted=bool(getattr(result, "interrupted", False)),
    )
