"""One naming scheme for the public API, and the old names it replaced (deprecated).

The scheme (docs/api.md, "Naming"), chosen to read like JAX, blackjax and NumPyro:

- counts are ``num_<things>``: ``num_steps``, ``num_walkers``, ``num_chains``,
  ``num_warmup``, ``num_runs``, ``num_samples`` (NumPyro's ``num_samples``/``num_chains``,
  blackjax's ``num_steps``/``num_integration_steps``);
- a weighted SMC population is made of *walkers* (``num_walkers`` in every strategy, in
  ``sample`` and in ``posterior``); independent MCMC chains, whose output is ArviZ's
  ``chain`` dimension, are *chains* (``diagnose``);
- calls whose first argument is an energy, a model, a result or a config take the PRNG key
  as the keyword ``key=`` (``fit``, ``sample``, ``diagnose``, ``posterior``, as equinox's
  module constructors do); functions that only draw (datasets, kernels, ``init``) take it
  first, as ``jax.random`` does.

The old names keep working, with a ``DeprecationWarning`` that names the new one; giving
both the old and the new name is a ``TypeError``.
"""

from __future__ import annotations

import abc
import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["OLD_NAMES", "OldAttributes", "RenamedArguments", "renamed", "translate"]

#: old keyword or attribute -> new name, for every public callable
OLD_NAMES: dict[str, str] = {
    "n_walkers": "num_walkers",
    "n_particles": "num_walkers",
    "n_steps": "num_steps",
    "n_chains": "num_chains",
    "n_runs": "num_runs",
    "n_warmup": "num_warmup",
    "n_anneal": "num_anneal",
    "n_proposals": "num_proposals",
    "n_global": "num_global",
    "n_local": "num_local",
    "n_observers": "num_observers",
    "n_refresh": "num_refresh",
    "n_projections": "num_projections",
    "n_active": "num_active",
    "n_batch": "num_batch",
    "n_layers": "num_layers",
    "n_modes": "num_modes",
    "n_neurons": "num_neurons",
    "n_records": "num_records",
    "n_mcmc_steps": "num_mcmc_steps",
    "n_leapfrog": "num_integration_steps",
    "n_train": "num_train",
    "n_test": "num_test",
    "n_draws": "num_draws",
    "n_resampled": "num_resamplings",
    "n_resamplings": "num_resamplings",
    "n_stages": "num_stages",
    "n_evaluations": "num_evaluations",
}


def _warn(where: str, old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"smc_ebm: {where}: `{old}` is deprecated; use `{new}`.",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def translate(
    where: str,
    kwargs: Mapping[str, Any],
    extra: Mapping[str, str] | None = None,
    stacklevel: int = 3,
) -> dict[str, Any]:
    """``kwargs`` with the old names replaced by the new ones (warning once per name)."""
    names = {**OLD_NAMES, **(extra or {})}
    out = dict(kwargs)
    for old in [k for k in kwargs if k in names]:
        new = names[old]
        if new in kwargs:
            raise TypeError(f"{where}: got both `{old}` (deprecated) and `{new}`; pass `{new}`.")
        _warn(where, old, new, stacklevel)
        out[new] = out.pop(old)
    return out


def renamed(
    extra: Mapping[str, str] | None = None, positional: Sequence[str] = (), n_args: int = 1
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the function also accepts its old names, with a warning.

    The old keywords are ``OLD_NAMES`` and ``extra``. After its first ``n_args`` positional
    arguments, the arguments named in ``positional`` (now keyword-only) may still be given
    by position, as they used to be.
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        where = f"{f.__qualname__}()"

        @functools.wraps(f)
        def call(*args: Any, **kwargs: Any) -> Any:
            if positional and len(args) > n_args:
                moved = args[n_args:]
                if len(moved) > len(positional):
                    raise TypeError(
                        f"{where} takes {n_args} positional argument(s); "
                        f"pass {', '.join(positional)} by keyword."
                    )
                for name, value in zip(positional, moved, strict=False):
                    if name in kwargs:
                        raise TypeError(f"{where}: `{name}` given twice.")
                    warnings.warn(
                        f"smc_ebm: {where}: passing `{name}` by position is deprecated; "
                        f"use `{name}=`.",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[name] = value
                args = args[:n_args]
            return f(*args, **translate(where, kwargs, extra))

        return call

    return wrap


class RenamedArguments(abc.ABCMeta):
    """Metaclass: the class's constructor also accepts the old keyword names."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **translate(f"{cls.__name__}()", kwargs))


class OldAttributes:
    """Mixin: the old attribute names (``result.n_chains``) still read, with a warning."""

    def __getattr__(self, name: str) -> Any:
        new = OLD_NAMES.get(name)
        if new is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        _warn(type(self).__name__, name, new, 2)
        return getattr(self, new)
