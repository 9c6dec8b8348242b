"""Persistent-walker strategies: Jarzynski (weighted), PCD and Unweighted (DESIGN 1.1, 1.5)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from smc_ebm.energies._base import AbstractEnergy
from smc_ebm.energies._gaussian import Gaussian
from smc_ebm.kernels._evaluate import energies, evaluate, evaluate_uniform
from smc_ebm.kernels._langevin import mala_move, ula_propose
from smc_ebm.smc._resampling import (
    ESSResampling,
    IntervalResampling,
    NoResampling,
    ess_fraction,
    log_mean_exp,
    maybe_resample_indices,
    resample_indices,
)
from smc_ebm.smc._weights import ais_increment, jarzynski_increment
from smc_ebm.strategies._base import (
    AbstractStrategy,
    ObserverState,
    WalkerState,
    check_feedback_correction,
    check_init_array,
    exact_start,
)
from smc_ebm.strategies._flowmc import FlowJarzynski, FlowStrategy

KERNELS = ("ula", "mala")


class _Interpolated(eqx.Module):
    """``U_t = (1 - t) U_base + t U``: the annealing path from a base to the model."""

    base: Any
    energy: Any
    t: Array

    def __call__(self, x):
        return (1.0 - self.t) * self.base(x) + self.t * self.energy(x)


def _move(
    key: PRNGKeyArray,
    x: Array,
    u: Array,
    g: Array,
    energy_old: Any,
    step_size: float,
    kernel: str,
) -> tuple[Array, Array | None, Array]:
    """Move walkers with the kernel of ``energy_old``.

    Returns ``(x_new, u_old_at_new, acceptance)``: ``u_old_at_new`` is the old energy at the
    new point for MALA (needed by the AIS increment) and ``None`` for ULA.
    """
    if kernel == "ula":
        return ula_propose(key, x, g, step_size), None, jnp.asarray(1.0)
    x_new, u_new, _, acc = mala_move(key, x, u, g, energy_old, step_size)
    return x_new, u_new, jnp.mean(acc)


def _increment(kernel, step_size, x, u, g, x_new, u_old_at_new, u_new, g_new):
    if kernel == "ula":
        return jarzynski_increment(x, u, g, x_new, u_new, g_new, step_size)
    return ais_increment(u_old_at_new, u_new)


@dataclasses.dataclass(frozen=True)
class Walkers(AbstractStrategy):
    """Persistent walkers following the moving target, optionally with Jarzynski weights.

    This is the common engine of :class:`Jarzynski`, :class:`PCD` and :class:`Unweighted`;
    use those constructors.
    """

    n_walkers: int = 1000
    step_size: float = 0.1
    kernel: str = "ula"
    walker_batch: int | None = None
    walker_grad: str = "all"
    resampling: ESSResampling | IntervalResampling | NoResampling = dataclasses.field(
        default_factory=ESSResampling
    )
    init: Any = "model"
    weighted: bool = True
    n_anneal: int = 200
    anneal_base: Any = None
    n_observers: int = 0
    observer_kernel: str = "mala"
    feedback_correction: bool | str = False
    feedback_correction_from: int = 0
    feedback_estimator: str = "probe"
    reseed_every: int = 0
    refresh_every: int = 0
    n_refresh: int | None = None
    refresh_steps: int | None = None

    def __post_init__(self) -> None:
        if int(self.n_walkers) < 2:
            raise ValueError(f"n_walkers must be >= 2; got {self.n_walkers}.")
        if not float(self.step_size) > 0 or not math.isfinite(float(self.step_size)):
            raise ValueError(f"step_size must be a positive finite number; got {self.step_size}.")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}; got {self.kernel!r}.")
        if self.walker_batch is not None and not 1 <= int(self.walker_batch) <= self.n_walkers:
            raise ValueError(
                f"walker_batch must be in [1, n_walkers={self.n_walkers}]; got {self.walker_batch}."
            )
        if self.walker_grad not in ("all", "batch"):
            raise ValueError(f"walker_grad must be 'all' or 'batch'; got {self.walker_grad!r}.")
        if isinstance(self.init, str) and self.init not in ("model", "data"):
            raise ValueError(f"init must be 'model', 'data' or an array; got {self.init!r}.")
        if self.n_observers < 0 or self.n_observers == 1:
            raise ValueError(f"n_observers must be 0 or >= 2; got {self.n_observers}.")
        if self.observer_kernel not in KERNELS:
            raise ValueError(
                f"observer_kernel must be one of {KERNELS}; got {self.observer_kernel!r}."
            )
        if self.n_observers and not self.weighted:
            raise ValueError("n_observers needs weighted walkers (Jarzynski).")
        if self.n_anneal < 1:
            raise ValueError(f"n_anneal must be >= 1; got {self.n_anneal}.")
        if self.reseed_every < 0:
            raise ValueError(f"reseed_every must be >= 0; got {self.reseed_every}.")
        check_feedback_correction(self.feedback_correction)
        if int(self.feedback_correction_from) < 0:
            raise ValueError(
                f"feedback_correction_from must be >= 0; got {self.feedback_correction_from}."
            )
        if self.feedback_estimator not in ("probe", "exact"):
            raise ValueError(
                f"feedback_estimator must be 'probe' or 'exact'; got {self.feedback_estimator!r}."
            )
        if self.refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0; got {self.refresh_every}.")
        if self.refresh_every:
            if not self.weighted:
                raise ValueError("refresh_every needs weighted walkers (Jarzynski).")
            if not 1 <= self._n_refresh < self.n_walkers:
                raise ValueError(
                    f"n_refresh must be in [1, n_walkers={self.n_walkers}); got {self.n_refresh}."
                )
            if self.refresh_steps is not None and int(self.refresh_steps) < 1:
                raise ValueError(f"refresh_steps must be >= 1; got {self.refresh_steps}.")
        if self.reseed_every and not self.n_observers:
            raise ValueError("reseed_every needs observers to reseed from (n_observers >= 2).")

    @property
    def _n_refresh(self) -> int:
        if self.n_refresh is None:
            return max(1, self.n_walkers // 16)
        return int(self.n_refresh)

    @property
    def _minibatched(self) -> bool:
        return self.walker_batch is not None and self.walker_batch < self.n_walkers

    @property
    def n_gradient_walkers(self) -> int:
        """Walkers in the model term of a step's gradient: the moved batch or all of them."""
        if self._minibatched and self.walker_grad == "batch":
            return int(self.walker_batch)
        return int(self.n_walkers)

    @property
    def weights_certify_walkers(self) -> bool:
        r"""True for weighted ULA walkers that all move at every step (no reseeding).

        The Jarzynski increment :math:`U_k(x) - U_{k+1}(x') + \tfrac12 s\cdot(\delta +
        \tfrac h2 (g - g'))` reads every coordinate of :math:`x'` and :math:`g'`; given a
        finite previous state, an inf or NaN in either makes the sum inf or NaN (an infinite
        coordinate of :math:`x'` meets a nonzero :math:`s_j` or gives :math:`0\cdot\infty`;
        one of :math:`g'` enters both factors with opposite signs). NaN and :math:`+\infty`
        weights stop resampling (the ESS is NaN), and a walker with weight
        :math:`e^{-\infty} = 0` is never an ancestor, so the resampled walkers are finite too.
        MALA's AIS increment does not read :math:`g'`; frozen walkers of a mini-batched step
        and reseeded or refreshed walkers get no ULA increment, so none of these is certified.
        """
        return (
            self.weighted
            and self.kernel == "ula"
            and not self._minibatched
            and not self.reseed_every
            and not self.refresh_every
        )

    # ----------------------------------------------------------------------------------
    def validate(self, dim: int, n_data: int) -> None:
        check_init_array(self.init, self.n_walkers, dim)
        if not isinstance(self.init, str) and not np.all(np.isfinite(np.asarray(self.init))):
            raise ValueError("init array contains NaN or inf.")

    def _initial_positions(
        self,
        key: PRNGKeyArray,
        energy: AbstractEnergy,
        data: Array,
        n: int,
        base: Callable[[], Any],
    ) -> tuple[Array, Array, Array | None]:
        """``n`` positions, log-weights and (for annealed starts) a log Z_0 estimate.

        ``base()`` gives the annealing base (called only when the start is annealed).
        """
        x = exact_start(key, energy, data, self.init, n)
        if x is not None:
            return x, jnp.zeros(n, data.dtype), None
        return self._anneal(key, energy, data, n, base())

    def _base(self, data: Array) -> Any:
        """``anneal_base``, or the data's diagonal Gaussian with scales >= sqrt(step_size)."""
        if self.anneal_base is not None:
            return self.anneal_base
        return Gaussian.fit_to(data, min_scale=math.sqrt(float(self.step_size)))

    def _anneal(self, key, energy, data, n, base):
        """Anneal from a Gaussian base to the model with the same weighted moves.

        The default base is the data's moment-matched diagonal Gaussian, its scales floored at
        ``sqrt(step_size)``: a Langevin step on a Gaussian of scale ``s`` is stable only for
        ``h < 2 s^2``, and a coordinate that barely varies in the data (the border pixels of
        digit images) would otherwise make the first moves diverge.
        """
        k0, key = jax.random.split(key)
        x = base.sample(k0, n).astype(data.dtype)
        x, a, log_ratio = _anneal_jit(
            key, base, energy, x, int(self.n_anneal), float(self.step_size), self.kernel
        )
        bad = ~(np.isfinite(np.asarray(a)) & np.all(np.isfinite(np.asarray(x)), axis=-1))
        if bad.any():
            raise ValueError(
                f"annealing the initial walkers from the base to the model diverged: {bad.sum()} "
                f"of {n} walkers have a non-finite position or weight after {self.n_anneal} "
                f"steps of step_size={self.step_size}. Langevin steps need h < 2 s^2 on the "
                f"narrowest scale s of the base and of the model; pass a smaller step_size, a "
                f"wider anneal_base, or init='data'."
            )
        return x, a, base.log_partition() + log_ratio

    def init_state(
        self, key: PRNGKeyArray, energy: AbstractEnergy, data: Array, log_Z0: Array | None
    ) -> WalkerState:
        from smc_ebm.manifolds import Euclidean, manifold_of

        if not isinstance(manifold_of(energy), Euclidean):
            raise ValueError(
                f"{type(energy).__name__} lives on a {type(manifold_of(energy)).__name__}; "
                "Jarzynski, PCD and Unweighted walkers move in R^d (use se.Dual)."
            )
        k_walk, k_obs = jax.random.split(key)
        # The base, fitted to the data at most once, for the annealed starts and the refreshes.
        base = functools.cache(functools.partial(self._base, data))
        x, a, log_z_est = self._initial_positions(k_walk, energy, data, self.n_walkers, base)
        if not self.weighted:
            if log_z_est is not None:
                # Annealed walkers carry weights since their last resampling; walkers that
                # will be counted equally start from an equally weighted population.
                x = _resample_once(jax.random.fold_in(k_walk, 1), x, a)
            a = jnp.zeros_like(a)
        if log_Z0 is None:
            log_Z0 = log_z_est if log_z_est is not None else jnp.asarray(0.0, data.dtype)
        log_Z0 = jnp.asarray(log_Z0, data.dtype)
        state = eqx.filter_jit(_evaluate_state)(
            energy, x, a, log_Z0 - log_mean_exp(a), self.weighted
        )
        if self.n_observers:
            xo, ao, _ = self._initial_positions(k_obs, energy, data, self.n_observers, base)
            uo, go = _evaluate_jit(energy, xo)
            state = state._replace(
                observers=ObserverState(xo, uo, go, ao, log_Z0 - log_mean_exp(ao))
            )
        if self.refresh_every:
            state = state._replace(refresh_base=base())
        return state

    # ----------------------------------------------------------------------------------
    def ess_and_log_Z(self, state: WalkerState) -> tuple[Array, Array]:
        if not self.weighted:
            return jnp.asarray(1.0, state.energy.dtype), jnp.asarray(jnp.nan, state.energy.dtype)
        a = state.log_weights
        src = state if state.observers is None else state.observers
        return ess_fraction(a), src.log_Z_anchor + log_mean_exp(src.log_weights)

    def negative_phase(self, key, state, energy, batch):
        return state, state.param_grad, state.model_energy

    def advance(self, key, state, energy_old, energy_new, step, correction=None):
        k_move, k_res, k_obs = jax.random.split(key, 3)
        gw = None
        if self._minibatched:
            x, u, g, a, pgrad, model_energy, acc, gw = self._advance_batch(
                k_move, state, energy_old, energy_new, correction
            )
        else:
            x, u, g, a, pgrad_fn, acc = self._follow(
                k_move,
                state.position,
                state.energy,
                state.grad,
                state.log_weights,
                energy_old,
                energy_new,
            )
            if self.weighted:
                if correction is not None:
                    a = a + correction
                gw = jax.nn.softmax(a)
                pgrad, model_energy = pgrad_fn(gw), jnp.sum(gw * u)
            else:
                pgrad, model_energy = pgrad_fn, jnp.mean(u)
        anchor = state.log_Z_anchor
        observers = state.observers
        if self.weighted:
            do = self.resampling.should_resample(step + 1, ess_fraction(a))
            gw_arr = jnp.zeros_like(a) if gw is None else gw
            x, u, g, a, anchor, gw_arr = _maybe_resample(
                do, k_res, x, u, g, a, anchor, self.resampling.method, gw_arr
            )
            gw = None if gw is None else gw_arr
            if observers is not None:
                observers = self._advance_observers(k_obs, observers, energy_old, energy_new, step)
        else:
            do = jnp.asarray(False)
        state = WalkerState(
            x, u, g, a, anchor, pgrad, model_energy, observers, gw, state.refresh_base
        )
        if self.refresh_every:
            state = jax.lax.cond(
                (step + 1) % self.refresh_every == 0,
                lambda: self._refresh(jax.random.fold_in(k_res, 2), state, energy_new),
                lambda: state,
            )
        if self.reseed_every:
            state = jax.lax.cond(
                (step + 1) % self.reseed_every == 0,
                lambda: self._reseed(jax.random.fold_in(k_res, 1), state, energy_new),
                lambda: state,
            )
        return state, do, acc

    def _reseed(self, key, state: WalkerState, energy: Any) -> WalkerState:
        """Replace the driving walkers by ``N`` draws from the observers' weighted population.

        The observers never entered a gradient, so their weights are exact for the path; the
        drivers' weights carry the bias of their own influence on it (maths §2.6), which
        therefore accumulates over ``reseed_every`` steps at most instead of the whole run.
        """
        obs = state.observers
        idx = resample_indices(key, obs.log_weights, self.resampling.method, self.n_walkers)
        x = obs.position[idx]
        a = jnp.zeros(self.n_walkers, state.log_weights.dtype)
        anchor = obs.log_Z_anchor + log_mean_exp(obs.log_weights)
        return _replace_walkers(state, energy, x, a, anchor)

    def _refresh(self, key, state: WalkerState, energy: Any) -> WalkerState:
        r"""Replace ``n_refresh`` random walkers by walkers annealed afresh from the base.

        Persistent walkers only see the model where they are: a well that the parameters dig
        away from them carries mass that no weight can show (the weights correct the walkers
        where they are, not where they have never been). Walkers annealed from the base at
        the current parameters reach such wells with the weight that the model gives them.

        The pooled weights keep the estimator unbiased: after dropping ``M`` walkers chosen
        uniformly at random (independently of their weights), the ``N - M`` kept ones give
        :math:`\tfrac1{N-M}\sum_i e^{c + A_i}`, an unbiased estimate of :math:`Z` (``c`` the
        anchor), and the ``M`` fresh ones, with log-weights
        :math:`\log Z_\mathrm{base} + \log\hat r - \log\overline{e^{B}} + B_j` from the
        annealing (:func:`anneal`; ``B`` its log-weights since its last resampling, ``\hat
        r`` its estimate of :math:`Z / Z_\mathrm{base}`), give another. Every walker then
        counts once in :math:`\tfrac1N \sum e^{\cdot}`, a convex combination of the two.
        Nothing is resampled: a fresh walker that lands in a deep well takes the weight of
        that well in the next gradient, and loses it through its increments as the energy
        there rises.
        """
        k_drop, k_x, k_anneal = jax.random.split(key, 3)
        n, m = self.n_walkers, self._n_refresh
        base = state.refresh_base
        dtype = state.position.dtype
        steps = self.n_anneal if self.refresh_steps is None else self.refresh_steps
        x0 = base.sample(k_x, m).astype(dtype)
        xf, b, log_ratio, _, _ = anneal(
            k_anneal,
            base,
            energy,
            x0,
            n_steps=int(steps),
            step_size=self.step_size,
            kernel=self.kernel,
        )
        # fresh log-weights relative to the population's anchor
        b = b + (base.log_partition() + log_ratio - log_mean_exp(b) - state.log_Z_anchor)
        drop = jax.random.permutation(k_drop, n)[:m]
        x = state.position.at[drop].set(xf)
        a = state.log_weights.at[drop].set(b.astype(state.log_weights.dtype))
        return _replace_walkers(state, energy, x, a, state.log_Z_anchor)

    def _follow(self, key, x, u, g, a, energy_old, energy_new, kernel=None):
        """Move with the old energy, evaluate at the new one, add the weight increments.

        Returns ``(x, u, g, a, param_grad, acceptance)``; ``param_grad`` is a function of
        the weights for weighted walkers and the uniform-weight gradient otherwise.
        """
        kernel = self.kernel if kernel is None else kernel
        x_new, u_old_new, acc = _move(key, x, u, g, energy_old, self.step_size, kernel)
        if not self.weighted:
            u_new, g_new, pgrad = evaluate_uniform(energy_new, x_new)
            return x_new, u_new, g_new, a, pgrad, acc
        u_new, g_new, pgrad_fn = evaluate(energy_new, x_new)
        a = a + _increment(kernel, self.step_size, x, u, g, x_new, u_old_new, u_new, g_new)
        return x_new, u_new, g_new, a, pgrad_fn, acc

    def _advance_observers(self, key, obs, energy_old, energy_new, step):
        """Observers follow the same path with all their walkers, and resample on their own."""
        km, kr = jax.random.split(key)
        x, u, g, a, _, _ = self._follow(
            km,
            obs.position,
            obs.energy,
            obs.grad,
            obs.log_weights,
            energy_old,
            energy_new,
            self.observer_kernel,
        )
        do = self.resampling.should_resample(step + 1, ess_fraction(a))
        return ObserverState(
            *_maybe_resample(do, kr, x, u, g, a, obs.log_Z_anchor, self.resampling.method)
        )

    def _advance_batch(self, key, state, energy_old, energy_new, correction=None):
        """Algorithm 2: move ``walker_batch`` walkers; the others get the frozen increment.

        With ``walker_grad="all"`` every walker is evaluated (energy and x-gradient) at the
        new parameters for the gradient anyway, so the state's energies and gradients are
        current for all walkers at the next step: the moved batch takes them from the state,
        and that one evaluation also gives the batch's new energies and gradients. With
        ``"batch"`` the frozen walkers' stored gradients are stale (from their last move), so
        the batch is evaluated at the old parameters before its move and at the new ones
        after it, and all walkers get a forward pass for the frozen increment.
        """
        kb, km = jax.random.split(key)
        n, nb = self.n_walkers, self.walker_batch
        idx = jax.random.choice(kb, n, (nb,), replace=False)
        x, a = state.position, state.log_weights
        xb = x[idx]
        every = self.walker_grad == "all"
        if every:
            ub, gb = state.energy[idx], state.grad[idx]
        else:
            ub, gb, _ = evaluate(energy_old, xb)
        xb_new, ub_old_new, acc = _move(km, xb, ub, gb, energy_old, self.step_size, self.kernel)
        x_new = x.at[idx].set(xb_new)
        if every:
            u_new, g_new, pgrad_all = evaluate(energy_new, x_new)
            ub_new, gb_new = u_new[idx], g_new[idx]
        else:
            ub_new, gb_new, pgrad_b = evaluate(energy_new, xb_new)
            g_new = state.grad.at[idx].set(gb_new)
            u_new = energies(energy_new, x_new)
        if self.weighted:
            inc_b = _increment(
                self.kernel, self.step_size, xb, ub, gb, xb_new, ub_old_new, ub_new, gb_new
            )
            a = (a + ais_increment(state.energy, u_new)).at[idx].set(a[idx] + inc_b)
            if correction is not None:
                a = a + correction
        gw = None
        if every:
            p = jax.nn.softmax(a) if self.weighted else jnp.full_like(a, 1.0 / n)
            pgrad, model_energy = pgrad_all(p), jnp.sum(p * u_new)
            if self.weighted:
                gw = p
        else:
            pb = jax.nn.softmax(a[idx]) if self.weighted else jnp.full((nb,), 1.0 / nb, a.dtype)
            pgrad, model_energy = pgrad_b(pb), jnp.sum(pb * ub_new)
            if self.weighted:
                gw = jnp.zeros_like(a).at[idx].set(pb)
        return x_new, u_new, g_new, a, pgrad, model_energy, acc, gw


