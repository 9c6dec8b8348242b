r"""Research options as parts that wrap a weighted strategy: observers, reseeding, refreshing.

* :func:`with_observers` adds ``M`` weighted walkers that follow the same parameter path but
  never enter the gradient: their log Z is exact for any path (maths §2.6); with
  ``reseed_every=K`` the driving walkers are replaced by draws from them every ``K`` steps.
* :func:`with_refresh` replaces ``m`` random walkers every ``K`` steps by walkers annealed
  afresh from the base to the current model, with weights that keep the estimator unbiased
  (maths §2.7).

Each wrapper is a strategy of its own; its state holds the wrapped strategy's state in
``walkers`` (the attributes of the driving :class:`WalkerState` read through).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from smc_ebm._naming import renamed
from smc_ebm.kernels import make_kernel
from smc_ebm.smc import ESSResampling, Population, anneal, log_mean_exp, resample_indices
from smc_ebm.smc import step as smc_step
from smc_ebm.strategies._base import (
    ForwardingStrategy,
    StepInfo,
    WalkerState,
    all_finite,
    reads_walker_fields,
    walker_checks,
)
from smc_ebm.strategies._flowmc import FlowJarzynski
from smc_ebm.strategies._start import (
    KERNEL_NAMES,
    anchor_of,
    check_kernel,
    evaluate_state,
    evaluate_state_jit,
)


def core(state: Any) -> WalkerState:
    """The driving :class:`WalkerState` inside a (possibly wrapped) state."""
    while not isinstance(state, WalkerState):
        state = state.walkers
    return state


def replace_core(state: Any, walkers: WalkerState) -> Any:
    """``state`` with its driving :class:`WalkerState` replaced by ``walkers``."""
    if isinstance(state, WalkerState):
        return walkers
    return state._replace(walkers=replace_core(state.walkers, walkers))


class ObservedState(NamedTuple):
    """The wrapped strategy's state and the observers' population."""

    walkers: Any
    observers: Population


class RefreshState(NamedTuple):
    """The wrapped strategy's state and the base that fresh walkers are annealed from."""

    walkers: Any
    base: Any


for _cls in (ObservedState, RefreshState):
    reads_walker_fields(_cls, core)


class _Wrapper(ForwardingStrategy):
    """A strategy around ``inner`` whose state holds ``inner``'s in its ``walkers``."""

    weighted = True

    def walkers(self, state):
        return self.inner.walkers(state.walkers)

    def ess_and_log_Z(self, state):
        return self.inner.ess_and_log_Z(state.walkers)

    def model_term(self, key, state, energy, batch):
        inner, term = self.inner.model_term(key, state.walkers, energy, batch)
        return state._replace(walkers=inner), term

    def update_rule(self):
        rule = self.inner.update_rule()
        if rule is None:
            return None
        return rule.through(lambda s: s.walkers, lambda s, w: s._replace(walkers=w))


def refuse_lazy_target(inner: Any, option: str) -> None:
    """Refuse ``option`` around walkers not held at the parameters (a lazy target's)."""
    if not getattr(inner, "walkers_at_parameters", True):
        raise ValueError(
            f"{option} and with_lazy_target do not combine: {option} re-evaluates walkers at "
            "the current parameters, and a lazy target holds them under its own target."
        )


def _resolved_log_Z0(log_Z0, walkers: WalkerState):
    if log_Z0 is not None:
        return jnp.asarray(log_Z0, walkers.log_weights.dtype)
    return walkers.log_Z_anchor + log_mean_exp(walkers.log_weights)


