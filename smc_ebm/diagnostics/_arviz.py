"""Conversion to ArviZ: ``InferenceData`` on ArviZ 0.x, ``xarray.DataTree`` on ArviZ 1.x.

ArviZ 1.x (Python >= 3.12) dropped ``InferenceData`` for ``xarray.DataTree`` and split into
``arviz-base``/``arviz-stats``/``arviz-plots``. The groups are built here as plain
``xarray.Dataset`` objects and assembled by :func:`make_tree`, the only place that knows
which ArviZ is installed; the statistics (:func:`rhat`, :func:`ess`, :func:`mcse`) are
called on ``xarray.Dataset`` objects, which both majors accept with the same meaning. The
conversion of results lives in :mod:`smc_ebm.diagnostics._to_arviz`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from collections.abc import Mapping
from typing import Any

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


def sites_dataset(values: Mapping[str, Any], coords: Mapping[str, Any] | None = None) -> Any:
    """Draws of named sites, each ``(chain, draw, *shape)``, as one ``xarray.Dataset``.

    A site's own axes get ArviZ's default names ``{site}_dim_{i}``; chain and draw take
    ``coords`` (default: numbered from 0). Used for NumPyro models, whose draws are reported
    by site.
    """
    data, shape = {}, None
    for name, v in values.items():
        v = np.asarray(v)
        shape = v.shape[:2]
        data[name] = (("chain", "draw", *(f"{name}_dim_{i}" for i in range(v.ndim - 2))), v)
    if coords is None and shape is not None:
        coords = {"chain": np.arange(shape[0]), "draw": np.arange(shape[1])}
    return xarray().Dataset(data, coords=coords)


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


def ess(ds: Any, method: str = "bulk") -> Any:
    """Effective sample size over ``(chain, draw)`` (``"bulk"`` or ``"tail"``)."""
    return arviz().ess(ds, method=method)


def mcse(ds: Any, method: str = "mean") -> Any:
    """Monte Carlo standard error of the mean (``"mean"``) or the sd (``"sd"``)."""
    return arviz().mcse(ds, method=method)
