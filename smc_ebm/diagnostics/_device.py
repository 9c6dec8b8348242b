r"""R-hat, ESS and MCSE in ``jax.numpy``: ArviZ's chain diagnostics inside ``jax.jit``.

:func:`diagnose` computes its table with ArviZ on the host, which means copying every draw
off the device. The functions here compute the same numbers on the device, so that a
training loop can monitor chains without leaving ``jit``: the rank-normalised split R-hat
(``az.rhat(method="rank")``), the bulk and tail ESS (``az.ess(method="bulk" | "tail")``) and
the Monte Carlo standard errors of the mean and the sd (``az.mcse(method="mean" | "sd")``),
following ArviZ 0.23 (``arviz/stats/diagnostics.py``) step for step (Vehtari et al., 2021).

Draws are ``(chain, draw)`` or ``(chain, draw, *event)``; every statistic is computed per
element of ``event`` and has shape ``event``. As in ArviZ, an element with a ``NaN`` draw,
or draws of fewer than 4 per chain (fewer than 2 chains for R-hat), gives ``NaN``. Integer
draws are converted to the default float type. Each function is one jitted call and
compiles once per input shape and dtype.

From blackjax only :func:`blackjax.diagnostics.potential_scale_reduction` is used (it is
ArviZ's ``_rhat`` formula exactly). The splitting, the ranking and the ESS are written here
because blackjax's do not reproduce ArviZ's numbers (measured against ArviZ 0.23.4 with
blackjax 1.7.1): ``effective_sample_size`` carries Geyer's initial sequence to the last
lag (ArviZ stops at lag ``draw - 3``) and applies the monotone step past the truncation
(1-15% off for autocorrelated or stuck chains), and returns 0 rather than the number of
draws for constant series (so a tail ESS of 0 for a rare indicator); its ``rhat``,
``ess_bulk`` and ``ess_tail`` drop the last draw of an odd-length chain where ArviZ drops
the middle one, and its tail ESS takes ``x >= q_0.95`` for the upper tail where ArviZ
takes ``x <= q_0.95``, which differs on tied draws.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from blackjax.diagnostics import potential_scale_reduction
from jax.scipy.special import ndtri
from jax.scipy.stats import rankdata

TAIL_PROBS = (0.05, 0.95)
"""Quantiles whose indicator series give the tail ESS (ArviZ's default ``prob``)."""

_RESOLUTION = 1e-15  # np.finfo(float).resolution: below this spread ArviZ calls draws constant


def _draws(draws: jax.Array, min_chains: int) -> tuple[jax.Array, bool]:
    """Float draws, and whether their shape is large enough (ArviZ's ``_not_valid``)."""
    x = jnp.asarray(draws)
    if x.ndim < 2:
        raise ValueError(f"draws must be (chain, draw, *event); got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    return x, x.shape[0] >= min_chains and x.shape[1] >= 4


def _undefined(x: jax.Array) -> jax.Array:
    """``NaN`` for every element of the event shape."""
    return jnp.full(x.shape[2:], jnp.nan, x.dtype)


def _nan_if_missing(value: jax.Array, x: jax.Array) -> jax.Array:
    """``value``, with ``NaN`` wherever an element of ``x`` has a ``NaN`` draw."""
    return jnp.where(jnp.isnan(x).any(axis=(0, 1)), jnp.nan, value)


# Own implementation (blackjax's split drops the last draw of an odd number, see above).
def _split(x: jax.Array) -> jax.Array:
    """First and last halves of each chain as separate chains, as ArviZ's ``_split_chains``.

    The middle draw of an odd number of draws is dropped.
    """
    half = x.shape[1] // 2
    return jnp.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


# Own implementation (blackjax has no public rank normalisation).
def _z_scale(x: jax.Array) -> jax.Array:
    r"""Normal scores of the ranks pooled over chains and draws, as ArviZ's ``_z_scale``.

    :math:`\Phi^{-1}((r - 3/8) / (n + 1/4))`, ties sharing their average rank
    (``scipy.stats.rankdata(method="average")``).
    """
    n = x.shape[0] * x.shape[1]
    r = rankdata(x.reshape(n, *x.shape[2:]), method="average", axis=0)
    p = (r - 0.375) / (n + 0.25)
    # ndtri(0.5) is -1e-16 in float64, not 0 as in scipy; exact zeros keep R-hat of
    # constant draws at 0/0 = NaN, as in ArviZ, rather than noise about 1.
    z = jnp.where(2.0 * r == n + 1, 0.0, ndtri(p))  # the median rank
    return z.astype(x.dtype).reshape(x.shape)


def _rhat(x: jax.Array) -> jax.Array:
    """Gelman-Rubin R-hat of ``(chain, draw, *event)`` draws, with shape ``event``."""
    # potential_scale_reduction squeezes, which would also drop size-1 event axes.
    return potential_scale_reduction(x, chain_axis=0, sample_axis=1).reshape(x.shape[2:])


def _autocov(x: jax.Array) -> jax.Array:
    """Autocovariance of each chain at lags ``0 .. draw - 1`` (FFT), as ArviZ's ``autocov``."""
    n = x.shape[1]
    m = 1 << (2 * n - 1).bit_length()  # >= 2n: no circular wrap-around
    f = jnp.fft.rfft(x - x.mean(axis=1, keepdims=True), n=m, axis=1)
    return jnp.fft.irfft(f * jnp.conj(f), n=m, axis=1)[:, :n] / n


# Own implementation (blackjax's effective_sample_size truncates differently, see above).
def _ess(x: jax.Array) -> jax.Array:
    """Effective sample size of ``(chain, draw, *event)`` draws, ArviZ's ``_ess``.

    Geyer's initial positive sequence: the autocorrelations are summed in pairs
    ``P_k = rho_2k + rho_2k+1`` up to the first non-positive pair ``J`` (or the last pair
    below lag ``draw - 3``), the pairs made non-increasing (initial monotone sequence), and
    ``rho_2J`` added when positive. ArviZ's loops are written here as a cumulative minimum
    and masks, so that the whole estimate is one fixed-shape computation.
    """
    n_chain, n = x.shape[:2]
    acov = _autocov(x).mean(axis=0)  # (draw, *event)
    mean_var = acov[0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n + x.mean(axis=1).var(axis=0, ddof=1)
    rho = 1.0 - (mean_var - acov) / var_plus
    rho = rho.at[0].set(1.0)

    n_pairs = max((n - 3) // 2, 0) + 1  # ArviZ computes lags up to n - 3 at most
    pairs = rho[: 2 * n_pairs].reshape(n_pairs, 2, *rho.shape[1:])
    p = pairs.sum(axis=1)
    stop = (p <= 0.0).at[-1].set(True)
    j = jnp.argmax(stop, axis=0)  # first non-positive pair, or the last one
    k = jnp.arange(n_pairs).reshape(n_pairs, *(1,) * (p.ndim - 1))
    monotone = jnp.where(k < j, jax.lax.cummin(p, axis=0), 0.0).sum(axis=0)
    rho_j = jnp.take_along_axis(pairs[:, 0], j[None], axis=0)[0]
    p_j = jnp.take_along_axis(p, j[None], axis=0)[0]
    last = jnp.where((rho_j > 0.0) | (p_j >= 0.0), rho_j, 0.0)

    size = n_chain * n
    tau = jnp.maximum(-1.0 + 2.0 * monotone + last, 1.0 / math.log10(size))
    constant = x.max(axis=(0, 1)) - x.min(axis=(0, 1)) < _RESOLUTION
    return jnp.where(constant, float(size), size / tau)


def _scores(x: jax.Array) -> jax.Array:
    """Normal scores of the split chains and of their fold about the median, stacked last."""
    s = _split(x)
    folded = jnp.abs(s - jnp.median(s, axis=(0, 1)))
    return _z_scale(jnp.stack([s, folded], axis=-1))  # one ranking for both


def _rank_rhat(z: jax.Array) -> jax.Array:
    """The larger of the R-hats of the bulk and the folded scores of :func:`_scores`."""
    return _rhat(z).max(axis=-1)


def _tail_series(x: jax.Array) -> jax.Array:
    """Split indicators ``x <= q`` at the quantiles :data:`TAIL_PROBS`, stacked last."""
    quantiles = jnp.quantile(x.reshape(-1, *x.shape[2:]), jnp.asarray(TAIL_PROBS), axis=0)
    return _split(jnp.stack([(x <= q).astype(x.dtype) for q in quantiles], axis=-1))


def _squared_deviations(x: jax.Array) -> jax.Array:
    return (x - x.mean(axis=(0, 1))) ** 2


def _mcse_sd(c2: jax.Array, ess: jax.Array) -> jax.Array:
    """ArviZ's ``_mcse_sd`` (delta method) from the squared deviations and their ESS."""
    evar = c2.mean(axis=(0, 1))
    varvar = ((c2**2).mean(axis=(0, 1)) - evar**2) / ess
    return jnp.sqrt(varvar / evar / 4.0)


def _sd(x: jax.Array) -> jax.Array:
    return x.reshape(-1, *x.shape[2:]).std(axis=0, ddof=1)


@jax.jit
def rhat(draws: jax.Array) -> jax.Array:
    """Rank-normalised split R-hat, as ``az.rhat(method="rank")``.

    The larger of the split R-hats of the normal scores of the draws (bulk) and of the
    draws folded about their median (tails).

    Args:
        draws: ``(chain, draw, *event)``, at least 2 chains of 4 draws.

    Returns:
        R-hat of shape ``event``; about 1 for chains that mix, well above for stuck ones.
    """
    x, valid = _draws(draws, min_chains=2)
    if not valid:
        return _undefined(x)
    return _nan_if_missing(_rank_rhat(_scores(x)), x)


@jax.jit
def ess_bulk(draws: jax.Array) -> jax.Array:
    """Bulk effective sample size, as ``az.ess(method="bulk")``.

    The ESS of the normal scores of the ranks of the split chains.

    Args:
        draws: ``(chain, draw, *event)``, at least 4 draws per chain.

    Returns:
        ESS of shape ``event``.
    """
    x, valid = _draws(draws, min_chains=1)
    if not valid:
        return _undefined(x)
    return _nan_if_missing(_ess(_z_scale(_split(x))), x)


@jax.jit
def ess_tail(draws: jax.Array) -> jax.Array:
    """Tail effective sample size, as ``az.ess(method="tail", prob=0.95)``.

    The smaller ESS of the indicators ``x <= q`` of the 5% and the 95% quantile (Vehtari et
    al. 2021, and ArviZ 0.x's default; ArviZ 1.x's default tail takes the quantiles of its
    ``rcParams["stats.ci_prob"]``, 0.89, i.e. 11% and 89%).

    Args:
        draws: ``(chain, draw, *event)``, at least 4 draws per chain.

    Returns:
        ESS of shape ``event``.
    """
    x, valid = _draws(draws, min_chains=1)
    if not valid:
        return _undefined(x)
    return _nan_if_missing(_ess(_tail_series(x)).min(axis=-1), x)


@jax.jit
def mcse_mean(draws: jax.Array) -> jax.Array:
    """Monte Carlo standard error of the mean, as ``az.mcse(method="mean")``.

    The sd over the square root of the ESS of the split chains.

    Args:
        draws: ``(chain, draw, *event)``, at least 4 draws per chain.

    Returns:
        MCSE of shape ``event``.
    """
    x, valid = _draws(draws, min_chains=1)
    if not valid:
        return _undefined(x)
    return _nan_if_missing(_sd(x) / jnp.sqrt(_ess(_split(x))), x)


@jax.jit
def mcse_sd(draws: jax.Array) -> jax.Array:
    """Monte Carlo standard error of the sd, as ``az.mcse(method="sd")``.

    Args:
        draws: ``(chain, draw, *event)``, at least 4 draws per chain.

    Returns:
        MCSE of shape ``event``.
    """
    x, valid = _draws(draws, min_chains=1)
    if not valid:
        return _undefined(x)
    c2 = _squared_deviations(x)
    return _nan_if_missing(_mcse_sd(c2, _ess(_split(c2))), x)


@jax.jit
def summary_stats(draws: jax.Array) -> dict[str, jax.Array]:
    """All of the above and the mean and sd, in one compiled call.

    The five ESS share one autocovariance transform and the two R-hats one ranking.

    Args:
        draws: ``(chain, draw, *event)``.

    Returns:
        ``{"mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"}``, each of
        shape ``event``: the columns of :func:`diagnose`'s table (``az.summary`` without the
        intervals; ``sd`` with ``ddof=1``).
    """
    x, valid = _draws(draws, min_chains=1)
    out = {"mean": x.mean(axis=(0, 1)), "sd": _sd(x)}
    if not valid:
        return out | {
            k: _undefined(x) for k in ("mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")
        }
    z = _scores(x)
    c2 = _squared_deviations(x)
    series = [z[..., :1], _tail_series(x), _split(x)[..., None], _split(c2)[..., None]]
    ess = _ess(jnp.concatenate(series, axis=-1))
    stats = {
        "mcse_mean": out["sd"] / jnp.sqrt(ess[..., 3]),
        "mcse_sd": _mcse_sd(c2, ess[..., 4]),
        "ess_bulk": ess[..., 0],
        "ess_tail": ess[..., 1:3].min(axis=-1),
        "r_hat": _rank_rhat(z) if x.shape[0] >= 2 else _undefined(x),
    }
    return out | {k: _nan_if_missing(v, x) for k, v in stats.items()}
