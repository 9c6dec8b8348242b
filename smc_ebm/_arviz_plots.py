"""ArviZ's trace, rank, ESS and pair plots of smc_ebm's ArviZ objects and diagnoses.

On ArviZ 0.x each function lays out the axes ArviZ expects on a
:func:`smc_ebm.plots.new_figure` (Agg canvas, no ``pyplot`` state) and passes them to
``az.plot_trace``, ``az.plot_rank``, ``az.plot_ess`` or ``az.plot_pair``. On ArviZ 1.x
(``arviz_plots``) the corresponding function builds its own ``PlotCollection``, which is
returned.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _arviz_group(obj: Any, group: str) -> tuple[Any, Any]:
    """The dataset ``group`` of a Diagnosis, an ArviZ object or a dataset, and its table."""
    from smc_ebm.diagnostics._arviz import group as get_group

    idata = getattr(obj, "idata", obj)
    ds = idata if hasattr(idata, "data_vars") else get_group(idata, group)
    return ds, getattr(obj, "table", None)


def _select(
    obj: Any, var: str, index: int | None, group: str, num_chains: int | None
) -> tuple[Any, dict[str, list[int]], str]:
    """A few chains of ``var`` and the ArviZ ``coords`` of one of its coordinates.

    The coordinate defaults to the one with the largest R-hat (from the diagnosis's table,
    else computed on the device); ``num_chains`` chains are kept, evenly spread.
    """
    from smc_ebm.diagnostics._device import rhat

    ds, table = _arviz_group(obj, group)
    da = ds[var].transpose("chain", "draw", ...)
    coords: dict[str, list[int]] = {}
    label = var
    if da.ndim == 3:
        dim = da.dims[2]
        if index is None:
            if table is not None:
                col = table.loc[[f"{var}[{i}]" for i in range(da.shape[2])], "r_hat"]
                r = col.to_numpy()
            else:
                r = np.asarray(rhat(np.asarray(da.values, np.float32)))
            index = int(np.nanargmax(r)) if np.any(np.isfinite(r)) else 0
        coords = {dim: [da[dim].values[index]]}
        label = f"{var}[{index}]"
    elif da.ndim > 3:
        raise ValueError(f"{var} has more than one event dimension: {da.dims}.")
    c = da.sizes["chain"]
    if num_chains is not None and num_chains < c:
        pick = np.unique(np.linspace(0, c - 1, num_chains).astype(int))
        ds = ds.isel(chain=pick)
    return ds[[var]], coords, label


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence matplotlib's deprecation notices about ArviZ 0.23's own calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Passing a dict or None as alias_mapping")
        yield


def _arviz_1(name: str, ds: Any, path: str | Path | None, **kwargs: Any) -> Any:
    """ArviZ 1.x: ``arviz_plots`` builds its own figure (a ``PlotCollection``)."""
    from smc_ebm.diagnostics._arviz import arviz

    pc = getattr(arviz(), name)(ds, **kwargs)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pc.savefig(path)
    return pc


def _uses_arviz_1() -> bool:
    from smc_ebm.diagnostics._arviz import arviz_major

    return arviz_major() >= 1


def plot_trace(
    diag: Any,
    var: str = "x",
    index: int | None = None,
    *,
    group: str = "posterior",
    num_chains: int | None = 8,
    path: str | Path | None = None,
) -> Any:
    """``az.plot_trace`` of one scalar: per-chain densities and traces.

    Args:
        diag: a :class:`~smc_ebm.diagnostics.Diagnosis`, an ArviZ object (e.g.
            ``result.to_arviz()``) or an ``xarray.Dataset`` with ``chain`` and ``draw``.
        var: the variable (``"x"``, ``"U"``, or any variable of the group).
        index: coordinate of a vector variable (default: the one with the largest R-hat).
        group: the group of an ArviZ object (e.g. ``"training_traces"``).
        num_chains: chains drawn (evenly spread over all the chains; ``None``: all).
        path: where to save the PNG.

    Returns:
        A matplotlib ``Figure`` (on ArviZ 1.x, ``arviz_plots``' ``PlotCollection``).
    """
    from smc_ebm.diagnostics._arviz import arviz

    ds, coords, label = _select(diag, var, index, group, num_chains)
    if _uses_arviz_1():
        return _arviz_1("plot_trace_dist", ds, path, var_names=[var], coords=coords)
    from smc_ebm._figures import new_figure, save

    fig = new_figure((10, 3.2))
    axes = fig.subplots(1, 2, squeeze=False, width_ratios=[1, 3])
    with _quiet():
        arviz().plot_trace(ds, var_names=[var], coords=coords, axes=axes)
    axes[0, 1].set_title(f"{label}: {ds.sizes['chain']} chains")
    return save(fig, path)


def plot_rank(
    diag: Any,
    var: str = "x",
    index: int | None = None,
    *,
    group: str = "posterior",
    num_chains: int | None = 8,
    kind: str = "bars",
    path: str | Path | None = None,
) -> Any:
    """``az.plot_rank`` (Vehtari et al., 2021): each chain's histogram of pooled ranks.

    The draws of the chains shown are ranked together; a chain that samples the same
    distribution as the others has a flat histogram.

    Args:
        diag: a :class:`~smc_ebm.diagnostics.Diagnosis`, an ArviZ object or a dataset.
        var: the variable.
        index: coordinate of a vector variable (default: the one with the largest R-hat).
        group: the group of an ArviZ object.
        num_chains: chains ranked and drawn (evenly spread; ``None``: all).
        kind: ``"bars"`` or ``"vlines"`` (ArviZ's).
        path: where to save the PNG.
    """
    from smc_ebm.diagnostics._arviz import arviz

    ds, coords, label = _select(diag, var, index, group, num_chains)
    if _uses_arviz_1():
        return _arviz_1("plot_rank", ds, path, var_names=[var], coords=coords)
    from smc_ebm._figures import new_figure, save

    fig = new_figure((6.4, 3.6))
    ax = fig.subplots()
    with _quiet():
        arviz().plot_rank(ds, var_names=[var], coords=coords, kind=kind, ax=ax)
    ax.set_title(f"rank plot of {label}")
    return save(fig, path)


def plot_ess(
    diag: Any,
    var: str = "x",
    index: int | None = None,
    *,
    group: str = "posterior",
    kind: str = "evolution",
    path: str | Path | None = None,
) -> Any:
    """``az.plot_ess``: bulk and tail ESS as the draws accumulate (``kind="evolution"``).

    ``"local"`` and ``"quantile"`` are ArviZ's other kinds. All chains are used.
    """
    from smc_ebm.diagnostics._arviz import arviz

    ds, coords, label = _select(diag, var, index, group, None)
    if _uses_arviz_1():
        return _arviz_1("plot_ess", ds, path, var_names=[var], coords=coords)
    from smc_ebm._figures import new_figure, save

    fig = new_figure((6.4, 3.6))
    ax = fig.subplots()
    with _quiet():
        arviz().plot_ess(ds, var_names=[var], coords=coords, kind=kind, ax=ax)
    ax.set_title(f"ESS of {label} ({kind})")
    return save(fig, path)


def plot_pair(
    diag: Any,
    var: str = "x",
    *,
    group: str = "posterior",
    max_dims: int = 4,
    path: str | Path | None = None,
) -> Any:
    """``az.plot_pair`` of the first ``max_dims`` coordinates of ``var`` (all chains pooled)."""
    from smc_ebm.diagnostics._arviz import arviz

    ds, _ = _arviz_group(diag, group)
    da = ds[var].transpose("chain", "draw", ...)
    if da.ndim != 3 or da.shape[2] < 2:
        raise ValueError(f"plot_pair needs a vector variable of >= 2 coordinates; {da.dims}.")
    k = min(int(max_dims), da.shape[2])
    dim = da.dims[2]
    coords = {dim: list(da[dim].values[:k])}
    if _uses_arviz_1():
        return _arviz_1("plot_pair_focus", ds[[var]], path, var_names=[var], coords=coords)
    from smc_ebm._figures import new_figure, save

    fig = new_figure((2.6 * (k - 1) + 1.0, 2.6 * (k - 1) + 0.6))
    axes = fig.subplots(k - 1, k - 1, squeeze=False)
    with _quiet():
        arviz().plot_pair(
            ds[[var]], var_names=[var], coords=coords, ax=axes if k > 2 else axes[0, 0]
        )
    return save(fig, path)
