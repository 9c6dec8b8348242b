r"""``diagnose``: independent chains under a (trained) energy, with R-hat and ESS.

This is how "R-hat of 128 negative chains" is measured (Grenioux et al., 2023): start
``num_chains`` chains from the final walkers (resampled by weight) or from given points, run
an MCMC kernel that leaves :math:`\rho \propto e^{-U}` invariant (MALA by default) for
``num_steps`` steps, and compute the rank-normalised split R-hat, the bulk and tail ESS and
the Monte Carlo standard errors of every coordinate and of the energy, ArviZ's statistics
computed on the device in the same compiled call as the chains
(:func:`smc_ebm.diagnostics.device_summary_stats`). Chains stuck
in different modes give an R-hat far above 1: the walkers that trained the model could not
have represented it either.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from smc_ebm._live import live_call, poll_at
from smc_ebm._naming import OldAttributes, renamed
from smc_ebm._sharding import fetch, place, walker_mesh
from smc_ebm.diagnostics import _arviz
from smc_ebm.diagnostics._device import summary_stats
from smc_ebm.energies import as_base
from smc_ebm.kernels import KERNELS, make_kernel, run_chains

SUMMARY_COLUMNS = ("mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")


@dataclasses.dataclass
class Diagnosis(OldAttributes):
    """What :func:`diagnose` returns.

    Attributes:
        idata: ArviZ ``InferenceData`` (``DataTree`` on ArviZ 1.x) with ``posterior``
            (``x (chain, draw, x_dim)`` and the energy ``U (chain, draw)``) and
            ``sample_stats`` (``acceptance_rate``, ``lp = -U``).
        table: ``pandas.DataFrame``, one row per scalar (``x[0]``, ..., ``U``) with the
            columns ``mean, sd, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat``, as
            ``az.summary(kind="all")`` without the intervals.
        max_rhat: the largest R-hat of the table.
        min_ess_bulk: the smallest bulk ESS.
        min_ess_tail: the smallest tail ESS.
        acceptance: mean acceptance probability of the moves (1 for ULA).
        num_chains: number of chains.
        num_draws: recorded draws per chain.
        kernel: the kernel used.
        step_size: its step size.
    """

    idata: Any
    table: Any
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    acceptance: float
    num_chains: int
    num_draws: int
    kernel: str
    step_size: float

    def headline(self) -> dict[str, float]:
        """The headline figures as a dict (for reports and JSON)."""
        return {
            "max_rhat": self.max_rhat,
            "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail,
            "acceptance": self.acceptance,
            "num_chains": self.num_chains,
            "num_draws": self.num_draws,
            "kernel": self.kernel,
            "step_size": self.step_size,
        }

    def __str__(self) -> str:
        head = (
            f"{self.num_chains} chains x {self.num_draws} draws "
            f"({self.kernel}, h={self.step_size:g}): "
            f"max R-hat {self.max_rhat:.3f}, min ESS bulk {self.min_ess_bulk:.0f}, "
            f"min ESS tail {self.min_ess_tail:.0f}, acceptance {self.acceptance:.3f}"
        )
        worst = self.table.sort_values("r_hat", ascending=False).head(10)
        return head + "\n" + worst.to_string(float_format=lambda v: f"{v:.3g}")

    def plot_trace(self, **kwargs: Any) -> Any:
        """``az.plot_trace`` of a few chains; see :func:`smc_ebm.plots.plot_trace`."""
        from smc_ebm.plots import plot_trace

        return plot_trace(self, **kwargs)

    def plot_rank(self, **kwargs: Any) -> Any:
        """``az.plot_rank`` of a few chains; see :func:`smc_ebm.plots.plot_rank`."""
        from smc_ebm.plots import plot_rank

        return plot_rank(self, **kwargs)

    def plot_ess(self, **kwargs: Any) -> Any:
        """``az.plot_ess``; see :func:`smc_ebm.plots.plot_ess`."""
        from smc_ebm.plots import plot_ess

        return plot_ess(self, **kwargs)

    def plot_pair(self, **kwargs: Any) -> Any:
        """``az.plot_pair`` of the coordinates; see :func:`smc_ebm.plots.plot_pair`."""
        from smc_ebm.plots import plot_pair

        return plot_pair(self, **kwargs)


def _chains(energy, key, x0, num_warmup, num_records, thin, step_size, kernel, every):
    """Run the chains and summarise them.

    Returns positions ``(R, C, d)``, energies and acceptances ``(R, C)``, and the columns
    of the table (:func:`summary_stats`) of ``x`` and ``U``, each of shape ``(d + 1,)``.
    The host is polled every ``every`` steps of all chains (``None``: no poll compiled in).
    """
    k = make_kernel(kernel, step_size)
    on_step = None if every is None else (lambda i: poll_at(i, every))
    xs, us, accs = run_chains(
        key, k, energy, x0, num_records, thin=thin, num_warmup=num_warmup, on_step=on_step
    )
    draws = jnp.concatenate([xs, us[..., None].astype(xs.dtype)], axis=-1)
    return xs, us, accs, summary_stats(jnp.swapaxes(draws, 0, 1))


_run_chains = eqx.filter_jit(_chains)


def _initial_points(source: Any, key: PRNGKeyArray, init: Any, num_chains: int) -> Any:
    if init is not None:
        init = as_base(init)  # NumPyro and flowjax distributions sample (key, n) too
        if hasattr(init, "sample") and callable(init.sample):
            return jnp.asarray(init.sample(key, num_chains))
        x0 = jnp.asarray(init)
        if x0.ndim != 2 or x0.shape[0] != num_chains:
            raise ValueError(
                f"init must be an (num_chains, d) = ({num_chains}, d) array or have .sample(); "
                f"got shape {x0.shape}."
            )
        return x0
    if hasattr(source, "walkers") and hasattr(source, "log_weights"):
        from smc_ebm.smc._resampling import RESAMPLERS

        a = jnp.asarray(source.log_weights)
        idx = RESAMPLERS["systematic"](key, jax.nn.softmax(a), num_chains)
        # Systematic resampling returns sorted ancestors; shuffle so that chain order
        # carries no information.
        idx = jax.random.permutation(jax.random.fold_in(key, 1), idx)
        return jnp.asarray(source.walkers)[idx]
    raise ValueError(
        "diagnose needs initial points for an energy: pass init= (an (num_chains, d) array "
        "or a distribution with .sample(key, n)), or pass a FitResult."
    )


def _check_chains(xs: Any, us: Any, accs: Any, kernel: str, step_size: float) -> None:
    """Raise ``FloatingPointError`` for non-finite chains; warn when moves are never accepted.

    ``xs (draw, chain, d)``, ``us`` and ``accs (draw, chain)``, on the host.
    """
    bad = ~(np.isfinite(xs).all(axis=-1) & np.isfinite(us))
    if bad.any():
        n_bad, first = int(bad.any(axis=0).sum()), int(np.argmax(bad.any(axis=1)))
        raise FloatingPointError(
            f"diagnose: {n_bad} of {bad.shape[1]} chains reached a non-finite position or "
            f"energy (first at record {first}; kernel={kernel!r}, step_size={step_size}); a "
            "step size too large for the energy's curvature is the usual cause: try a "
            "smaller step_size (or kernel='mala', which rejects such moves)."
        )
    acc = float(np.mean(accs))
    if acc < 0.01:
        warnings.warn(
            f"diagnose: the chains' moves were accepted {100 * acc:.2f}% of the time "
            f"(kernel={kernel!r}, step_size={step_size}): the chains hardly move, so R-hat "
            "and ESS describe their starting points. Take a smaller step_size.",
            RuntimeWarning,
            stacklevel=3,
        )


def _table(columns: dict[str, dict[str, Any]]) -> Any:
    """Table with one row per scalar, named ``var[i, j]`` as ArviZ does."""
    import pandas as pd

    rows: dict[str, list[float]] = {}
    for name, stats in columns.items():
        shape = np.shape(stats["mean"])
        flat = {col: np.asarray(stats[col]).reshape(-1) for col in SUMMARY_COLUMNS}
        for i, index in enumerate(np.ndindex(*shape) if shape else [()]):
            label = f"{name}[{', '.join(map(str, index))}]" if index else str(name)
            rows[label] = [float(flat[col][i]) for col in SUMMARY_COLUMNS]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))


def summary_table(ds: Any) -> Any:
    """``az.summary``-style table of every scalar of ``ds`` (dims ``chain, draw, ...``).

    Columns ``mean, sd, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat``; one row per
    scalar, named ``var[i, j]`` as ArviZ does. Computed on the device by
    :func:`smc_ebm.diagnostics.device_summary_stats` (ArviZ's ``rhat``, ``ess`` and
    ``mcse``, matched to a relative 1e-3 in float32).
    """
    columns = {}
    for name in ds.data_vars:
        da = ds[name].transpose("chain", "draw", ...)
        columns[str(name)] = jax.device_get(summary_stats(jnp.asarray(da.values)))
    return _table(columns)


def _by_site(energy: Any, xs: np.ndarray, coords: dict) -> Any:
    """A NumPyro energy's draws by site, or ``None`` for other energies.

    The draws ``(chain, draw, d)`` go through ``energy.constrain`` to the model's sites,
    each with its own dims (``{site}_dim_{i}``).
    """
    if not (hasattr(energy, "constrain") and hasattr(energy, "site_names")):
        return None
    c, n, d = xs.shape
    values = jax.device_get(energy.constrain(jnp.asarray(xs.reshape(c * n, d))))
    return _arviz.sites_dataset(
        {name: np.asarray(v).reshape(c, n, *np.shape(v)[1:]) for name, v in values.items()},
        {k: coords[k] for k in ("chain", "draw")},
    )


@renamed(positional=("key",))
def diagnose(
    result_or_energy: Any,
    *,
    key: PRNGKeyArray,
    num_chains: int = 128,
    num_steps: int = 1000,
    kernel: str = "mala",
    step_size: float | None = None,
    init: Any = None,
    num_warmup: int = 0,
    thin: int = 1,
    devices: Sequence[Any] | None = None,
    progress: bool = True,
) -> Diagnosis:
    r"""Run independent chains under an energy and measure their convergence.

    Args:
        result_or_energy: a :class:`~smc_ebm.FitResult` (chains under its final energy,
            started from its final walkers resampled by weight) or an energy (then
            ``init`` is required).
        key: PRNG key.
        num_chains: number of independent chains (at least 2).
        num_steps: recorded steps per chain (after ``num_warmup``), thinned by ``thin``.
        kernel: ``"mala"`` (leaves :math:`e^{-U}` invariant) or ``"ula"`` (biased by
            :math:`O(h)`; useful to see what the training walkers saw).
        step_size: Langevin step ``h`` (default: the strategy's, else 0.1).
        init: starting points, an ``(num_chains, d)`` array or a distribution with
            ``sample(key, n)``; default the final walkers of the result.
        num_warmup: steps run and discarded before recording.
        thin: keep one step in ``thin``.
        devices: split the chains over these devices (``jax.devices()``; ``num_chains`` must
            be a multiple of their number); the table's statistics are then cross-device
            reductions. Default: one device.
        progress: show a live progress bar (tqdm) of the steps (warm-up included), moved
            from inside the compiled call about every 0.5 s, then the acceptance (MALA).
            Ctrl-C ends the call at its next poll with ``KeyboardInterrupt``.

    Returns:
        A :class:`Diagnosis`: the ArviZ object, the summary table and the headline
        figures (max R-hat, min bulk/tail ESS, acceptance). For a NumPyro model
        (:func:`~smc_ebm.energies.from_numpyro`) the ``posterior`` group holds its latent
        sites under their own names, constrained, with ``U``; the chains' unconstrained
        coordinates, which the table's ``x`` rows describe, are in
        ``unconstrained_posterior``. The chains and the table's statistics run in one
        compiled call; only the draws and the table leave the device.

    Example:
        >>> diag = se.diagnose(result, key=jax.random.key(0), num_chains=128)  # doctest: +SKIP
        >>> print(diag)                                                   # doctest: +SKIP
    """
    if int(num_chains) < 2:
        raise ValueError(f"num_chains must be >= 2; got {num_chains}.")
    if int(num_steps) < 4 or int(num_steps) % int(thin):
        raise ValueError(
            f"num_steps must be >= 4 and a multiple of thin; "
            f"got num_steps={num_steps}, thin={thin}."
        )
    if int(thin) < 1 or int(num_warmup) < 0:
        raise ValueError(f"thin must be >= 1 and num_warmup >= 0; got {thin}, {num_warmup}.")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {tuple(KERNELS)}; got {kernel!r}.")
    energy = getattr(result_or_energy, "energy", result_or_energy)
    if step_size is None:
        step_size = float(getattr(getattr(result_or_energy, "strategy", None), "step_size", 0.1))
    if not float(step_size) > 0 or not math.isfinite(float(step_size)):
        raise ValueError(f"step_size must be a positive finite number; got {step_size}.")
    k_init, k_run = jax.random.split(key)
    x0 = _initial_points(result_or_energy, k_init, init, int(num_chains))
    dim = getattr(energy, "dim", x0.shape[1])
    if x0.shape[1] != dim:
        raise ValueError(f"initial points have dimension {x0.shape[1]}; the energy {dim}.")
    if devices is not None:
        mesh = walker_mesh(devices, int(num_chains))
        x0, energy = place(x0, mesh, int(num_chains)), place(energy, mesh, None)

    xr = _arviz.xarray()
    num_records = int(num_steps) // int(thin)
    total = int(num_warmup) + num_records * int(thin)
    timing = ("diagnose", type(energy).__name__, x0.shape, str(x0.dtype), kernel, int(thin))
    with live_call(timing, total, "diagnose", progress) as live:
        out = _run_chains(
            energy,
            k_run,
            x0,
            int(num_warmup),
            num_records,
            int(thin),
            float(step_size),
            kernel,
            live.every,
        )
        xs, us, accs, columns = jax.device_get(fetch(live.done(out)))
        live.show(**({} if kernel == "ula" else {"acceptance": float(np.mean(accs))}))
    _check_chains(xs, us, accs, kernel, float(step_size))
    # (draw, chain, ...) -> (chain, draw, ...)
    xs, us, accs = np.swapaxes(xs, 0, 1), np.swapaxes(us, 0, 1), np.swapaxes(accs, 0, 1)
    coords = {
        "chain": np.arange(int(num_chains)),
        "draw": int(num_warmup) + int(thin) * (1 + np.arange(num_records)) - 1,
        "x_dim": np.arange(dim),
    }
    posterior = xr.Dataset(
        {"x": (("chain", "draw", "x_dim"), xs), "U": (("chain", "draw"), us)}, coords=coords
    )
    stats = xr.Dataset(
        {"acceptance_rate": (("chain", "draw"), accs), "lp": (("chain", "draw"), -us)},
        coords={k: coords[k] for k in ("chain", "draw")},
    )
    groups = {"posterior": posterior, "sample_stats": stats}
    sites = _by_site(energy, xs, coords)
    if sites is not None:  # a NumPyro model: its sites by name, the walkers' space beside
        if "U" not in sites:
            sites = sites.assign(U=posterior["U"])
        groups = {"posterior": sites, "unconstrained_posterior": posterior, "sample_stats": stats}
    idata = _arviz.make_tree(
        groups, {"inference_library": "smc_ebm", "kernel": kernel, "step_size": float(step_size)}
    )
    table = _table(
        {
            "x": {k: v[:dim] for k, v in columns.items()},
            "U": {k: v[dim] for k, v in columns.items()},
        }
    )
    undefined = table.index[table["r_hat"].isna()].tolist()
    if undefined:
        warnings.warn(
            f"diagnose: R-hat is undefined (NaN) for {', '.join(undefined[:5])}"
            f"{' ...' if len(undefined) > 5 else ''}: those chains do not vary (every chain "
            "constant, or fewer than 4 draws per chain); max_rhat ignores them.",
            RuntimeWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():  # an all-NaN column gives NaN, said above
        warnings.simplefilter("ignore", RuntimeWarning)
        max_rhat = float(np.nanmax(table["r_hat"]))
        min_ess_bulk = float(np.nanmin(table["ess_bulk"]))
        min_ess_tail = float(np.nanmin(table["ess_tail"]))
    return Diagnosis(
        idata=idata,
        table=table,
        max_rhat=max_rhat,
        min_ess_bulk=min_ess_bulk,
        min_ess_tail=min_ess_tail,
        acceptance=float(np.mean(accs)),
        num_chains=int(num_chains),
        num_draws=num_records,
        kernel=kernel,
        step_size=float(step_size),
    )
