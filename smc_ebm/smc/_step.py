r"""Algorithm 1 of Carbone et al. (2023): one SMC step over a moving target, and annealing.

:func:`step` is the whole algorithm for one change of the target :math:`U_k \to U_{k+1}`:

1. move every walker with a kernel of the OLD target :math:`U_k`;
2. evaluate the NEW target at the new positions, once: energy, x-gradient, and the weighted
   parameter gradient that the model term of the training gradient needs;
3. add the incremental log-weight (Jarzynski for ULA, AIS for invariant kernels);
4. read off the ESS and the model term with the new weights;
5. resample when the schedule says so (log Z stays continuous through the anchor).

:func:`anneal` is a ``lax.scan`` of :func:`step` along :math:`U_t = (1 - t) U_0 + t U`; it
starts runs (``sample``, annealed starts, refreshed walkers, class masses).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from smc_ebm._naming import renamed
from smc_ebm.kernels._base import Kernel, KernelState
from smc_ebm.kernels._evaluate import evaluate
from smc_ebm.kernels._langevin import make_kernel
from smc_ebm.smc._increments import default_increment
from smc_ebm.smc._resampling import (
    ESSResampling,
    ess_fraction,
    log_mean_exp,
    maybe_resample_indices,
    normalized_weights,
    split_walkers,
    walkers_split,
)


class Population(NamedTuple):
    """A weighted population of walkers: the state of an SMC over a moving target.

    Attributes:
        position: ``(N, d)`` positions ``X``.
        energy: ``(N,)`` ``U_k(X)`` under the current target.
        grad: ``(N, d)`` ``grad_x U_k(X)``.
        log_weights: ``(N,)`` log-weights ``A`` since the last resampling.
        log_Z_anchor: ``()`` log Z at the last resampling (or log Z_0), so that
            ``log Z_k = anchor + log mean e^A``.
    """

    position: Float[Array, "N d"]
    energy: Float[Array, " N"]
    grad: Float[Array, "N d"]
    log_weights: Float[Array, " N"]
    log_Z_anchor: Float[Array, ""]

    @property
    def walkers(self) -> KernelState:
        """The positions with their cached energies and gradients."""
        return KernelState(self.position, self.energy, self.grad)

    def log_Z(self) -> Float[Array, ""]:
        """The running estimate of log Z of the current target."""
        return self.log_Z_anchor + log_mean_exp(self.log_weights)


class SMCInfo(NamedTuple):
    """What one :func:`step` reports.

    Attributes:
        ess: normalised ESS of the weights after the increment, before resampling.
        resampled: whether the population was resampled.
        acceptance: mean acceptance probability of the moves (1 for ULA).
        weights: ``(N,)`` normalised weights after the increment, before resampling.
        ancestors: ``(N,)`` ancestor of each walker (the identity when not resampled).
        model_grad: ``sum_i weights_i dU_{k+1}(X_i)/dtheta``, the model term of the gradient.
        model_energy: ``sum_i weights_i U_{k+1}(X_i)``.
    """

    ess: Float[Array, ""]
    resampled: Array
    acceptance: Float[Array, ""]
    weights: Float[Array, " N"]
    ancestors: Int[Array, " N"]
    model_grad: Any
    model_energy: Float[Array, ""]


def step(
    key: PRNGKeyArray,
    population: Population,
    energy_old: Any,
    energy_new: Any,
    kernel: Kernel,
    increment: Any,
    resampling: Any,
    index: Array,
) -> tuple[Population, SMCInfo]:
    """Follow the target from ``energy_old`` to ``energy_new`` (Algorithm 1, one step).

    Args:
        key: PRNG key.
        population: walkers cached under ``energy_old``.
        energy_old: :math:`U_k`.
        energy_new: :math:`U_{k+1}`.
        kernel: the move (:class:`~smc_ebm.kernels.Kernel`), taken with ``energy_old``.
        increment: ``increment(kernel, old, new, move) -> (N,)``; ``None`` for
            :func:`default_increment` (Jarzynski for ULA, AIS for invariant kernels).
        resampling: a schedule with ``should_resample(index, ess)`` and ``method``.
        index: the step's index handed to the schedule.

    Returns:
        ``(population, info)``: the walkers cached under ``energy_new``, and :class:`SMCInfo`.
    """
    k_move, k_resample = jax.random.split(key)
    increment = default_increment(kernel) if increment is None else increment
    old = population.walkers
    # 1. move with the old target
    x, move = kernel.move(k_move, old, energy_old)
    # 2. one evaluation of the new target: U, grad_x U, and theta -> sum_i w_i dU(x_i)/dtheta
    u, g, param_grad = evaluate(energy_new, x)
    new = KernelState(x, u, g)
    # 3. incremental weights
    a = split_walkers(population.log_weights + increment(kernel, old, new, move))
    # 4. ESS and the model term, with the weights of the new target
    w = normalized_weights(a)
    ess = ess_fraction(a)
    # 5. resample when the schedule says so
    do = resampling.should_resample(index, ess)
    moved = Population(x, u, g, a, population.log_Z_anchor)
    moved, idx = resample(do, k_resample, moved, resampling.method)
    info = SMCInfo(ess, do, jnp.mean(move.acceptance), w, idx, param_grad(w), jnp.sum(w * u))
    return moved, info


def resample(
    do: Array, key: PRNGKeyArray, population: Population, method: str = "systematic"
) -> tuple[Population, Int[Array, " N"]]:
    """The population resampled when ``do`` (zero log-weights, anchor moved), and the ancestors.

    The ancestors are the identity when ``do`` is false. On one device the walkers are
    gathered with them at every step (see :func:`~smc_ebm.smc.maybe_resample_indices` for
    why). With the walkers split over devices they are gathered only when ``do``
    (:func:`take_ancestors`; ``benchmarks/scaling.py`` measures the split run against one
    device).
    """
    idx, a, anchor = maybe_resample_indices(
        do, key, population.log_weights, population.log_Z_anchor, method
    )
    x, u, g = population.position, population.energy, population.grad
    if walkers_split():
        x, u, g = take_ancestors(do, idx, x, u, g)
        return Population(x, u, g, a, anchor), idx
    x, g = gather_rows(idx, x, g)
    return Population(x, u[idx], g, a, anchor), idx


def take_ancestors(do: Array, idx: Array, *arrays: Array) -> tuple[Array, ...]:
    """``a[idx]`` for each of ``arrays`` (walker arrays), ``idx`` the ancestors of a step.

    ``idx`` is the identity when ``do`` is false. On one device every array is gathered at
    every step (see :func:`~smc_ebm.smc.maybe_resample_indices`); with the walkers split over
    devices (:func:`~smc_ebm.smc.walkers_split`) only when ``do``: a gather with traced indices
    brings the whole array to every device.
    """
    if walkers_split():
        return jax.lax.cond(do, lambda: tuple(a[idx] for a in arrays), lambda: arrays)
    return tuple(a[idx] for a in arrays)


def gather_rows(idx: Array, x: Array, g: Array) -> tuple[Array, Array]:
    """``(x[idx], g[idx])`` for positions and gradients of one shape ``(n, ...)``, as one gather.

    XLA's CPU gather works element by element; on rows twice as long (``[x | g]``, ``(n, 2d)``)
    it costs less than two gathers of ``(n, d)`` rows: about 4% of a Jarzynski step on the
    50-d, :math:`10^4`-walker benchmark, where the gather runs at every step (``idx`` is the
    identity when nothing is resampled). The concatenation is fused into the gather.
    """
    if x.shape != g.shape or x.dtype != g.dtype:
        return x[idx], g[idx]
    n = x.shape[0]
    xg = jnp.concatenate([x.reshape(n, -1), g.reshape(n, -1)], axis=1)[idx]
    m = xg.shape[1] // 2
    return xg[:, :m].reshape(x.shape), xg[:, m:].reshape(g.shape)


class Interpolated(eqx.Module):
    """``U_t = (1 - t) U_base + t U``: the annealing path from a base to the model."""

    base: Any
    energy: Any
    t: Array

    def __call__(self, x):
        return (1.0 - self.t) * self.base(x) + self.t * self.energy(x)


@renamed()
def anneal(
    key: PRNGKeyArray,
    base: Any,
    energy: Any,
    x: Array,
    *,
    num_steps: int,
    step_size: float,
    kernel: str | Kernel = "ula",
    resampling: Any = None,
) -> tuple[Array, Array, Array, Array, Array]:
    r"""Anneal walkers from ``base`` to ``energy``: a scan of :func:`step`.

    The path is :math:`U_t = (1 - t) U_\mathrm{base} + t U`, ``t`` on ``num_steps`` equal
    steps from 0 to 1. Each step moves the walkers with the kernel of :math:`U_{t_j}` and
    adds the Jarzynski (ULA) or AIS (MALA) increment, exactly as during training, so
    :math:`\mathbb E[f(X) e^{A}] / \mathbb E[e^A] = \mathbb E_{\rho}[f]` and
    :math:`\mathbb E[e^A] = Z / Z_\mathrm{base}` for any step size. Pure and jittable
    (``base`` and ``energy`` may be traced modules), so it can be vmapped over keys.

    Args:
        key: PRNG key.
        base: the starting energy; ``x`` must be distributed as its density.
        energy: the target energy.
        x: ``(n, d)`` walkers drawn from the base.
        num_steps: number of annealing steps (``>= 1``).
        step_size: Langevin step ``h``.
        kernel: ``"ula"``, ``"mala"`` or a :class:`~smc_ebm.kernels.Kernel`.
        resampling: schedule called with the annealing step index and the ESS (default
            :class:`ESSResampling` at 0.5, systematic).

    Returns:
        ``(x, log_weights, log_ratio, num_resamplings, acceptance)``: final positions
        ``(n, d)``, log-weights ``(n,)`` since the last resampling, the estimate of
        :math:`\log Z - \log Z_\mathrm{base}`, the number of resamplings and the mean
        acceptance of the moves (1 for ULA).
    """
    resampling = ESSResampling(0.5, "systematic") if resampling is None else resampling
    kernel = make_kernel(kernel, step_size)
    population = anneal_init(base, energy, x)
    ts = jnp.linspace(0.0, 1.0, num_steps + 1, dtype=x.dtype)

    def body(population, inp):
        k, j, t0, t1 = inp
        return anneal_move(k, population, j, t0, t1, base, energy, kernel, resampling)

    keys = jax.random.split(key, num_steps)
    steps = jnp.arange(num_steps)
    population, (dos, accs) = jax.lax.scan(body, population, (keys, steps, ts[:-1], ts[1:]))
    return anneal_result(population, dos, accs)


# The pieces of :func:`anneal`, for a caller that scans over the steps of several vmapped runs
# (``smc_ebm.sample``: one host poll per step of all its runs, outside their vmap).


def anneal_init(base: Any, energy: Any, x: Array) -> Population:
    """The walkers ``x`` (drawn from ``base``) as the population that :func:`anneal` starts."""
    u, g, _ = evaluate(Interpolated(base, energy, jnp.asarray(0.0, x.dtype)), x)
    zero = jnp.zeros((), x.dtype)
    return Population(x, u, g, jnp.zeros(x.shape[0], x.dtype), zero)


def anneal_move(
    key: PRNGKeyArray,
    population: Population,
    index: Array,
    t0: Array,
    t1: Array,
    base: Any,
    energy: Any,
    kernel: Kernel,
    resampling: Any,
) -> tuple[Population, tuple[Array, Array]]:
    """Step ``index`` of :func:`anneal`, from ``U_{t0}`` to ``U_{t1}``.

    Returns ``(population, (resampled, acceptance))``.
    """
    dt = population.position.dtype
    old = Interpolated(base, energy, jnp.asarray(t0, dt))
    new = Interpolated(base, energy, jnp.asarray(t1, dt))
    population, info = step(key, population, old, new, kernel, None, resampling, index)
    return population, (info.resampled, info.acceptance)


def anneal_result(
    population: Population, resampled: Array, acceptance: Array
) -> tuple[Array, Array, Array, Array, Array]:
    """What :func:`anneal` returns, from the final population and the steps' records."""
    return (
        population.position,
        population.log_weights,
        population.log_Z(),
        jnp.sum(resampled),
        jnp.mean(acceptance),
    )