def anneal(
    key: PRNGKeyArray,
    base: Any,
    energy: Any,
    x: Array,
    *,
    n_steps: int,
    step_size: float,
    kernel: str = "ula",
    resampling: ESSResampling | IntervalResampling | NoResampling | None = None,
) -> tuple[Array, Array, Array, Array, Array]:
    r"""Anneal walkers from ``base`` to ``energy`` with the engine's weighted moves.

    The path is :math:`U_t = (1 - t) U_\mathrm{base} + t U`, ``t`` on ``n_steps`` equal
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
        n_steps: number of annealing steps (``>= 1``).
        step_size: Langevin step ``h``.
        kernel: ``"ula"`` or ``"mala"``.
        resampling: schedule called with the annealing step index and the ESS (default
            :class:`ESSResampling` at 0.5, systematic).

    Returns:
        ``(x, log_weights, log_ratio, n_resampled, acceptance)``: final positions
        ``(n, d)``, log-weights ``(n,)`` since the last resampling, the estimate of
        :math:`\log Z - \log Z_\mathrm{base}`, the number of resamplings and the mean
        acceptance of the moves (1 for ULA).
    """
    resampling = ESSResampling(0.5, "systematic") if resampling is None else resampling

    def path(t):
        return _Interpolated(base, energy, jnp.asarray(t, x.dtype))

    u, g, _ = evaluate(path(0.0), x)
    ts = jnp.linspace(0.0, 1.0, n_steps + 1, dtype=x.dtype)

    def body(carry, inp):
        x, u, g, a, anchor = carry
        k, j, t0, t1 = inp
        km, kr = jax.random.split(k)
        x_new, u_old_new, acc = _move(km, x, u, g, path(t0), step_size, kernel)
        u_new, g_new, _ = evaluate(path(t1), x_new)
        a = a + _increment(kernel, step_size, x, u, g, x_new, u_old_new, u_new, g_new)
        do = resampling.should_resample(j, ess_fraction(a))
        x, u, g, a, anchor = _maybe_resample(
            do, kr, x_new, u_new, g_new, a, anchor, resampling.method
        )
        return (x, u, g, a, anchor), (do, acc)

    keys = jax.random.split(key, n_steps)
    init = (x, u, g, jnp.zeros(x.shape[0], x.dtype), jnp.zeros((), x.dtype))
    steps = jnp.arange(n_steps)
    (x, u, g, a, anchor), (dos, accs) = jax.lax.scan(body, init, (keys, steps, ts[:-1], ts[1:]))
    return x, a, anchor + log_mean_exp(a), jnp.sum(dos), jnp.mean(accs)


