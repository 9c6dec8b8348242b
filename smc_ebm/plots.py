"""Figures of a training run and of its diagnostics (matplotlib, headless).

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas with the object
API (no ``pyplot`` state, no global backend change), returns it, and saves it when ``path``
is given. They read numpy arrays, so a run loaded from disk (:func:`smc_ebm.load_run`)
plots like a fresh :class:`~smc_ebm.FitResult`. Trace, rank, ESS and pair plots are ArviZ's
(:mod:`smc_ebm._arviz_plots`), drawn on such a figure; the figures here are those ArviZ
lacks: training curves (weights, ESS, log Z over optimizer steps), densities, images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smc_ebm._arviz_plots import plot_ess, plot_pair, plot_rank, plot_trace
from smc_ebm._figures import new_figure, save

__all__ = [
    "figure_set",
    "new_figure",
    "plot_density_2d",
    "plot_ess",
    "plot_image_grid",
    "plot_mode_weights",
    "plot_pair",
    "plot_rank",
    "plot_sample",
    "plot_trace",
    "plot_training",
    "save",
]


def _history(obj: Any) -> dict[str, np.ndarray]:
    hist = getattr(obj, "history", obj)
    return {k: np.asarray(v) for k, v in hist.items()}


def plot_training(
    result_or_history: Any,
    *,
    kl: str | None = None,
    path: str | Path | None = None,
) -> Any:
    """Training curves: cross-entropy (or a KL metric), ESS with resampling marks, log Z.

    Args:
        result_or_history: a :class:`~smc_ebm.FitResult` or its ``history`` dict.
        kl: name of a history column to plot instead of the cross-entropy (e.g. an exact
            KL metric); default: ``"kl"`` or ``"exact_kl"`` when recorded.
        path: where to save the PNG.

    Returns:
        The figure (three panels).
    """
    h = _history(result_or_history)
    step = h["step"]
    if kl is None:
        kl = next((k for k in ("kl", "exact_kl") if k in h), None)
    fig = new_figure((12, 3.6))
    ax_h, ax_e, ax_z = fig.subplots(1, 3)
    if kl is not None:
        ax_h.plot(step, h[kl], color="C0", label=kl)
        ax_h.set(ylabel=kl, title="KL divergence")
        if np.all(h[kl][np.isfinite(h[kl])] > 0):
            ax_h.set_yscale("log")
    if "cross_entropy" in h and np.any(np.isfinite(h["cross_entropy"])):
        target = ax_h if kl is None else ax_h.twinx()
        target.plot(step, h["cross_entropy"], color="C1", ls="--", label="cross-entropy")
        target.set_ylabel("cross-entropy")
        if kl is None:
            ax_h.set_title("Cross-entropy estimate")
    ax_h.set_xlabel("optimizer step")
    ax_e.plot(step, h.get("ess", np.full_like(step, np.nan, dtype=float)), color="C2")
    res = h.get("resampled", np.zeros_like(step))
    marks = step[res > 0]
    if marks.size:
        ax_e.vlines(marks, 0, 1, color="C3", lw=0.6, alpha=0.5, label="resampled")
        ax_e.legend(loc="lower left", fontsize="small")
    ax_e.set(xlabel="optimizer step", ylabel="normalised ESS", ylim=(0, 1.05), title="ESS")
    if "log_Z" in h and np.any(np.isfinite(h["log_Z"])):
        ax_z.plot(step, h["log_Z"], color="C4")
    else:
        ax_z.text(0.5, 0.5, "no log Z\n(unweighted strategy)", ha="center", va="center")
    ax_z.set(xlabel="optimizer step", ylabel="log Z", title="log Z estimate")
    return save(fig, path)


def plot_mode_weights(
    result_or_history: Any,
    names: Sequence[str] | None = None,
    *,
    targets: Sequence[float] | None = None,
    path: str | Path | None = None,
) -> Any:
    """Mode weights over training, from metric columns of the history.

    Record them with ``fit(..., metrics={"weight_0": se.metrics.mode_weight(0), ...})`` (or a
    nearest-centre metric when the mode centres are known, as the runs of ``smc-ebm fit``
    do).

    Args:
        result_or_history: a :class:`~smc_ebm.FitResult` or its ``history``.
        names: history columns to plot (default: every column starting with ``weight``).
        targets: the true weights, drawn as dotted lines in the same colours.
        path: where to save the PNG.
    """
    h = _history(result_or_history)
    names = list(names) if names is not None else sorted(k for k in h if k.startswith("weight"))
    if not names:
        raise ValueError("no mode-weight columns in the history (names starting with 'weight').")
    fig = new_figure((6.4, 3.8))
    ax = fig.subplots()
    for i, name in enumerate(names):
        ax.plot(h["step"], h[name], color=f"C{i}", label=name)
        if targets is not None and i < len(targets):
            ax.axhline(targets[i], color=f"C{i}", ls=":", lw=1)
    ax.set(xlabel="optimizer step", ylabel="weight", ylim=(-0.02, 1.02), title="Mode weights")
    ax.legend(loc="best", fontsize="small")
    return save(fig, path)


def plot_density_2d(
    energy: Any,
    *,
    data: Any = None,
    walkers: Any = None,
    log_weights: Any = None,
    bounds: tuple[float, float, float, float] | None = None,
    grid: int = 120,
    path: str | Path | None = None,
) -> Any:
    r"""Contours of the model density :math:`e^{-U}` in 2-D, with data and walkers.

    Walkers are drawn with an area proportional to their weight. For ``dim != 2`` the
    points are shown in their first two coordinates, without contours.

    Args:
        energy: the energy (one sample ``(d,) -> ()``).
        data: ``(n, d)`` training samples (grey dots).
        walkers: ``(N, d)`` walker positions (red).
        log_weights: ``(N,)`` their log-weights (default equal).
        bounds: ``(xmin, xmax, ymin, ymax)`` (default: the points' range plus a margin).
        grid: grid points per axis.
        path: where to save the PNG.
    """
    import jax
    import jax.numpy as jnp

    dim = int(getattr(energy, "dim", 2))
    pts = [np.asarray(p)[:, :2] for p in (data, walkers) if p is not None]
    if bounds is None:
        if pts:
            allp = np.concatenate(pts)
            lo, hi = np.nanmin(allp, 0), np.nanmax(allp, 0)
        else:
            lo, hi = np.array([-3.0, -3.0]), np.array([3.0, 3.0])
        pad = 0.15 * np.maximum(hi - lo, 1.0)
        bounds = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    fig = new_figure((5.2, 4.6))
    ax = fig.subplots()
    if dim == 2:
        xs = np.linspace(bounds[0], bounds[1], grid)
        ys = np.linspace(bounds[2], bounds[3], grid)
        xx, yy = np.meshgrid(xs, ys)
        flat = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
        u = np.asarray(jax.jit(jax.vmap(energy))(flat)).reshape(xx.shape)
        dens = np.exp(-(u - np.nanmin(u)))
        ax.contourf(xx, yy, dens, levels=12, cmap="Blues")
        ax.set_title("model density e^{-U} (normalised to max 1)")
    else:
        ax.set_title(f"first two of {dim} coordinates")
    if data is not None:
        d = np.asarray(data)
        ax.scatter(d[:, 0], d[:, 1], s=2, c="0.35", alpha=0.4, label="data", lw=0)
    if walkers is not None:
        w = np.asarray(walkers)
        if log_weights is None:
            sizes = np.full(w.shape[0], 4.0)
        else:
            a = np.asarray(log_weights, np.float64)
            p = np.exp(a - a.max())
            sizes = 4.0 * p / p.mean()
        ax.scatter(w[:, 0], w[:, 1], s=sizes, c="C3", alpha=0.6, label="walkers", lw=0)
    ax.set(xlim=bounds[:2], ylim=bounds[2:], xlabel="x[0]", ylabel="x[1]")
    if pts:
        ax.legend(loc="upper right", fontsize="small", markerscale=3)
    return save(fig, path)


def plot_image_grid(
    samples: Any,
    shape: tuple[int, ...],
    *,
    n: int = 64,
    cmap: str = "gray",
    path: str | Path | None = None,
) -> Any:
    """The first ``n`` samples as a grid of images.

    Args:
        samples: ``(N, prod(shape))`` flattened images.
        shape: image shape, ``(H, W)`` or ``(H, W, C)``.
        n: images to show (a square grid of ``ceil(sqrt(n))`` columns).
        cmap: colour map of single-channel images.
        path: where to save the PNG.
    """
    x = np.asarray(samples)[:n]
    if x.shape[1] != int(np.prod(shape)):
        raise ValueError(
            f"samples have {x.shape[1]} values each; shape {shape} needs {np.prod(shape)}."
        )
    cols = int(np.ceil(np.sqrt(x.shape[0])))
    rows = int(np.ceil(x.shape[0] / cols))
    fig = new_figure((1.1 * cols, 1.1 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    lo, hi = float(np.min(x)), float(np.max(x))
    for ax, img in zip(axes, x, strict=False):
        ax.imshow(img.reshape(shape), cmap=cmap, vmin=lo, vmax=hi)
    for ax in axes:
        ax.set_axis_off()
    return save(fig, path)


def plot_sample(
    out: Any,
    energy: Any = None,
    *,
    path: str | Path | None = None,
) -> Any:
    """Equal-weight generated samples of :func:`~smc_ebm.sample` over the density (2-D)."""
    if energy is not None:
        return plot_density_2d(energy, walkers=out.resampled, path=path)
    fig = new_figure((5, 4.5))
    ax = fig.subplots()
    ax.scatter(out.resampled[:, 0], out.resampled[:, 1], s=3, c="C3", lw=0)
    return save(fig, path)


def figure_set(
    history: Mapping[str, Any],
    *,
    energy: Any = None,
    data: Any = None,
    walkers: Any = None,
    log_weights: Any = None,
    targets: Sequence[float] | None = None,
    image_shape: tuple[int, ...] | None = None,
    diagnosis: Any = None,
    out_dir: str | Path,
) -> list[Path]:
    """Write every figure that applies to a run into ``out_dir``; return their paths.

    ``training.png`` always; ``mode_weights.png`` when the history has ``weight*``
    columns; ``density.png`` for 2-D (or any-d, projected) energies when not images;
    ``samples.png`` (an image grid of the equal-weight walkers) when ``image_shape`` is
    given; ``trace.png`` and ``rank.png`` from a diagnosis.
    """
    out_dir = Path(out_dir)
    written = [out_dir / "training.png"]
    plot_training(history, path=written[-1])
    if any(k.startswith("weight") for k in history):
        written.append(out_dir / "mode_weights.png")
        plot_mode_weights(history, targets=targets, path=written[-1])
    if image_shape is not None and walkers is not None:
        written.append(out_dir / "samples.png")
        plot_image_grid(walkers, image_shape, path=written[-1])
    elif energy is not None:
        written.append(out_dir / "density.png")
        plot_density_2d(
            energy, data=data, walkers=walkers, log_weights=log_weights, path=written[-1]
        )
    if diagnosis is not None:
        written.append(out_dir / "trace.png")
        plot_trace(diagnosis, path=written[-1])
        written.append(out_dir / "rank.png")
        plot_rank(diagnosis, path=written[-1])
    return written
