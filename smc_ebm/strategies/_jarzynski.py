r"""Jarzynski-weighted walkers: Algorithms 1 and 2 of Carbone, Hua, Coste & Vanden-Eijnden (2023).

Algorithm 1 is :func:`smc_ebm.smc.step` (move with the old parameters, one evaluation at the
new ones, Jarzynski or AIS increment, ESS-adaptive resampling); :class:`Jarzynski` applies it to
persistent walkers and reads the model term of the gradient off the weighted walkers.
Algorithm 2 (:func:`move_batch`) moves a random batch of the walkers per step; the frozen ones
get the AIS increment :math:`U_k(X) - U_{k+1}(X)`.

The research options (observers, reseeding, refreshing, the feedback correction) are parts
that wrap this strategy or its optimizer: see :mod:`smc_ebm.strategies._options` and
:mod:`smc_ebm.strategies._feedback`. The keywords of the first interface
(``se.Jarzynski(..., num_observers=M)``) still build those compositions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from smc_ebm._naming import RenamedArguments, renamed, translate
from smc_ebm.kernels import Kernel, KernelState, energies, evaluate, make_kernel
from smc_ebm.smc import (
    ESSResampling,
    IntervalResampling,
    NoResampling,
    ais_increment,
    default_increment,
    ess_fraction,
    log_mean_exp,
    normalized_weights,
    resample,
    take_ancestors,
)
from smc_ebm.smc import step as smc_step
from smc_ebm.strategies._base import (
    AbstractStrategy,
    ModelTerm,
    StepInfo,
    WalkerState,
    check_feedback_correction,
    walker_checks,
)
from smc_ebm.strategies._feedback import FeedbackCorrection
from smc_ebm.strategies._start import (
    anchor_of,
    check_euclidean,
    check_walkers,
    default_base,
    evaluate_state_jit,
    validate_init,
    walker_start,
)


@renamed()
def move_batch(key, state, energy_old, energy_new, kernel, num_batch, every, weighted):
    """Algorithm 2: move ``num_batch`` random walkers; the others get the frozen increment.

    With ``every`` (``walker_grad="all"``) every walker is evaluated (energy and x-gradient)
    at the new parameters for the gradient anyway, so the state's energies and gradients are
    current for all walkers at the next step: the moved batch takes them from the state, and
    that one evaluation also gives the batch's new energies and gradients. Otherwise the frozen
    walkers' stored gradients are stale (from their last move), so the batch is evaluated at
    the old parameters before its move and at the new ones after it, and all walkers get a
    forward pass for the frozen increment.

    Returns ``(x, u, g, a, model_grad, model_energy, acceptance, grad_weights)``.
    """
    kb, km = jax.random.split(key)
    x, a = state.position, state.log_weights
    n = x.shape[0]
    idx = jax.random.choice(kb, n, (num_batch,), replace=False)
    xb = x[idx]
    if every:
        ub, gb = state.energy[idx], state.grad[idx]
    else:
        ub, gb, _ = evaluate(energy_old, xb)
    old = KernelState(xb, ub, gb)
    xb_new, move = kernel.move(km, old, energy_old)
    x_new = x.at[idx].set(xb_new)
    if every:
        u_new, g_new, pgrad_all = evaluate(energy_new, x_new)
        ub_new, gb_new = u_new[idx], g_new[idx]
    else:
        ub_new, gb_new, pgrad_b = evaluate(energy_new, xb_new)
        g_new = state.grad.at[idx].set(gb_new)
        u_new = energies(energy_new, x_new)
    if weighted:
        inc_b = default_increment(kernel)(kernel, old, KernelState(xb_new, ub_new, gb_new), move)
        a = (a + ais_increment(state.energy, u_new)).at[idx].set(a[idx] + inc_b)
    gw = None
    if every:
        p = normalized_weights(a) if weighted else jnp.full_like(a, 1.0 / n)
        pgrad, model_energy = pgrad_all(p), jnp.sum(p * u_new)
        gw = p if weighted else None
    else:
        uniform = jnp.full((num_batch,), 1.0 / num_batch, a.dtype)
        pb = jax.nn.softmax(a[idx]) if weighted else uniform
        pgrad, model_energy = pgrad_b(pb), jnp.sum(pb * ub_new)
        gw = jnp.zeros_like(a).at[idx].set(pb) if weighted else None
    return x_new, u_new, g_new, a, pgrad, model_energy, jnp.mean(move.acceptance), gw


class _BuildsOptions(RenamedArguments):
    """``Jarzynski(...)`` with keywords of the first interface builds their composition.

    The keywords: ``num_observers``, ``reseed_every``, ``refresh_every``, ``kernel="flow"``.
    """

    def __call__(cls, *args, **kwargs):
        if cls is not Jarzynski:
            return super().__call__(*args, **kwargs)
        from smc_ebm.strategies._options import compose  # the wrappers wrap this class

        return compose(cls, super().__call__, *args, **translate("Jarzynski()", kwargs))


@dataclasses.dataclass(frozen=True)
class Jarzynski(AbstractStrategy, metaclass=_BuildsOptions):
    r"""Jarzynski-weighted walkers (Carbone et al., 2023, Algorithms 1 and 2).

    Each step moves the walkers with the OLD parameters and updates their log-weights
    with the Jarzynski increment (ULA) or the AIS increment (MALA), so the weighted
    walkers are exact for the current model at every step, and
    :math:`\log Z_k = \log Z_0 + \log \overline{e^{A_k}}` (re-anchored at each resampling).

    Args:
        num_walkers: number of walkers ``N >= 2``.
        step_size: Langevin step ``h > 0``.
        kernel: ``"ula"`` (Jarzynski increments), ``"mala"`` (AIS increments, blackjax), or
            ``"flow"``: :class:`~smc_ebm.FlowJarzynski` (flow i-SIR and MALA moves with AIS
            weights; ``step_size`` is then MALA's initial step, and the remaining keywords
            are those of :class:`~smc_ebm.FlowMC`), or a :class:`~smc_ebm.kernels.Kernel`,
            e.g. ``se.kernels.Repeated(se.kernels.MALA(h), 4)``: four MALA steps a move.
        walker_batch: move only this many walkers per step (Algorithm 2); the frozen ones
            get :math:`A \mathrel{+}= U_k(X) - U_{k+1}(X)`.
        walker_grad: with ``walker_batch``, estimate the model term from ``"all"`` walkers
            (weighted) or from the moved ``"batch"`` (self-normalised weights).
        resampling: :class:`ESSResampling` (default threshold 0.5, systematic),
            :class:`IntervalResampling` or :class:`NoResampling`.
        init: ``"model"`` (exact samples when the energy can sample itself or is a
            :class:`Tilted` with a zero net, otherwise annealed from ``anneal_base`` in
            ``num_anneal`` weighted steps), ``"data"``, or an ``(N, d)`` array.
        num_anneal: annealing steps for ``init="model"`` when no exact sampler exists.
        anneal_base: the annealing base (an energy with ``sample`` and ``log_partition``;
            default: the data's moment-matched diagonal Gaussian, scales floored at
            ``sqrt(step_size)`` so that its Langevin moves are stable).
        feedback_correction: ``"auto"`` (default), ``True``, ``False`` or ``"local"``: the
            first-order correction of the walkers' influence on their own weights through the
            parameter update, an update rule around the optimizer
            (:class:`~smc_ebm.strategies.FeedbackCorrection`, docs/maths.md §2.6).
            ``"auto"`` applies it when the optimizer's update is linear in the gradient
            (SGD, momentum, per-field SGD) and skips it otherwise; ``True`` also warns when
            it skips; ``"local"`` linearises any optimizer (e.g. Adam) at the current state.
        feedback_correction_from: the first step at which the correction applies.
        feedback_estimator: ``"probe"`` (one Rademacher probe, cheap) or ``"exact"``
            (per-walker parameter gradients, memory ``walkers x parameters``).

    Keywords of the first interface, which build compositions (see
    :func:`~smc_ebm.strategies.with_observers`, :func:`~smc_ebm.strategies.with_refresh`):
    ``num_observers``, ``observer_kernel``, ``reseed_every``, ``refresh_every``, ``num_refresh``,
    ``refresh_steps``.

    Example:
        >>> import smc_ebm as se
        >>> strategy = se.Jarzynski(num_walkers=1000, step_size=0.1,
        ...                         resampling=se.ESSResampling(0.5, "systematic"))
    """

    num_walkers: int = 1000
    step_size: float = 0.1
    kernel: str | Kernel = "ula"
    walker_batch: int | None = None
    walker_grad: str = "all"
    resampling: ESSResampling | IntervalResampling | NoResampling = dataclasses.field(
        default_factory=ESSResampling
    )
    init: Any = "model"
    num_anneal: int = 200
    anneal_base: Any = None
    feedback_correction: bool | str = "auto"
    feedback_correction_from: int = 0
    feedback_estimator: str = "probe"

    weighted = True

    def __post_init__(self) -> None:
        check_walkers(self)
        check_feedback_correction(self.feedback_correction)
        if int(self.feedback_correction_from) < 0:
            raise ValueError(
                f"feedback_correction_from must be >= 0; got {self.feedback_correction_from}."
            )
        if self.feedback_estimator not in ("probe", "exact"):
            raise ValueError(
                f"feedback_estimator must be 'probe' or 'exact'; got {self.feedback_estimator!r}."
            )

    @property
    def minibatched(self) -> bool:
        """Whether only ``walker_batch < num_walkers`` walkers move per step (Algorithm 2)."""
        return self.walker_batch is not None and self.walker_batch < self.num_walkers

    @property
    def moved_fraction(self) -> float:
        return self.walker_batch / self.num_walkers if self.minibatched else 1.0

    def validate(self, dim: int, n_data: int) -> None:
        validate_init(self.init, self.num_walkers, dim)

    def base(self, data):
        """The annealing base for ``data`` (:func:`default_base`)."""
        return default_base(data, self.step_size, self.anneal_base)

    def start(self, key, energy, data, n, init=None):
        """``n`` walkers from ``init`` (default: the strategy's own).

        Returns ``(x, log_weights, log Z_0 estimate or None)``. ``init="model"`` gives a
        weighted sample of the model whatever the strategy's ``init``: the start of observers
        (:func:`~smc_ebm.strategies.with_observers`), which must sample the model even where
        the walkers themselves start at the data.
        """
        return walker_start(self, key, energy, data, n, init)

    def init_state(self, key, energy, data, log_Z0):
        check_euclidean(energy)
        k_walk, _ = jax.random.split(key)
        x, a, log_z_est = self.start(k_walk, energy, data, self.num_walkers)
        if log_Z0 is None:
            log_Z0 = log_z_est if log_z_est is not None else jnp.asarray(0.0, data.dtype)
        log_Z0 = jnp.asarray(log_Z0, data.dtype)
        return evaluate_state_jit(energy, x, a, anchor_of(log_Z0, a), True)

    def ess_and_log_Z(self, state):
        return ess_fraction(state.log_weights), state.log_Z_anchor + log_mean_exp(state.log_weights)

    def model_term(self, key, state, energy, batch):
        ess, log_z = self.ess_and_log_Z(state)
        return state, ModelTerm(state.param_grad, state.model_energy, ess, log_z)

    def step(self, key, state, energy_old, energy_new, step):
        kernel = make_kernel(self.kernel, self.step_size)
        if not self.minibatched:  # Algorithm 1
            population, info = smc_step(
                key,
                state.population,
                energy_old,
                energy_new,
                kernel,
                None,
                self.resampling,
                step + 1,
            )
            (grad_weights,) = take_ancestors(info.resampled, info.ancestors, info.weights)
            new = WalkerState(*population, info.model_grad, info.model_energy, grad_weights)
            certified = not kernel.invariant  # the Jarzynski increment reads every coordinate
            return new, StepInfo(info.resampled, info.acceptance, walker_checks(new, certified))
        k_move, k_res = jax.random.split(key)  # Algorithm 2
        every = self.walker_grad == "all"
        x, u, g, a, pgrad, model_energy, acc, gw = move_batch(
            k_move, state, energy_old, energy_new, kernel, int(self.walker_batch), every, True
        )
        do = self.resampling.should_resample(step + 1, ess_fraction(a))
        population, idx = resample(
            do,
            k_res,
            WalkerState(x, u, g, a, state.log_Z_anchor, None, None).population,
            self.resampling.method,
        )
        (gw,) = take_ancestors(do, idx, gw)
        new = WalkerState(*population, pgrad, model_energy, gw)
        return new, StepInfo(do, acc, walker_checks(new))

    def update_rule(self):
        if self.feedback_correction is False:
            return None
        n_grad = self.num_walkers
        if self.minibatched and self.walker_grad == "batch":
            n_grad = int(self.walker_batch)
        return FeedbackCorrection(
            mode=self.feedback_correction,
            start=int(self.feedback_correction_from),
            estimator=self.feedback_estimator,
            num_active=n_grad,
        )