#: Traces of :func:`_anneal_jit` (a test checks that a second ``fit`` adds none).
TRACE_COUNT = {"anneal": 0}


@eqx.filter_jit
def _anneal_jit(key, base, energy, x, n_steps: int, step_size: float, kernel: str):
    """:func:`anneal` at the start of a run, compiled once per (structure, sizes, kernel).

    ``base`` and ``energy`` are traced (their arrays are arguments), so a second ``fit`` with
    an energy of the same structure, e.g. the next seed of an experiment, reuses the program.
    Returns ``(x, log_weights, log_ratio)``.
    """
    TRACE_COUNT["anneal"] += 1
    return anneal(
        key,
        base,
        energy,
        x,
        n_steps=n_steps,
        step_size=step_size,
        kernel=kernel,
        resampling=ESSResampling(0.5, "systematic"),
    )[:3]


def _replace_walkers(state: WalkerState, energy, x, a, anchor) -> WalkerState:
    """``state`` with new weighted walkers ``(x, a, anchor)``, evaluated at ``energy``.

    The observers and the refresh base carry over; ``grad_weights`` is tracked if it was.
    """
    new = _evaluate_state(energy, x, a, anchor, True)
    gw = None if state.grad_weights is None else new.grad_weights
    return new._replace(observers=state.observers, grad_weights=gw, refresh_base=state.refresh_base)


