r"""``posterior``: tempered SMC from a NumPyro model's prior to its posterior, with the evidence.

The particles live in the model's unconstrained space (:func:`smc_ebm.energies.from_numpyro`).
With :math:`U_0` the prior's energy (Jacobian included) and :math:`\ell` the log-likelihood
(observed sites and ``numpyro.factor`` terms), stage :math:`j` targets
:math:`\pi_{\beta_j} \propto e^{-U_0 + \beta_j \ell}`, :math:`\beta_0 = 0 < \dots < \beta_J = 1`.
Each stage picks :math:`\beta_{j+1}` so that the ESS of the incremental weights
:math:`e^{(\beta_{j+1}-\beta_j)\ell}` is ``target_ess`` (blackjax's ESS solver by dichotomy),
adds :math:`\log \overline{e^{(\beta_{j+1}-\beta_j)\ell}}` to :math:`\log \hat Z`, resamples
(systematic) and moves the particles with MALA or HMC (blackjax) at :math:`\beta_{j+1}`. The
moves are preconditioned by the particles' own diagonal scale, and their step size is tuned
between stages towards a target acceptance. Independent runs give the standard error.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.ess import ess_solver
from blackjax.smc.solver import dichotomy
from jaxtyping import PRNGKeyArray
from numpyro.infer import Predictive

from smc_ebm._live import live_call, poll_at
from smc_ebm._naming import OldAttributes, renamed
from smc_ebm.diagnostics import make_tree, sites_dataset
from smc_ebm.energies import from_numpyro
from smc_ebm.smc import resample_indices

#: Target acceptance of the step-size tuning, per kernel.
TARGET_ACCEPTANCE = {"mala": 0.574, "hmc": 0.75}


@dataclasses.dataclass(frozen=True)
class PosteriorResult(OldAttributes):
    r"""What :func:`posterior` returns (numpy arrays on the host).

    Attributes:
        samples: site -> ``(num_runs, num_walkers, *site_shape)`` equal-weight posterior draws,
            constrained (the model's own sites, deterministic sites included).
        z: ``(num_runs, num_walkers, d)`` the same draws in unconstrained space.
        log_evidence: :math:`\log \hat p(y)`, the log of the mean of the runs' estimates.
        log_evidence_se: its standard error (delta method on the runs' spread).
        log_evidence_runs: ``(num_runs,)`` each run's estimate.
        num_stages: ``(num_runs,)`` tempering stages of each run.
        temperatures: ``(num_runs, max_stages + 1)`` the schedules, padded with 1.
        acceptance: ``(num_runs,)`` mean acceptance of the moves.
        step_size: ``(num_runs,)`` final tuned step size (in whitened coordinates).
        num_evaluations: log-density (and gradient) evaluations per particle, mean over runs.
        wall_time: seconds (compilation included).
    """

    samples: dict[str, np.ndarray]
    z: np.ndarray
    log_evidence: float
    log_evidence_se: float
    log_evidence_runs: np.ndarray
    num_stages: np.ndarray
    temperatures: np.ndarray
    acceptance: np.ndarray
    step_size: np.ndarray
    num_evaluations: float
    wall_time: float

    def to_arviz(self) -> Any:
        """ArviZ ``InferenceData`` (``DataTree`` on ArviZ 1.x): runs as chains, sites by name.

        The draws of one run are not a Markov chain but they are exchangeable after the
        final resampling and moves, so ``az.summary`` gives the posterior mean, sd and an
        R-hat across runs.
        """
        return make_tree(
            {"posterior": sites_dataset(self.samples)},
            {
                "inference_library": "smc_ebm",
                "log_evidence": self.log_evidence,
                "log_evidence_se": self.log_evidence_se,
            },
        )


def _mcmc(kernel: str, num_integration_steps: int):
    """``(init, step)`` of blackjax's MALA or HMC (identity mass) for one particle."""
    if kernel == "mala":
        mala = blackjax.mala.build_kernel()
        return blackjax.mala.init, lambda key, state, logdensity, h: mala(key, state, logdensity, h)
    hmc = blackjax.hmc.build_kernel()

    def step(key, state, logdensity, h):
        inverse_mass = jnp.ones_like(state.position)
        return hmc(key, state, logdensity, h, inverse_mass, num_integration_steps)

    return blackjax.hmc.init, step


def _split(energy):
    """Prior energy and log-likelihood of one unconstrained vector."""

    def prior_and_loglik(z):
        u0 = energy.prior_energy(z)
        return u0, u0 - energy(z)

    return prior_and_loglik


@eqx.filter_jit
def _run(
    keys, energy, z0, target_ess, kernel, n_mcmc, num_integration_steps, h0, max_stages, every
):
    """The runs' tempering, a ``while_loop`` over the stages of the ``vmap`` of the runs.

    That is what ``vmap`` makes of a ``while_loop`` of one run: each run's stage is computed
    while any run goes on and kept where that run goes on (the same numbers). The host's poll
    (every ``every`` stages; ``None``: none compiled in) is outside the vmap: one per stage
    of all runs, with the least temperature of the runs still going.
    """
    prior_and_loglik = _split(energy)
    init, step = _mcmc(kernel, num_integration_steps)
    target_acc = TARGET_ACCEPTANCE[kernel]

    def start(key, z):
        u0, ll = jax.vmap(prior_and_loglik)(z)
        temps = jnp.ones(max_stages + 1, z.dtype).at[0].set(0.0)
        zero = jnp.zeros((), z.dtype)
        return (z, u0, ll, zero, zero, 0, jnp.asarray(h0, z.dtype), zero, temps, key)

    def cond(c):
        return (c[3] < 1.0) & (c[5] < max_stages)

    def body(c):  # one stage of one run
        n = c[0].shape[0]
        z, u0, ll, beta, log_z, j, h, acc_sum, temps, key = c
        key, k_res, k_mv = jax.random.split(key, 3)
        ll_safe = jnp.where(jnp.isfinite(ll), ll, -jnp.inf)
        delta = ess_solver(lambda v: v, ll_safe, target_ess, 1.0 - beta, dichotomy)
        delta = jnp.where(jnp.isnan(delta), 1.0 - beta, delta)
        delta = jnp.where(j == max_stages - 1, 1.0 - beta, delta)  # finish in time
        beta = jnp.minimum(beta + delta, 1.0)
        logw = delta * ll_safe
        log_z = log_z + jax.nn.logsumexp(logw) - math.log(n)
        idx = resample_indices(k_res, logw, "systematic")
        z = z[idx]
        scale = jnp.maximum(jnp.std(z, axis=0), 1e-6)

        def logdensity(w):  # in whitened coordinates z = scale * w: preconditioned
            a, b = prior_and_loglik(w * scale)
            return -a + beta * b

        def mcmc_step(states, k):
            states, info = jax.vmap(step, in_axes=(0, 0, None, None))(
                jax.random.split(k, n), states, logdensity, h
            )
            return states, jnp.mean(info.acceptance_rate)

        states = jax.vmap(init, in_axes=(0, None))(z / scale, logdensity)
        states, accs = jax.lax.scan(mcmc_step, states, jax.random.split(k_mv, n_mcmc))
        z = states.position * scale
        acc = jnp.mean(accs)
        h = h * jnp.exp(jnp.clip(acc - target_acc, -0.5, 0.5))  # tune for the next stage
        u0, ll = jax.vmap(prior_and_loglik)(z)
        temps = temps.at[j + 1].set(beta)
        return z, u0, ll, beta, log_z, j + 1, h, acc_sum + acc, temps, key

    def stages(sc):
        stage, c = sc
        going = jax.vmap(cond)(c)
        poll_at(stage, every, values=(jnp.min(jnp.where(going, c[3], 1.0)),))
        new = jax.vmap(body)(c)

        def keep(a, b):
            return jax.lax.select(
                jnp.broadcast_to(going.reshape((-1,) + (1,) * (a.ndim - 1)), a.shape), a, b
            )

        return stage + 1, jax.tree.map(keep, new, c)

    carry = jax.vmap(start)(keys, z0)
    _, carry = jax.lax.while_loop(lambda sc: jnp.any(jax.vmap(cond)(sc[1])), stages, (0, carry))
    z, u0, ll, beta, log_z, j, h, acc_sum, temps, _ = carry
    return z, log_z, j, temps, acc_sum / jnp.maximum(j, 1), h


def _percent(stage: int, beta: float) -> int:
    """The bar's position at a poll: the least temperature of the runs still going, in %."""
    return int(100 * beta)


@renamed()
def posterior(
    model: Any,
    *args: Any,
    key: PRNGKeyArray,
    num_walkers: int = 1000,
    num_runs: int = 4,
    target_ess: float = 0.5,
    kernel: str = "mala",
    num_mcmc_steps: int = 10,
    num_integration_steps: int = 8,
    step_size: float | None = None,
    max_stages: int = 200,
    model_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> PosteriorResult:
    r"""Posterior draws and log evidence of a NumPyro model by adaptive tempered SMC.

    Args:
        model: a NumPyro model with a proper (normalised) prior; ``numpyro.param`` sites are
            held at their initial values.
        *args: the model's arguments (observations, covariates).
        key: PRNG key.
        num_walkers: walkers (particles) per run.
        num_runs: independent runs (``>= 2`` for a standard error).
        target_ess: normalised ESS of each stage's incremental weights, in ``(0, 1)``.
        kernel: ``"mala"`` or ``"hmc"`` (blackjax), preconditioned by the particles' scale.
        num_mcmc_steps: moves per stage.
        num_integration_steps: leapfrog steps of each HMC move.
        step_size: initial step size in whitened coordinates (default
            :math:`0.5 d^{-1/3}` for MALA, :math:`0.5 d^{-1/4}` for HMC); tuned between
            stages towards acceptance 0.574 (MALA) or 0.75 (HMC).
        max_stages: the last stage allowed jumps to :math:`\beta = 1`.
        model_kwargs: the model's keyword arguments.
        progress: show a live progress bar (tqdm) of the temperature :math:`\beta` (in
            percent, of the run furthest behind), moved from inside the compiled call about
            every 0.5 s, then the mean acceptance. Ctrl-C ends the call at its next poll
            with ``KeyboardInterrupt``.

    Returns:
        A :class:`PosteriorResult`; ``result.to_arviz()`` for ``az.summary``.
    """
    start = time.perf_counter()
    if kernel not in TARGET_ACCEPTANCE:
        raise ValueError(f"kernel must be one of {tuple(TARGET_ACCEPTANCE)}; got {kernel!r}.")
    if not 0.0 < float(target_ess) < 1.0:
        raise ValueError(f"target_ess must be in (0, 1); got {target_ess}.")
    if int(num_runs) < 1 or int(num_walkers) < 2 or int(max_stages) < 1:
        raise ValueError("need num_runs >= 1, num_walkers >= 2 and max_stages >= 1.")
    model_kwargs = dict(model_kwargs or {})
    energy = from_numpyro(model, *args, trainable=False, **model_kwargs)
    d, n, r = energy.dim, int(num_walkers), int(num_runs)
    if step_size is None:
        step_size = 0.5 * d ** (-1 / 3 if kernel == "mala" else -1 / 4)
    k_prior, k_run = jax.random.split(key)
    draws = Predictive(energy.model(), num_samples=n * r, return_sites=list(energy.site_names))(
        k_prior, *args, **model_kwargs
    )
    z0 = energy.unconstrain(draws).reshape(r, n, d)
    timing = ("posterior", str(getattr(model, "__name__", "")), z0.shape, str(z0.dtype), kernel)
    timing = (*timing, int(num_mcmc_steps), int(num_integration_steps))
    with live_call(timing, 100, "posterior", progress, _percent, "%") as live:
        out = _run(
            jax.random.split(k_run, r),
            energy,
            z0,
            float(target_ess),
            kernel,
            int(num_mcmc_steps),
            int(num_integration_steps),
            float(step_size),
            int(max_stages),
            live.every,
        )
        z, log_z, stages, temps, acc, h = live.done(out, steps=int(np.max(out[2])))
        live.show(acceptance=float(np.mean(acc)))
    samples = jax.tree.map(np.asarray, energy.constrain(z.reshape(r * n, d)))
    samples = {k: v.reshape((r, n) + v.shape[1:]) for k, v in samples.items()}
    log_z = np.asarray(log_z, np.float64)
    top = np.max(log_z)
    w = np.exp(log_z - top)
    se = float(np.std(w, ddof=1) / (math.sqrt(r) * np.mean(w))) if r >= 2 else float("nan")
    per_move = 1 if kernel == "mala" else int(num_integration_steps)
    stages = np.asarray(stages)
    return PosteriorResult(
        samples=samples,
        z=np.asarray(z),
        log_evidence=float(top + np.log(np.mean(w))),
        log_evidence_se=se,
        log_evidence_runs=log_z,
        num_stages=stages,
        temperatures=np.asarray(temps),
        acceptance=np.asarray(acc),
        step_size=np.asarray(h),
        num_evaluations=float(1 + np.mean(stages) * (int(num_mcmc_steps) * per_move + 2)),
        wall_time=time.perf_counter() - start,
    )