@dataclasses.dataclass(frozen=True)
class WithObservers(_Wrapper):
    """Observers around a weighted strategy (see :func:`with_observers`)."""

    inner: Any
    num_observers: int
    observer_kernel: str = "mala"
    reseed_every: int = 0
    observer_step_size: float | None = None
    observer_resampling: Any = None

    def __post_init__(self):
        if int(self.num_observers) < 2:
            raise ValueError(f"num_observers must be 0 or >= 2; got {self.num_observers}.")
        h = self.observer_step_size
        if h is not None and not float(h) > 0:
            raise ValueError(f"the observers' step_size must be > 0; got {h}.")
        if int(self.reseed_every) < 0:
            raise ValueError(f"reseed_every must be >= 0; got {self.reseed_every}.")
        if self.reseed_every:
            refuse_lazy_target(self.inner, "reseed_every")
        make_kernel(self.observer_kernel, 1.0)

    @property
    def weighted(self):
        return self.inner.weighted

    @property
    def _observer_resampling(self):
        if self.observer_resampling is not None:
            return self.observer_resampling
        inner = getattr(self.inner, "resampling", None)  # PCD and Unweighted have none
        return ESSResampling() if inner is None else inner

    def init_state(self, key, energy, data, log_Z0):
        inner = self.inner.init_state(key, energy, data, log_Z0)
        log_Z0 = _resolved_log_Z0(log_Z0, core(inner))
        _, k_obs = jax.random.split(key)
        x, a, _ = self.inner.start(k_obs, energy, data, int(self.num_observers), "model")
        w = evaluate_state_jit(energy, x, a, anchor_of(log_Z0, a), True)
        return ObservedState(inner, w.population)

    def ess_and_log_Z(self, state):
        ess, _ = self.inner.ess_and_log_Z(state.walkers)
        return ess, state.observers.log_Z()

    def model_term(self, key, state, energy, batch):
        state, term = super().model_term(key, state, energy, batch)
        return state, term._replace(log_Z=state.observers.log_Z())

    def step(self, key, state, energy_old, energy_new, step):
        _, k_res, k_obs = jax.random.split(key, 3)
        inner, info = self.inner.step(key, state.walkers, energy_old, energy_new, step)
        h = self.step_size if self.observer_step_size is None else self.observer_step_size
        kernel = make_kernel(self.observer_kernel, h)
        observers, _ = smc_step(
            k_obs,
            state.observers,
            energy_old,
            energy_new,
            kernel,
            None,
            self._observer_resampling,
            step + 1,
        )
        new = ObservedState(inner, observers)
        finite = dict(info.finite)
        if self.reseed_every:
            new = jax.lax.cond(
                (step + 1) % self.reseed_every == 0,
                lambda: self._reseed(jax.random.fold_in(k_res, 1), new, energy_new),
                lambda: new,
            )
            finite.update(walker_checks(core(new)))
        name = "walker log-weights"
        finite[name] = finite[name] & all_finite(observers)
        return new, StepInfo(info.resampled, info.acceptance, finite)

    def _reseed(self, key, state, energy):
        """Replace the driving walkers by ``N`` draws from the observers' weighted population.

        The observers never entered a gradient, so their weights are exact for the path; the
        drivers' weights carry the bias of their own influence on it (maths §2.6), which
        therefore accumulates over ``reseed_every`` steps at most instead of the whole run.
        """
        obs, n = state.observers, core(state).position.shape[0]
        idx = resample_indices(key, obs.log_weights, self._observer_resampling.method, n)
        a = jnp.zeros(n, obs.log_weights.dtype)
        new = evaluate_state(energy, obs.position[idx], a, obs.log_Z(), self.inner.weighted)
        return replace_core(state, new)


@renamed()
def with_observers(
    strategy: Any,
    num_observers: int,
    kernel: str = "mala",
    *,
    reseed_every: int = 0,
    step_size: float | None = None,
    resampling: Any = None,
) -> WithObservers:
    """Add observers to a persistent-walker strategy, optionally reseeding its walkers from them.

    Args:
        strategy: a persistent-walker strategy: :class:`~smc_ebm.Jarzynski`, or
            :class:`~smc_ebm.PCD` and :class:`~smc_ebm.Unweighted`, whose own walkers carry
            no weights. The observers start from a sample of the model (``init="model"``),
            whatever the strategy's own ``init``.
        num_observers: ``M >= 2`` weighted walkers that follow the same parameter path without
            driving it; they give ``log_Z`` and the cross-entropy. Cost: ``M / N`` more moves
            per step (twice that with MALA).
        kernel: the observers' move, ``"mala"`` by default: an invariant kernel leaves only
            the AIS increments of the parameter changes in their weights, so their log Z has a
            much smaller variance.
        reseed_every: every this many steps replace the driving walkers by ``N`` draws from
            the observers' weighted population (weights reset to zero); 0: never.
        step_size: the observers' step (default: the wrapped strategy's). An invariant kernel
            keeps their weights exact at any step, so MALA observers may move further than
            the ULA walkers they watch.
        resampling: the observers' resampling schedule (default: the wrapped strategy's, or
            ``ESSResampling()`` for a strategy without weights). A
            schedule that holds the drivers' resampling off for a while leaves the
            observers' weights to degenerate there too, and walkers reseeded from degenerate
            observers are copies of a few; e.g. ``se.ESSResampling(0.5)`` resamples them
            from the start.
    """
    h = None if step_size is None else float(step_size)
    return WithObservers(strategy, int(num_observers), kernel, int(reseed_every), h, resampling)