def _evaluate_state(energy, x, a, anchor, weighted) -> WalkerState:
    if weighted:
        u, g, pgrad_fn = evaluate(energy, x)
        p = jax.nn.softmax(a)
        return WalkerState(x, u, g, a, anchor, pgrad_fn(p), jnp.sum(p * u), None, p)
    u, g, pgrad = evaluate_uniform(energy, x)
    return WalkerState(x, u, g, a, anchor, pgrad, jnp.mean(u))


@jax.jit
def _resample_once(key, x, a):
    """Walkers drawn (systematic) from the population ``(x, softmax(a))``: ``(n, d)``."""
    return x[resample_indices(key, a, "systematic")]


@eqx.filter_jit
def _evaluate_jit(energy, x):
    """``(U(x), grad_x U(x))`` of walkers, compiled once per energy structure."""
    return evaluate(energy, x)[:2]


def _maybe_resample(do, key, x, u, g, a, anchor, method, *extra):
    """:func:`~smc_ebm.smc.maybe_resample_indices`, then the walkers gathered with the ancestors.

    Returns ``(x, u, g, a, anchor, *extra)``; the arrays in ``extra`` (indexed by walker) are
    gathered with the same ancestors.
    """
    idx, a, anchor = maybe_resample_indices(do, key, a, anchor, method)
    x, g = _gather_rows(idx, x, g)
    return (x, u[idx], g, a, anchor, *(e[idx] for e in extra))


