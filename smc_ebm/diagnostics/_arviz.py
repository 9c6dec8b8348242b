"""Conversion to ArviZ: ``InferenceData`` on ArviZ 0.x, ``xarray.DataTree`` on ArviZ 1.x.

ArviZ 1.x (Python >= 3.12) dropped ``InferenceData`` for ``xarray.DataTree`` and split into
``arviz-base``/``arviz-stats``/``arviz-plots``. The groups are built here as plain
``xarray.Dataset`` objects and assembled by :func:`make_tree`, the only place that knows
which ArviZ is installed; the statistics (:func:`rhat`, :func:`ess`, :func:`mcse`) are
called on ``xarray.Dataset`` objects, which both majors accept with the same meaning.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@functools.cache
def arviz() -> Any:
    """The ``arviz`` module, imported on first use (it takes seconds to import)."""
    with warnings.catch_warnings():
        # ArviZ 0.23 announces its 1.x refactor with a FutureWarning at import.
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


@functools.cache
def xarray() -> Any:
    """The ``xarray`` module, imported on first use."""
    import xarray as xr

    return xr


@functools.cache
def arviz_major() -> int:
    """Major version of the installed ArviZ (0: ``InferenceData``; 1: ``DataTree``)."""
    return int(importlib.metadata.version("arviz").split(".")[0])


def _datatree_type() -> Any:
    # xarray.DataTree exists from xarray 2024.10; ArviZ 0.x may run with an older xarray.
    return getattr(xarray(), "DataTree", None)


def make_tree(groups: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> Any:
    """Assemble groups into the ArviZ container of the installed version.

    Args:
        groups: group name -> dataset (e.g. ``"posterior"``, ``"sample_stats"``).
        attrs: attributes stored on every group (numbers and strings only, so that the
            result can be written to netCDF).

    Returns:
        ``arviz.InferenceData`` on ArviZ 0.x; ``xarray.DataTree`` on ArviZ 1.x.
    """
    attrs = {k: v for k, v in (attrs or {}).items() if isinstance(v, int | float | str)}
    groups = {name: ds.assign_attrs(**attrs) for name, ds in groups.items()}
    if arviz_major() >= 1:
        return _datatree(groups, attrs)
    return arviz().InferenceData(**groups)


def _datatree(groups: Mapping[str, Any], attrs: Mapping[str, Any]) -> Any:
    """The ArviZ 1.x container: a root with one child node per group."""
    tree_type = _datatree_type()
    if tree_type is None:
        raise ImportError("ArviZ 1.x needs xarray >= 2024.10 (xarray.DataTree).")
    tree = tree_type.from_dict({f"/{name}": ds for name, ds in groups.items()})
    tree.attrs.update(attrs)
    return tree


def group(data: Any, name: str) -> Any:
    """Group ``name`` of an ``InferenceData`` or a ``DataTree``, as an ``xarray.Dataset``."""
    tree_type = _datatree_type()
    if tree_type is not None and isinstance(data, tree_type):
        return data[name].to_dataset()
    return getattr(data, name)


def group_names(data: Any) -> list[str]:
    """Names of the groups of an ``InferenceData`` or a ``DataTree``."""
    tree_type = _datatree_type()
    if tree_type is not None and isinstance(data, tree_type):
        return list(data.children)
    return list(data.groups())


def rhat(ds: Any) -> Any:
    """Rank-normalised split R-hat (Vehtari et al., 2021) over ``(chain, draw)``."""
    return arviz().rhat(ds, method="rank")


def ess(ds: Any, method: str = "bulk") -> Any:
    """Effective sample size over ``(chain, draw)`` (``"bulk"`` or ``"tail"``)."""
    return arviz().ess(ds, method=method)


def mcse(ds: Any, method: str = "mean") -> Any:
    """Monte Carlo standard error of the mean (``"mean"``) or the sd (``"sd"``)."""
    return arviz().mcse(ds, method=method)


def _dim_names(d: int, name: str = "x_dim") -> dict[str, np.ndarray]:
    return {name: np.arange(d)}


def to_arviz(
    result: Any,
    *,
    key: Any = None,
    traces: Mapping[str, Any] | None = None,
    resampling: str = "systematic",
) -> Any:
    r"""A trained model's walkers and history as an ArviZ object.

    Groups:

    - ``posterior``: the equal-weight set, the final walkers resampled in proportion to
      their weights: ``x (chain=1, draw=N, x_dim=d)``.
    - ``walkers``: the weighted walkers themselves: ``x (walker, x_dim)``,
      ``log_weight (walker)`` and ``weight (walker)`` (normalised).
    - ``history``: every column of ``result.history`` (ESS, log Z, cross-entropy,
      acceptance, resamplings, loss, user metrics) indexed by ``step``.
    - ``walker_traces`` (when ``traces`` are given, or ``result.traces`` exists): the
      trajectories of a subset of walkers, ``x (chain=walker, draw=recorded step, x_dim)``
      and, when given, ``log_weight (chain, draw)``, so that ArviZ's trace and rank tools
      read the walkers as chains.

    Args:
        result: a :class:`~smc_ebm.FitResult` (or anything with ``walkers``,
            ``log_weights`` and ``history``).
        key: PRNG key of the resampling (default ``jax.random.key(0)``).
        traces: ``{"position": (T, M, d), "step": (T,), "walker": (M,),
            "log_weights": (T, M)}`` (``walker`` and ``log_weights`` optional).
        resampling: resampling method of the equal-weight set.

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x).

    Example:
        >>> idata = result.to_arviz()                          # doctest: +SKIP
        >>> idata.history["ess"].sel(step=slice(0, 100))       # doctest: +SKIP
    """
    from smc_ebm.smc._resampling import resample_indices

    xr = xarray()
    x = np.asarray(result.walkers)
    a = np.asarray(result.log_weights)
    if x.ndim != 2 or a.shape != x.shape[:1]:
        raise ValueError(
            f"walkers must be (N, d) and log_weights (N,); got {x.shape} and {a.shape}."
        )
    n, d = x.shape
    key = jax.random.key(0) if key is None else key
    idx = np.asarray(resample_indices(key, jnp.asarray(a), resampling))
    w = np.asarray(jax.nn.softmax(jnp.asarray(a)))
    dims = _dim_names(d)

    posterior = xr.Dataset(
        {"x": (("chain", "draw", "x_dim"), x[idx][None])},
        coords={"chain": [0], "draw": np.arange(n), **dims},
    )
    walkers = xr.Dataset(
        {
            "x": (("walker", "x_dim"), x),
            "log_weight": (("walker",), a),
            "weight": (("walker",), w),
        },
        coords={"walker": np.arange(n), **dims},
    )
    hist = {k: np.asarray(v) for k, v in result.history.items()}
    steps = hist.pop("step", np.arange(len(next(iter(hist.values()), []))))
    history = xr.Dataset(
        {name: (("step",), col) for name, col in hist.items()}, coords={"step": steps}
    )
    groups = {"posterior": posterior, "walkers": walkers, "history": history}

    traces = traces if traces is not None else getattr(result, "traces", None)
    if traces is not None:
        groups["walker_traces"] = _traces_group(traces, d)

    attrs = {
        "inference_library": "smc_ebm",
        "steps": int(getattr(result, "steps", len(steps))),
        "log_Z": float(getattr(result, "log_Z", float("nan"))),
        "cross_entropy": float(getattr(result, "cross_entropy", float("nan"))),
        "wall_time": float(getattr(result, "wall_time", float("nan"))),
        "strategy": type(getattr(result, "strategy", None)).__name__,
    }
    return make_tree(groups, attrs)


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
    return xr.Dataset(data, coords={"chain": walker, "draw": steps, **_dim_names(d)})
