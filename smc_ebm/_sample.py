r"""``sample``: generation from an energy by weighted annealing from a tractable base.

The walkers start from a base density :math:`\rho_0 \propto e^{-U_0}` with a known
:math:`Z_0` and follow :math:`U_t = (1 - t) U_0 + t U`, ``t`` from 0 to 1, with the moves and
weight increments of the training engine (:func:`smc_ebm.strategies._walkers.anneal`: ULA with
Jarzynski increments, or MALA with AIS increments), resampling when the schedule says so.
Independent runs give an unbiased estimate of :math:`Z` each; their spread gives the standard
error of :math:`\log Z`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from smc_ebm._live import live_call, poll_at
from smc_ebm._naming import OldAttributes, renamed
from smc_ebm._sharding import fetch, on_mesh, place_populations
from smc_ebm.energies import as_base
from smc_ebm.energies._base import has_log_partition
from smc_ebm.energies._gaussian import Gaussian
from smc_ebm.kernels import KERNELS, make_kernel
from smc_ebm.smc._resampling import (
    ESSResampling,
    IntervalResampling,
    NoResampling,
    ess_fraction,
    log_mean_exp,
    resample_indices,
)
from smc_ebm.smc._step import anneal_init, anneal_move, anneal_result


@dataclasses.dataclass(frozen=True)
class SampleResult(OldAttributes):
    r"""What :func:`sample` returns (numpy arrays on the host).

    Attributes:
        samples: ``(num_walkers, d)`` weighted samples (the annealed walkers of all runs).
        log_weights: ``(num_walkers,)`` log-weights: ``softmax(log_weights)`` are the importance
            weights of ``samples`` for the energy's density.
        resampled: ``(num_walkers, d)`` equal-weight samples, drawn from ``samples`` by systematic
            resampling with those weights.
        log_Z: estimate of :math:`\log Z`, the log of the mean of the runs' unbiased
            estimates of :math:`Z`.
        log_Z_se: its standard error (delta method on the runs' spread; from the weights
            when ``num_runs == 1``).
        log_Z_runs: ``(num_runs,)`` each run's estimate.
        ess: normalised effective sample size of ``log_weights`` in ``(0, 1]``.
        num_resamplings: ``(num_runs,)`` resamplings done by each run during the annealing.
        acceptance: mean acceptance of the moves (1 for ULA).
    """

    samples: np.ndarray
    log_weights: np.ndarray
    resampled: np.ndarray
    log_Z: float
    log_Z_se: float
    log_Z_runs: np.ndarray
    ess: float
    num_resamplings: np.ndarray
    acceptance: float

    @property
    def weights(self) -> np.ndarray:
        """Normalised importance weights, shape ``(n,)``."""
        a = self.log_weights - np.max(self.log_weights)
        w = np.exp(a)
        return w / np.sum(w)

    def to_arviz(self, **kwargs: Any) -> Any:
        """ArviZ ``InferenceData`` (``DataTree`` on ArviZ 1.x), one chain per independent run.

        ``posterior`` holds each run's walkers resampled by their weights and randomly
        permuted; ``sample_stats`` the log-weights and, per chain, ``log_marginal_likelihood``
        (``log_Z_runs``), ``ess``, ``ess_abs`` and ``num_resamplings``; ``walkers`` the weighted
        samples. See :func:`smc_ebm.diagnostics.to_arviz` for the groups and the keyword
        arguments.
        """
        from smc_ebm.diagnostics import to_arviz

        return to_arviz(self, **kwargs)


def _check_base(base: Any) -> None:
    if not getattr(base, "can_sample", False):
        raise ValueError(f"init (the base) must be able to sample itself; {type(base).__name__}")
    if not has_log_partition(base):
        raise ValueError(f"init (the base) must know its log partition; {type(base).__name__}")


@eqx.filter_jit
def _run(keys, energy, base, x0, num_steps, step_size, kernel, resampling, every):
    """:func:`~smc_ebm.smc.anneal` of each run (keys ``(R,)``, starts ``(R, m, d)``).

    A ``lax.scan`` over the steps of the ``vmap`` of the runs' steps: the numbers of
    ``vmap(anneal)``, with the host's poll (:func:`smc_ebm._live.poll_at`, every ``every``
    steps; ``None``: none compiled in) outside the vmap, once per step of all runs.
    """
    kern = make_kernel(kernel, step_size)
    population = jax.vmap(lambda x: anneal_init(base, energy, x))(x0)
    ts = jnp.linspace(0.0, 1.0, num_steps + 1, dtype=x0.dtype)
    step_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num_steps))(keys), 0, 1)

    def body(population, inp):
        k, j, t0, t1 = inp
        poll_at(j, every)

        def move(k, p):
            return anneal_move(k, p, j, t0, t1, base, energy, kern, resampling)

        return jax.vmap(move)(k, population)

    xs = (step_keys, jnp.arange(num_steps), ts[:-1], ts[1:])
    population, (dos, accs) = jax.lax.scan(body, population, xs)
    return jax.vmap(anneal_result, in_axes=(0, 1, 1))(population, dos, accs)


@renamed(extra={"n": "num_walkers"}, positional=("key", "num_walkers"))
def sample(
    energy: Any,
    *,
    key: PRNGKeyArray,
    num_walkers: int,
    init: Any = None,
    num_steps: int = 200,
    step_size: float = 0.1,
    kernel: str = "ula",
    resampling: ESSResampling | IntervalResampling | NoResampling | None = None,
    num_runs: int = 4,
    devices: Any = None,
    progress: bool = True,
) -> SampleResult:
    r"""Draw weighted samples of :math:`\rho \propto e^{-U}` and estimate :math:`\log Z`.

    ``num_walkers`` walkers are split into ``num_runs`` independent populations of
    ``num_walkers / num_runs``. Each
    starts from the base, anneals along :math:`U_t = (1 - t) U_0 + t U` in ``num_steps`` steps
    with the engine's weighted moves (Jarzynski increments for ULA, so the result is exact
    for any step size; AIS increments for MALA), and resamples by its own schedule. Run
    ``r`` ends with log-weights :math:`A_r` and
    :math:`\hat Z_r = Z_0\,\overline{e^{A_r}}` (re-anchored at each resampling), an
    unbiased estimate of :math:`Z`. The runs are pooled with weights
    :math:`\hat Z_r\,\mathrm{softmax}(A_r)_i`, and
    :math:`\hat Z = \frac1R \sum_r \hat Z_r`, with the delta-method standard error
    :math:`\mathrm{se}(\log\hat Z) = \mathrm{sd}_r(\hat Z_r) / (\sqrt R\, \hat Z)`.
    Everything runs in one compiled call (a ``vmap`` over runs of a ``lax.scan`` over
    steps).

    Args:
        energy: the energy :math:`U` (an equinox module, one sample ``(d,) -> ()``).
        key: PRNG key.
        num_walkers: total number of walkers, hence of samples (a multiple of ``num_runs``).
        init: the base: an energy with ``sample`` and ``log_partition`` (default the
            standard normal :class:`~smc_ebm.energies.Gaussian` of ``energy.dim``). It
            should cover the target: a base narrower than the target gives a high-variance
            estimate.
        num_steps: annealing steps.
        step_size: Langevin step ``h``.
        kernel: ``"ula"`` or ``"mala"``.
        resampling: resampling schedule, called with the annealing step (default
            :class:`~smc_ebm.ESSResampling` at 0.5, systematic).
        num_runs: independent runs (``>= 2`` for an error bar from their spread; with 1 the
            error bar comes from the final weights and ignores the resamplings).
        devices: split the work over these devices (e.g. ``jax.devices()``): whole runs per
            device when ``num_runs`` is a multiple of their number, else each run's walkers.
            Default: one device.
        progress: show a live progress bar (tqdm), moved from inside the compiled call
            about every 0.5 s, then log Z and (MALA) the acceptance. Ctrl-C ends
            the call at its next poll with ``KeyboardInterrupt``.

    Returns:
        A :class:`SampleResult`.

    Raises:
        FloatingPointError: a walker's position or log-weight is not finite at the end (a
            step size that diverges); nothing non-finite is returned silently.

    Example:
        >>> import jax, smc_ebm as se
        >>> gmm = se.energies.GaussianMixture.init(jax.random.key(0), 2, 2, scale=2.0)
        >>> out = se.sample(gmm, key=jax.random.key(1), num_walkers=1000, num_steps=100)
        >>> out.resampled.shape, abs(out.log_Z - float(gmm.log_partition())) < 5 * out.log_Z_se
        ((1000, 2), True)
    """
    n = num_walkers
    if int(num_runs) < 1:
        raise ValueError(f"num_runs must be >= 1; got {num_runs}.")
    if int(n) < 2 * int(num_runs) or int(n) % int(num_runs):
        raise ValueError(
            f"num_walkers must be a multiple of num_runs with at least 2 walkers per run; "
            f"got num_walkers={n}, num_runs={num_runs}."
        )
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}.")
    if not float(step_size) > 0 or not math.isfinite(float(step_size)):
        raise ValueError(f"step_size must be a positive finite number; got {step_size}.")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {tuple(KERNELS)}; got {kernel!r}.")
    if init is None:
        dim = getattr(energy, "dim", None)
        if dim is None:
            raise ValueError("the energy has no `dim`; pass a base as init=.")
        init = Gaussian.standard(int(dim))
    init = as_base(init)  # NumPyro and flowjax distributions
    _check_base(init)
    dim = int(init.dim)
    if getattr(energy, "dim", dim) != dim:
        raise ValueError(f"base dimension {dim} does not match the energy's {energy.dim}.")
    resampling = ESSResampling(0.5, "systematic") if resampling is None else resampling

    n, num_runs = int(n), int(num_runs)
    m = n // num_runs
    k_init, k_run, k_res = jax.random.split(key, 3)
    x0 = init.sample(k_init, n).reshape(num_runs, m, dim)
    keys = jax.random.split(k_run, num_runs)
    mesh = None
    if devices is not None:
        x0, keys, mesh = place_populations(x0, keys, devices)
    timing = ("sample", type(energy).__name__, x0.shape, str(x0.dtype), kernel, int(num_steps))
    with live_call(timing, int(num_steps), "sample", progress) as live, on_mesh(mesh):
        out = _run(
            keys, energy, init, x0, int(num_steps), float(step_size), kernel, resampling, live.every
        )
        x, a, log_ratio, n_res, acc = fetch(live.done(out))
        pooled = float(log_mean_exp(log_ratio) + init.log_partition())  # log Z, for the bar
        shown = {} if kernel == "ula" else {"acceptance": float(jnp.mean(acc))}
        live.show(log_Z=pooled, **shown)
    finite = jnp.all(jnp.isfinite(x), axis=-1) & jnp.isfinite(a)
    if not bool(jnp.all(finite)) or not bool(jnp.all(jnp.isfinite(log_ratio))):
        bad = int(jnp.sum(~finite))
        raise FloatingPointError(
            f"sample: {bad} of {n} walkers ended with a non-finite position or log-weight "
            f"(step_size={step_size}, kernel={kernel!r}); a step size too large for the "
            f"energy's curvature is the usual cause: try a smaller one or more num_steps."
        )
    log_z_runs = log_ratio + init.log_partition()
    # Pooled log-weights: log Z_r + log softmax(A_r)_i, so that softmax over all walkers
    # gives Z_r p_ri / sum_r Z_r.
    log_w = (log_z_runs[:, None] + jax.nn.log_softmax(a, axis=-1)).reshape(n)
    idx = resample_indices(k_res, log_w, "systematic")
    samples = x.reshape(n, dim)

    log_z_runs = np.asarray(log_z_runs, np.float64)
    top = np.max(log_z_runs)
    z = np.exp(log_z_runs - top)
    log_z = float(top + np.log(np.mean(z)))
    if num_runs >= 2:
        se = float(np.std(z, ddof=1) / (math.sqrt(num_runs) * np.mean(z)))
    else:
        p = np.asarray(jax.nn.softmax(a[0]), np.float64)
        se = float(math.sqrt(max(np.sum(p**2) - 1.0 / m, 0.0)))
    return SampleResult(
        samples=np.asarray(samples),
        log_weights=np.asarray(log_w),
        resampled=np.asarray(samples[idx]),
        log_Z=log_z,
        log_Z_se=se,
        log_Z_runs=log_z_runs,
        ess=float(ess_fraction(log_w)),
        num_resamplings=np.asarray(n_res),
        acceptance=float(jnp.mean(acc)),
    )