def _gather_rows(idx: Array, x: Array, g: Array) -> tuple[Array, Array]:
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


def Jarzynski(
    n_walkers: int,
    step_size: float,
    *,
    kernel: str = "ula",
    walker_batch: int | None = None,
    walker_grad: str = "all",
    resampling: ESSResampling | IntervalResampling | NoResampling | None = None,
    init: Any = "model",
    n_anneal: int = 200,
    anneal_base: Any = None,
    n_observers: int = 0,
    observer_kernel: str = "mala",
    feedback_correction: bool | str = "auto",
    feedback_correction_from: int = 0,
    feedback_estimator: str = "probe",
    reseed_every: int = 0,
    refresh_every: int = 0,
    n_refresh: int | None = None,
    refresh_steps: int | None = None,
    **flow_options: Any,
) -> Walkers | FlowStrategy:
    r"""Jarzynski-weighted walkers (Carbone et al., 2023, Algorithms 1 and 2).

    Each step moves the walkers with the OLD parameters and updates their log-weights
    with the Jarzynski increment (ULA) or the AIS increment (MALA), so the weighted
    walkers are exact for the current model at every step, and
    :math:`\log Z_k = \log Z_0 + \log \overline{e^{A_k}}` (re-anchored at each resampling).

    Args:
        n_walkers: number of walkers ``N >= 2``.
        step_size: Langevin step ``h > 0``.
        kernel: ``"ula"`` (Jarzynski increments), ``"mala"`` (AIS increments, blackjax), or
            ``"flow"``: flow i-SIR and MALA moves with AIS weights, i.e.
            :func:`~smc_ebm.FlowJarzynski` (``step_size`` is then MALA's initial step, and
            ``flow_options`` take any keyword of :func:`~smc_ebm.FlowMC`, e.g. ``flow=``,
            ``n_proposals=``, ``n_global=``, ``n_local=``, ``flow_optimizer=``).
        walker_batch: move only this many walkers per step (Algorithm 2); the frozen ones
            get :math:`A \mathrel{+}= U_k(X) - U_{k+1}(X)`.
        walker_grad: with ``walker_batch``, estimate the model term from ``"all"`` walkers
            (weighted) or from the moved ``"batch"`` (self-normalised weights).
        resampling: :class:`ESSResampling` (default threshold 0.5, systematic),
            :class:`IntervalResampling` or :class:`NoResampling`.
        init: ``"model"`` (exact samples when the energy can sample itself or is a
            :class:`Tilted` with a zero net, otherwise annealed from ``anneal_base`` in
            ``n_anneal`` weighted steps), ``"data"``, or an ``(N, d)`` array.
        n_anneal: annealing steps for ``init="model"`` when no exact sampler exists.
        anneal_base: the annealing base (an energy with ``sample`` and ``log_partition``;
            default: the data's moment-matched diagonal Gaussian, scales floored at
            ``sqrt(step_size)`` so that its Langevin moves are stable).
        n_observers: extra weighted walkers that follow the same parameter path but never
            enter the gradient; when ``> 0`` they, not the driving walkers, give ``log_Z``
            and the cross-entropy. The driving walkers' own estimate drifts downwards
            because the path reacts to their noise (about ``-tr(P Cov(m))`` per step, ``P``
            the optimizer's step size, ``m`` their estimate of ``E[dU/dtheta]``); the
            observers' estimate is exact for any path. Cost: ``n_observers / n_walkers``
            more moves per step (twice that with MALA).
        feedback_correction: remove, to first order, the bias that the walkers' own
            noise puts in their weights through the parameter update (see
            ``docs/maths.md``): walker ``i`` contributed ``p_i dU(X_i)/dtheta`` to the
            gradient, so its increment contains the self-term
            ``p_i dU_i/dtheta^T J dU_i/dtheta`` (``J`` the optimizer's Jacobian), which
            is subtracted with a one-probe Hutchinson estimate (one extra directional
            derivative of the energies per step, at up to 1024 walkers).
            Exact to first order for element-wise optimizers without memory (SGD, also
            per field); with momentum only the same-step term is removed. It needs an
            update that is linear in the gradient: ``"auto"`` (default) applies it when
            ``fit`` finds the optimizer linear and skips it otherwise (Adam), ``True``
            does the same but warns when it skips, ``False`` never applies it.
            ``"local"`` applies it with any optimizer, with the Jacobian diagonal of the
            update at the current gradient and optimizer state: for Adam, whose second
            moments average the gradient over many steps, one walker's contribution moves
            the update smoothly, and this is its first-order self-term (not in the first
            steps, where Adam's update is close to the sign of the gradient).
        feedback_correction_from: the first step at which the feedback correction applies
            (default 0: every step), e.g. where Adam's second moments have settled, since
            before that its linearisation is poor. On the digits experiment, starting it
            with resampling restored the early ESS but not the proportions (see
            ``docs/digits.md``).
        feedback_estimator: how the self-term ``q_i dU_i/dtheta^T S (dU_i/dtheta - m)`` is
            estimated: ``"probe"`` (default) with one Rademacher probe through one derivative
            of the walkers' energies (unbiased, cheap, but its noise enters the log-weights), or
            ``"exact"`` from each gradient walker's own parameter gradient (a ``vmap`` of
            ``grad``: memory ``walkers x parameters``, for small energies).
        observer_kernel: the observers' move, ``"mala"`` by default: an invariant kernel
            leaves only the AIS increments of the parameter changes in their weights, not
            the ULA correction, so their log Z has a much smaller variance.
        reseed_every: with observers, every this many steps replace the driving walkers by
            ``n_walkers`` draws from the observers' weighted population (their weights reset
            to zero). The drivers' weights are biased by the drivers' own influence on the
            parameter path, a bias that the same-step feedback correction removes only in
            part; reseeding from the observers, which never drive, bounds how long it can
            accumulate (see ``docs/teacher_student.md``). ``0`` (default): never.
        refresh_every: every this many steps, replace ``n_refresh`` walkers chosen at
            random by walkers annealed afresh from ``anneal_base`` to the current model in
            ``refresh_steps`` weighted steps (default ``n_anneal``), with weights that keep
            the estimator unbiased (see ``docs/maths.md``). Persistent walkers cannot see a
            well that the model digs where none of them is; fresh walkers can. Cost per
            refresh: ``n_refresh * refresh_steps`` moves and one evaluation of all walkers.
            Fresh walkers can take much of the weight, so the ESS drops at every refresh: on
            the digits experiment it moved the trained models towards the target proportions
            but made the walkers' estimate of them worse (``docs/digits.md``).
            ``0`` (default): never.
        n_refresh: walkers replaced at each refresh, ``1 <= n_refresh < n_walkers``
            (default ``n_walkers // 16``, at least 1).
        refresh_steps: annealing steps of a refresh (default ``n_anneal``).
        **flow_options: with ``kernel="flow"`` only, keywords of :func:`~smc_ebm.FlowMC`.

    Example:
        >>> import smc_ebm as se
        >>> strategy = se.Jarzynski(n_walkers=1000, step_size=0.1,
        ...                         resampling=se.ESSResampling(0.5, "systematic"))
    """
    if kernel not in (*KERNELS, "flow"):
        raise ValueError(f"kernel must be one of {(*KERNELS, 'flow')}; got {kernel!r}.")
    if kernel == "flow":
        unsupported = {
            "walker_batch": walker_batch is not None,
            "walker_grad": walker_grad != "all",
            "anneal_base": anneal_base is not None,
            "n_observers": n_observers != 0,
            "reseed_every": reseed_every != 0,
            "refresh_every": refresh_every != 0,
            "feedback_correction_from": feedback_correction_from != 0,
            "feedback_estimator": feedback_estimator != "probe",
        }
        bad = [name for name, given in unsupported.items() if given]
        if bad:
            raise ValueError(f"Jarzynski(kernel='flow') does not support {', '.join(bad)}")
        return FlowJarzynski(
            n_walkers,
            step_size=step_size,
            resampling=resampling,
            feedback_correction=feedback_correction,
            init=init,
            **flow_options,
        )
    if flow_options:
        raise ValueError(
            f"Jarzynski got unexpected keyword(s) {', '.join(sorted(flow_options))}; flow "
            "options need kernel='flow'"
        )
    return Walkers(
        n_walkers=n_walkers,
        step_size=step_size,
        kernel=kernel,
        walker_batch=walker_batch,
        walker_grad=walker_grad,
        resampling=ESSResampling() if resampling is None else resampling,
        init=init,
        weighted=True,
        n_anneal=n_anneal,
        anneal_base=anneal_base,
        n_observers=n_observers,
        observer_kernel=observer_kernel,
        feedback_correction=feedback_correction,
        feedback_correction_from=feedback_correction_from,
        feedback_estimator=feedback_estimator,
        reseed_every=reseed_every,
        refresh_every=refresh_every,
        n_refresh=n_refresh,
        refresh_steps=refresh_steps,
    )