@dataclasses.dataclass(frozen=True)
class WithRefresh(_Wrapper):
    """Refreshed walkers around a weighted strategy (see :func:`with_refresh`)."""

    inner: Any
    refresh_every: int
    num_refresh: int | None = None
    refresh_steps: int | None = None

    def __post_init__(self):
        if int(self.refresh_every) < 1:
            raise ValueError(f"refresh_every must be >= 1; got {self.refresh_every}.")
        if not 1 <= self._n_refresh < self.num_walkers:
            raise ValueError(
                f"num_refresh must be in [1, num_walkers={self.num_walkers}); "
                f"got {self.num_refresh}."
            )
        if self.refresh_steps is not None and int(self.refresh_steps) < 1:
            raise ValueError(f"refresh_steps must be >= 1; got {self.refresh_steps}.")
        refuse_lazy_target(self.inner, "with_refresh")

    @property
    def _n_refresh(self) -> int:
        return max(1, self.num_walkers // 16) if self.num_refresh is None else int(self.num_refresh)

    def init_state(self, key, energy, data, log_Z0):
        base = functools.cache(functools.partial(self.inner.base, data))
        return RefreshState(self.inner.init_state(key, energy, data, log_Z0), base())

    def step(self, key, state, energy_old, energy_new, step):
        _, k_res = jax.random.split(key)
        inner, info = self.inner.step(key, state.walkers, energy_old, energy_new, step)
        new = state._replace(walkers=inner)
        new = jax.lax.cond(
            (step + 1) % self.refresh_every == 0,
            lambda: self._refresh(jax.random.fold_in(k_res, 2), new, energy_new),
            lambda: new,
        )
        finite = {**info.finite, **walker_checks(core(new))}
        return new, StepInfo(info.resampled, info.acceptance, finite)

    def _refresh(self, key, state, energy):
        r"""Replace ``num_refresh`` random walkers by walkers annealed afresh from the base.

        Persistent walkers only see the model where they are: a well that the parameters dig
        away from them carries mass that no weight can show. Walkers annealed from the base at
        the current parameters reach such wells with the weight that the model gives them.
        After dropping ``M`` walkers chosen uniformly at random (independently of their
        weights), the ``N - M`` kept ones give an unbiased estimate of :math:`Z`, and the ``M``
        fresh ones, with log-weights :math:`\log Z_\mathrm{base} + \log\hat r -
        \log\overline{e^{B}} + B_j` from the annealing, give another; every walker counts once
        in :math:`\tfrac1N \sum e^{\cdot}`, a convex combination of the two. Nothing is
        resampled.
        """
        k_drop, k_x, k_anneal = jax.random.split(key, 3)
        w = core(state)
        n, m = w.position.shape[0], self._n_refresh
        dtype = w.position.dtype
        steps = self.num_anneal if self.refresh_steps is None else self.refresh_steps
        x0 = state.base.sample(k_x, m).astype(dtype)
        xf, b, log_ratio, _, _ = anneal(
            k_anneal,
            state.base,
            energy,
            x0,
            num_steps=int(steps),
            step_size=self.step_size,
            kernel=self.kernel,
        )
        # fresh log-weights relative to the population's anchor
        b = b + (state.base.log_partition() + log_ratio - log_mean_exp(b) - w.log_Z_anchor)
        drop = jax.random.permutation(k_drop, n)[:m]
        x = w.position.at[drop].set(xf)
        a = w.log_weights.at[drop].set(b.astype(w.log_weights.dtype))
        return replace_core(state, evaluate_state(energy, x, a, w.log_Z_anchor, True))


@renamed()
def with_refresh(
    strategy: Any, every: int, num_refresh: int | None = None, steps: int | None = None
) -> WithRefresh:
    """Refresh random walkers of a weighted strategy by annealing them afresh from the base.

    Args:
        strategy: a weighted persistent-walker strategy (e.g. :class:`~smc_ebm.Jarzynski`),
            whose ``base(data)`` is the annealing base.
        every: refresh every this many steps.
        num_refresh: walkers replaced per refresh, ``1 <= num_refresh < num_walkers`` (default
            ``num_walkers // 16``).
        steps: annealing steps of a refresh (default the strategy's ``num_anneal``).
    """
    return WithRefresh(strategy, int(every), num_refresh, steps)


_OPTION_KEYWORDS = (
    "num_observers",
    "observer_kernel",
    "reseed_every",
    "refresh_every",
    "num_refresh",
    "refresh_steps",
)


def compose(cls, build, num_walkers=1000, step_size=0.1, *, kernel="ula", resampling=None, **kw):
    """``cls(...)`` (:class:`Jarzynski`) with the keywords of the first interface, composed.

    ``build`` constructs ``cls`` itself; ``num_observers``, ``reseed_every`` and
    ``refresh_every`` wrap it (:func:`with_observers`, :func:`with_refresh`), and
    ``kernel="flow"`` gives :class:`~smc_ebm.FlowJarzynski`.
    """
    check_kernel(kernel, (*KERNEL_NAMES, "flow"))
    if kernel == "flow":
        kw.setdefault("feedback_correction", "auto")
        return _flow(FlowJarzynski, num_walkers, step_size, resampling, kw)
    options = {k: kw.pop(k) for k in _OPTION_KEYWORDS if k in kw}
    unknown = set(kw) - {f.name for f in dataclasses.fields(cls)}
    flow_options = unknown & {f.name for f in dataclasses.fields(FlowJarzynski)}
    if flow_options:
        raise ValueError(
            f"Jarzynski got unexpected keyword(s) {', '.join(sorted(flow_options))}; flow "
            "options need kernel='flow'"
        )
    if unknown:
        raise TypeError(
            f"Jarzynski got unexpected keyword argument(s) {', '.join(sorted(unknown))}"
        )
    resampling = ESSResampling() if resampling is None else resampling
    core = build(num_walkers, step_size, kernel=kernel, resampling=resampling, **kw)
    n_obs, reseed = int(options.get("num_observers", 0)), int(options.get("reseed_every", 0))
    if n_obs < 0 or n_obs == 1:
        raise ValueError(f"num_observers must be 0 or >= 2; got {n_obs}.")
    if reseed < 0:
        raise ValueError(f"reseed_every must be >= 0; got {reseed}.")
    if reseed and not n_obs:
        raise ValueError("reseed_every needs observers to reseed from (num_observers >= 2).")
    observer_kernel = options.get("observer_kernel", "mala")
    if observer_kernel not in KERNEL_NAMES:
        raise ValueError(f"observer_kernel must be one of {KERNEL_NAMES}; got {observer_kernel!r}.")
    refresh_every = int(options.get("refresh_every", 0))
    if refresh_every < 0:
        raise ValueError(f"refresh_every must be >= 0; got {refresh_every}.")
    strategy = core
    if refresh_every:
        strategy = with_refresh(
            strategy, refresh_every, options.get("num_refresh"), options.get("refresh_steps")
        )
    if n_obs:
        strategy = with_observers(strategy, n_obs, observer_kernel, reseed_every=reseed)
    return strategy


def _flow(cls, num_walkers, step_size, resampling, kw):
    unsupported = {
        "walker_batch": kw.pop("walker_batch", None) is not None,
        "walker_grad": kw.pop("walker_grad", "all") != "all",
        "anneal_base": kw.pop("anneal_base", None) is not None,
        "num_observers": kw.pop("num_observers", 0) != 0,
        "reseed_every": kw.pop("reseed_every", 0) != 0,
        "refresh_every": kw.pop("refresh_every", 0) != 0,
        "feedback_correction_from": kw.pop("feedback_correction_from", 0) != 0,
        "feedback_estimator": kw.pop("feedback_estimator", "probe") != "probe",
    }
    for name in ("observer_kernel", "num_refresh", "refresh_steps", "num_anneal"):
        kw.pop(name, None)
    bad = [name for name, given in unsupported.items() if given]
    if bad:
        raise ValueError(f"Jarzynski(kernel='flow') does not support {', '.join(bad)}")
    return cls(num_walkers, step_size=step_size, resampling=resampling, **kw)
