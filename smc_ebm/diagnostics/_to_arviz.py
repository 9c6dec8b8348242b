r"""``to_arviz``: fit results and sample results as ArviZ objects.

Every group is laid out on ArviZ's ``(chain, draw, ...)`` dimensions, so that ``az.summary``,
``az.plot_trace`` and ``az.plot_rank`` read any of them. A chain is an independent run: the
``num_runs`` populations of :func:`~smc_ebm.sample`, or the one population of a
:func:`~smc_ebm.fit` (one chain; R-hat needs several runs, so it is left undefined rather than
made up by splitting one population).

The ``posterior`` holds equal-weight draws: each chain's weighted walkers resampled in
proportion to their weights, then randomly permuted. Systematic resampling returns its
ancestors sorted, so copies of a walker sit next to each other and neighbouring slots hold
related walkers; ArviZ reads that order as autocorrelation and reports an ESS far below the
number of distinct draws. After the permutation the order carries no information.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from smc_ebm.diagnostics._arviz import make_tree, xarray

TRACES_NOTE = (
    "Not stationary chains: chain = walker slot, draw = recorded optimizer step. The energy "
    "changes at every step and resampling overwrites slots with copies of other walkers, so "
    "R-hat, ESS and rank plots of this group describe the training dynamics, not the "
    "convergence of a sampler."
)
HISTORY_NOTE = (
    "Training record: chain = the one population, draw = recorded optimizer step. The "
    "energy changes between draws, so R-hat and ESS of this group are not sampling "
    "diagnostics; az.plot_trace draws the training curves."
)
WALKERS_NOTE = (
    "Weighted walkers, before resampling: statistics that ignore log_weight (az.summary, "
    "az.plot_trace) describe the unweighted cloud, not the target."
)


def strategy_name(strategy: Any) -> str:
    """Class name of a strategy, wrappers around their inner one: ``WithObservers(Jarzynski)``."""
    name = type(strategy).__name__
    inner = getattr(strategy, "inner", None)
    return f"{name}({strategy_name(inner)})" if inner is not None else name


def _kish(a: np.ndarray) -> np.ndarray:
    """Normalised ESS ``(sum w)^2 / (n sum w^2)`` of each row of log-weights."""
    w = np.exp(a - a.max(axis=-1, keepdims=True))
    return w.sum(-1) ** 2 / (a.shape[-1] * (w**2).sum(-1))


def equal_weight_draws(key: Any, log_weights: Any, resampling: str = "systematic") -> np.ndarray:
    """Ancestors ``(C, M)`` of equal-weight draws of ``C`` populations of ``M`` walkers.

    Each row resamples its population in proportion to ``softmax(log_weights[c])`` and
    permutes the result uniformly at random, so that the order of the draws is independent
    of the ancestors' slots.
    """
    from smc_ebm.smc._resampling import resample_indices

    a = jnp.asarray(log_weights)
    keys = jax.random.split(key, a.shape[0])

    def one(k, row):
        k_res, k_perm = jax.random.split(k)
        idx = resample_indices(k_res, row, resampling)
        return jax.random.permutation(k_perm, idx)

    return np.asarray(jax.vmap(one)(keys, a))


def _groups(
    x: np.ndarray, a: np.ndarray, anc: np.ndarray, per_chain: Mapping[str, Any]
) -> dict[str, Any]:
    """``posterior``, ``sample_stats`` and ``walkers`` of populations ``x (C, M, d)``."""
    xr = xarray()
    c, m, d = x.shape
    log_p = np.asarray(jax.nn.log_softmax(jnp.asarray(a), axis=-1))
    rows = np.arange(c)[:, None]
    coords = {"chain": np.arange(c), "draw": np.arange(m), "x_dim": np.arange(d)}
    posterior = xr.Dataset({"x": (("chain", "draw", "x_dim"), x[rows, anc])}, coords=coords)
    stats = xr.Dataset(
        {
            "log_weight": (("chain", "draw"), log_p[rows, anc]),
            "ancestor": (("chain", "draw"), anc.astype(np.int64)),
        },
        coords={
            "chain": coords["chain"],
            "draw": coords["draw"],
            **{k: ("chain", np.asarray(v)) for k, v in per_chain.items()},
        },
    )
    walkers = xr.Dataset(
        {
            "x": (("chain", "draw", "x_dim"), x),
            "log_weight": (("chain", "draw"), a),
            "weight": (("chain", "draw"), np.exp(log_p)),
        },
        coords=coords,
        attrs={"weighted": "true", "note": WALKERS_NOTE},
    )
    return {"posterior": posterior, "sample_stats": stats, "walkers": walkers}


def to_arviz(
    result: Any,
    *,
    key: Any = None,
    traces: Mapping[str, Any] | None = None,
    resampling: str = "systematic",
) -> Any:
    r"""A fit result or a sample result as an ArviZ object.

    Groups (``C`` chains of ``M`` walkers in dimension ``d``):

    - ``posterior``: ``x (chain, draw, x_dim)``, equal-weight draws: each chain's walkers
      resampled in proportion to their weights, then randomly permuted (see the module).
    - ``sample_stats``: per draw, ``log_weight`` (the log of the normalised weight of the
      walker it copies) and ``ancestor`` (that walker's index in ``walkers``); per chain, as
      coordinates along ``chain``: ``log_marginal_likelihood`` (the chain's log Z, PyMC's
      name), ``ess`` (normalised ESS of the chain's weights), ``ess_abs`` (the same times
      ``M``), ``num_resamplings`` (resamplings), and ``acceptance`` for fit results (mean over
      the recorded steps; a sample result stores its pooled ``acceptance`` as an attribute).
    - ``walkers``: ``x (chain, draw, x_dim)``, ``log_weight`` and ``weight`` (normalised in
      each chain): the weighted walkers themselves.
    - ``history`` (fit results): every column of ``result.history`` and ``ess_abs``, with
      ``chain`` = 1 and ``draw`` = the recorded optimizer step; attribute
      ``stationary = "false"``.
    - ``training_traces`` (when ``traces`` are given or ``result.traces`` exists):
      ``x (chain = walker slot, draw = recorded step, x_dim)`` and ``log_weight``;
      attribute ``stationary = "false"``: not Markov chains of one target.

    A fit result gives one chain (one population); a sample result gives ``num_runs``
    chains, the independent runs, so that R-hat compares them.

    Args:
        result: a :class:`~smc_ebm.FitResult` (anything with ``walkers``, ``log_weights``,
            ``history``) or a :class:`~smc_ebm.SampleResult` (``samples``, ``log_weights``,
            ``log_Z_runs``).
        key: PRNG key of the resampling and the permutation (default ``jax.random.key(0)``).
        traces: ``{"position": (T, M, d), "step": (T,), "walker": (M,),
            "log_weights": (T, M)}`` (``walker`` and ``log_weights`` optional).
        resampling: resampling method of the equal-weight draws.

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x).

    Example:
        >>> out = se.sample(energy, key=key, num_walkers=1000, num_runs=4)  # doctest: +SKIP
        >>> idata = out.to_arviz()  # doctest: +SKIP
        >>> az.rhat(idata)                                              # doctest: +SKIP
    """
    key = jax.random.key(0) if key is None else key
    if hasattr(result, "log_Z_runs") and hasattr(result, "samples"):
        groups, attrs = _sample_groups(result, key, resampling)
    else:
        groups, attrs = _fit_groups(result, key, resampling)
    traces = traces if traces is not None else getattr(result, "traces", None)
    if traces is not None:
        groups["training_traces"] = _traces_group(traces, groups["posterior"].sizes["x_dim"])
    return make_tree(groups, {"inference_library": "smc_ebm", **attrs})


def _fit_groups(result: Any, key: Any, resampling: str) -> tuple[dict[str, Any], dict]:
    x = np.asarray(result.walkers)
    a = np.asarray(result.log_weights)
    if x.ndim != 2 or a.shape != x.shape[:1]:
        raise ValueError(
            f"walkers must be (N, d) and log_weights (N,); got {x.shape} and {a.shape}."
        )
    n = x.shape[0]
    hist = {k: np.asarray(v) for k, v in result.history.items()}
    steps = hist.pop("step", np.arange(len(next(iter(hist.values()), []))))
    acc = hist.get("acceptance", np.zeros(0)).astype(np.float64)
    ess = _kish(a[None].astype(np.float64))
    per_chain = {
        "log_marginal_likelihood": [float(getattr(result, "log_Z", np.nan))],
        "ess": ess,
        "ess_abs": ess * n,
        "num_resamplings": [int(np.sum(hist.get("resampled", 0)))],
        "acceptance": [float(np.nanmean(acc)) if np.any(np.isfinite(acc)) else np.nan],
    }
    groups = _groups(x[None], a[None], equal_weight_draws(key, a[None], resampling), per_chain)
    if "ess" in hist:
        hist["ess_abs"] = hist["ess"] * n
    groups["history"] = xarray().Dataset(
        {name: (("chain", "draw"), col[None]) for name, col in hist.items()},
        coords={"chain": [0], "draw": steps},
        attrs={"stationary": "false", "note": HISTORY_NOTE},
    )
    attrs = {
        "steps": int(getattr(result, "steps", len(steps))),
        "log_Z": float(getattr(result, "log_Z", float("nan"))),
        "cross_entropy": float(getattr(result, "cross_entropy", float("nan"))),
        "wall_time": float(getattr(result, "wall_time", float("nan"))),
    }
    if getattr(result, "strategy", None) is not None:
        attrs["strategy"] = strategy_name(result.strategy)
    return groups, attrs


def _sample_groups(result: Any, key: Any, resampling: str) -> tuple[dict[str, Any], dict]:
    lz = np.asarray(result.log_Z_runs, np.float64).reshape(-1)
    r = lz.shape[0]
    x = np.asarray(result.samples)
    a = np.asarray(result.log_weights)
    if x.ndim != 2 or a.shape != x.shape[:1] or x.shape[0] % r:
        raise ValueError(
            f"samples must be (n, d) and log_weights (n,) with n a multiple of the {r} runs; "
            f"got {x.shape} and {a.shape}."
        )
    m = x.shape[0] // r
    # sample() lays the walkers out run by run: run r holds rows r*m .. (r+1)*m - 1.
    x, a = x.reshape(r, m, -1), a.reshape(r, m)
    ess = _kish(a.astype(np.float64))
    per_chain = {
        "log_marginal_likelihood": lz,
        "ess": ess,
        "ess_abs": ess * m,
        "num_resamplings": np.asarray(result.num_resamplings).reshape(r),
    }
    groups = _groups(x, a, equal_weight_draws(key, a, resampling), per_chain)
    groups["sample_stats"].attrs["acceptance"] = float(result.acceptance)
    attrs = {
        "num_runs": r,
        "log_Z": float(result.log_Z),
        "log_Z_se": float(result.log_Z_se),
        "ess": float(result.ess),
        "acceptance": float(result.acceptance),
    }
    return groups, attrs


def _traces_group(traces: Mapping[str, Any], d: int) -> Any:
    xr = xarray()
    pos = np.asarray(traces["position"])
    if pos.ndim != 3 or pos.shape[2] != d:
        raise ValueError(f"traces['position'] must be (T, M, d={d}); got {pos.shape}.")
    t, m, _ = pos.shape
    steps = np.asarray(traces.get("step", np.arange(t)))
    walker = np.asarray(traces.get("walker", np.arange(m)))
    if steps.shape != (t,) or walker.shape != (m,):
        raise ValueError(
            f"traces['step'] must be (T={t},) and traces['walker'] (M={m},); "
            f"got {steps.shape} and {walker.shape}."
        )
    data = {"x": (("chain", "draw", "x_dim"), np.swapaxes(pos, 0, 1))}
    if traces.get("log_weights") is not None:
        data["log_weight"] = (
            ("chain", "draw"),
            np.swapaxes(np.asarray(traces["log_weights"]), 0, 1),
        )
    return xr.Dataset(
        data,
        coords={"chain": walker, "draw": steps, "x_dim": np.arange(d)},
        attrs={"stationary": "false", "note": TRACES_NOTE},
    )