def PCD(
    n_walkers: int,
    step_size: float,
    *,
    kernel: str = "ula",
    walker_batch: int | None = None,
    init: Any = "data",
) -> Walkers:
    """Persistent contrastive divergence: persistent walkers started at data, no weights."""
    return Walkers(
        n_walkers=n_walkers,
        step_size=step_size,
        kernel=kernel,
        walker_batch=walker_batch,
        walker_grad="batch" if walker_batch else "all",
        resampling=NoResampling(),
        init=init,
        weighted=False,
    )


def Unweighted(
    n_walkers: int,
    step_size: float,
    *,
    kernel: str = "ula",
    walker_batch: int | None = None,
    init: Any = "model",
    n_anneal: int = 200,
    anneal_base: Any = None,
) -> Walkers:
    """Persistent walkers started at the model, without weights (the Jarzynski moves alone).

    When the energy cannot sample itself, the start is annealed from ``anneal_base`` (default:
    the data's moment-matched Gaussian) in ``n_anneal`` weighted steps, as for
    :func:`Jarzynski`, and the annealed population is then resampled once (systematic) so
    that the walkers, counted equally from there on, start as draws of the model.
    """
    return Walkers(
        n_walkers=n_walkers,
        step_size=step_size,
        kernel=kernel,
        walker_batch=walker_batch,
        walker_grad="batch" if walker_batch else "all",
        resampling=NoResampling(),
        init=init,
        weighted=False,
        n_anneal=n_anneal,
        anneal_base=anneal_base,
    )
