"""Mode weights, log-density error on a 2-D grid, and R-hat of independent chains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm._naming import renamed
from smc_ebm.kernels import make_kernel, run_chains


def grid_2d(
    bounds: tuple[tuple[float, float], tuple[float, float]], n: int = 200
) -> tuple[Float[Array, "m 2"], float]:
    """Cell centres ``(n*n, 2)`` of a regular grid on ``((x0, x1), (y0, y1))``, and the area.

    Returns ``(centres, cell_area)``.
    """
    (x0, x1), (y0, y1) = bounds
    if not (x1 > x0 and y1 > y0 and n >= 2):
        raise ValueError(f"grid_2d: need x1 > x0, y1 > y0 and n >= 2; got {bounds}, n={n}.")
    dx, dy = (x1 - x0) / n, (y1 - y0) / n
    xs = x0 + dx * (jnp.arange(n) + 0.5)
    ys = y0 + dy * (jnp.arange(n) + 0.5)
    gx, gy = jnp.meshgrid(xs, ys, indexing="ij")
    return jnp.stack([gx.ravel(), gy.ravel()], axis=1), dx * dy


def _nearest(x: Float[Array, "m d"], centres: Float[Array, "K d"]) -> Array:
    d2 = jnp.sum((x[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
    return jnp.argmin(d2, axis=1)


def mode_weights_grid(
    energy: Callable[[Array], Array],
    centres: Any,
    bounds: tuple[tuple[float, float], tuple[float, float]],
    n: int = 200,
) -> Float[Array, " K"]:
    r"""Mode weights of a 2-D energy: :math:`e^{-U}` normalised on a grid, summed per centre.

    Each grid cell goes to its nearest centre. Jittable. Returns ``(K,)`` weights summing
    to one.
    """
    centres = jnp.asarray(centres)
    x, _ = grid_2d(bounds, n)
    p = jax.nn.softmax(-jax.vmap(energy)(x))
    return jax.ops.segment_sum(p, _nearest(x, centres), num_segments=centres.shape[0])


def mode_weights_samples(
    x: Float[Array, "N d"], centres: Any, log_weights: Float[Array, " N"] | None = None
) -> Float[Array, " K"]:
    """Mode weights in any dimension: (weighted) samples assigned to the nearest centre."""
    centres = jnp.asarray(centres)
    p = (
        jnp.full((x.shape[0],), 1.0 / x.shape[0], x.dtype)
        if log_weights is None
        else jax.nn.softmax(log_weights)
    )
    return jax.ops.segment_sum(p, _nearest(x, centres), num_segments=centres.shape[0])


def log_density_error(
    energy: Callable[[Array], Array],
    log_prob: Callable[[Array], Array],
    bounds: tuple[tuple[float, float], tuple[float, float]],
    n: int = 200,
) -> Float[Array, ""]:
    r"""Median over a 2-D grid of :math:`(\log p_\theta(x) - \log p_*(x))^2`.

    The model is normalised by quadrature on the same grid:
    :math:`\log p_\theta = -U - \log \sum_{\rm cells} e^{-U}\,\Delta A`.
    """
    x, area = grid_2d(bounds, n)
    neg_u = -jax.vmap(energy)(x)
    log_p_model = neg_u - jax.nn.logsumexp(neg_u) - jnp.log(area)
    return jnp.median((log_p_model - jax.vmap(log_prob)(x)) ** 2)


def rhat(chains: Any) -> float:
    """Max over dimensions of the rank-normalised split R-hat of ``(C, T, d)`` chains.

    Computed by :func:`smc_ebm.diagnostics.device_rhat` (jitted; equal to ArviZ's ``az.rhat``).
    """
    from smc_ebm.diagnostics._device import rhat as device_rhat

    chains = np.asarray(chains)
    if chains.ndim != 3 or chains.shape[0] < 2 or chains.shape[1] < 4:
        raise ValueError(
            f"rhat: chains must have shape (num_chains >= 2, num_draws >= 4, d); "
            f"got {chains.shape}."
        )
    return float(np.max(np.asarray(device_rhat(jnp.asarray(chains)))))


@renamed()
def langevin_chains(
    key: PRNGKeyArray,
    energy: Callable[[Array], Array],
    x0: Float[Array, "C d"],
    num_steps: int,
    step_size: float,
    kernel: str = "ula",
) -> Float[Array, "C T d"]:
    """Independent ULA or MALA chains from ``x0`` under a fixed energy, ``(C, num_steps, d)``."""
    if kernel not in ("ula", "mala"):
        raise ValueError(f"kernel must be 'ula' or 'mala'; got {kernel!r}.")

    @jax.jit
    def run(key, x0):
        xs, _, _ = run_chains(key, make_kernel(kernel, step_size), energy, x0, num_steps)
        return jnp.swapaxes(xs, 0, 1)

    return run(key, jnp.asarray(x0))
