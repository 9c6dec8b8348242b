r"""Dual (two-time-scale) training with walker restarts at data (DESIGN 1.4).

Domingo-Enrich, Bietti, Gabrié, Bruna & Vanden-Eijnden, "Dual training of energy-based models
with overparametrized shallow neural networks". Walkers follow the model by (projected)
Langevin moves with time step ``s``; the neurons move by the Wasserstein-Fisher-Rao step with
time step ``s * alpha`` (:func:`smc_ebm.optim.wfr`, from :meth:`Dual.optimizer`). ``alpha << 1``
is the classical primal regime (the walkers equilibrate between parameter updates),
``alpha >> 1`` the dual regime. Each walker is replaced by a random data point with
probability ``p_R`` per step: ``p_R = 0`` is maximum likelihood, ``p_R = s alpha`` (capped at 1)
score matching, values in between interpolate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray

from smc_ebm._wfr import wfr
from smc_ebm.kernels import evaluate_uniform
from smc_ebm.manifolds import Euclidean, ProjectedLangevin, manifold_of
from smc_ebm.strategies._base import (
    AbstractStrategy,
    ModelTerm,
    StepInfo,
    WalkerState,
    check_init_array,
    reads_walker_fields,
    walker_checks,
)


class DualState(NamedTuple):
    """Unweighted walkers of :class:`Dual` and the restart bookkeeping.

    Attributes:
        walkers: :class:`~smc_ebm.strategies.WalkerState` (zero log-weights, no log Z); its
            fields (``position``, ``energy``, ``grad``, ``param_grad``, ...) read through.
        step: ``()`` number of steps done (drives ``restart_prob`` schedules).
        restarts: ``()`` number of walkers restarted at data in the last step.
    """

    walkers: WalkerState
    step: Array
    restarts: Array


reads_walker_fields(DualState)


def _beta(energy: Any) -> float:
    return float(getattr(energy, "beta", 1.0))


@dataclasses.dataclass(frozen=True)
class Dual(AbstractStrategy):
    r"""Two-time-scale training: Langevin walkers, WFR neurons, restarts at data.

    At each step ``k`` (``fit`` drives it):

    1. model term ``mean_walkers dU_k/dtheta`` from the walkers (cached), data term from the
       batch, and the neuron step by the optimizer (:meth:`optimizer`: the WFR step with
       learning rate ``s alpha / beta``);
    2. restarts: each walker is replaced by a random point of the data batch with probability
       ``p_R`` (``restart_prob``, or every walker every ``restart_every`` steps);
    3. one Langevin move with the OLD parameters on the energy's manifold
       (:func:`smc_ebm.manifolds.manifold_of`), for the density :math:`e^{-\beta f}`,
       ``U = beta f``: :math:`X \leftarrow \mathrm{proj}(X - s\nabla f(X) + \sqrt{2s/\beta}\,\xi)`,
       i.e. a step ``h = s / beta`` on ``U``; on the sphere the gradient and noise are projected
       onto the tangent space.

    The walkers carry no weights (``log_Z`` is NaN). ``history["resampled"]`` counts the walkers
    restarted since the previous record.

    Args:
        num_walkers: number of walkers ``N >= 2``.
        step_size: the time step ``s`` of the walkers (in units of ``f``, see above).
        alpha: the neurons' time step relative to the walkers' (``<< 1`` primal, ``>> 1`` dual);
            it enters through :meth:`optimizer` and ``restart_prob="score_matching"``.
        restart_prob: ``p_R`` in ``[0, 1]``, a schedule ``step -> p_R`` (jittable, e.g. an
            optax schedule), or ``"score_matching"`` for ``min(s alpha, 1)``.
        restart_every: restart every walker every this many steps (instead of
            ``restart_prob``).
        init: ``"uniform"`` (the uniform distribution of the manifold: the model with
            ``f = 0``), ``"data"``, ``"model"`` (``energy.sample``), or an ``(N, d)`` array.
        radius: F1-norm cap used by :meth:`optimizer`.

    :meth:`optimizer` needs a shallow energy (fields ``theta`` and ``w``, such as
    :class:`~smc_ebm.energies.ShallowReLU`); with other energies ``Dual`` is persistent
    Langevin walkers with restarts, and any optax optimizer can be passed to ``fit``.

    Example:
        >>> import jax, smc_ebm as se
        >>> data = se.datasets.sphere_teacher(jax.random.key(0), 2000, 5, angle=1.37)
        >>> energy = se.energies.ShallowReLU(5, 16, key=jax.random.key(1), beta=10.0)
        >>> dual = se.Dual(1000, step_size=0.02, alpha=20.0)
        >>> res = se.fit(energy, data.samples, strategy=dual, optimizer=dual.optimizer(energy),
        ...              num_steps=50, key=jax.random.key(2), progress=False)
    """

    num_walkers: int
    _: dataclasses.KW_ONLY
    step_size: float
    alpha: float
    restart_prob: float | str | Callable[[Array], Array] = 0.0
    restart_every: int | None = None
    init: Any = "uniform"
    radius: float | None = 1.0

    def __post_init__(self) -> None:
        if int(self.num_walkers) < 2:
            raise ValueError(f"num_walkers must be >= 2; got {self.num_walkers}.")
        for name in ("step_size", "alpha"):
            v = float(getattr(self, name))
            if not v > 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a positive finite number; got {v}.")
        p = self.restart_prob
        if isinstance(p, str):
            if p != "score_matching":
                raise ValueError(
                    f"restart_prob must be a number in [0, 1], a schedule or 'score_matching'; "
                    f"got {p!r}."
                )
        elif not callable(p) and not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"restart_prob must be in [0, 1]; got {p}.")
        if self.restart_every is not None:
            if int(self.restart_every) < 1:
                raise ValueError(f"restart_every must be >= 1; got {self.restart_every}.")
            if callable(p) or isinstance(p, str) or float(p) != 0.0:
                raise ValueError("give either restart_prob or restart_every, not both.")
        if isinstance(self.init, str) and self.init not in ("uniform", "data", "model"):
            raise ValueError(
                f"init must be 'uniform', 'data', 'model' or an array; got {self.init!r}."
            )

    # ----------------------------------------------------------------------------------
    def optimizer(self, energy: Any) -> optax.GradientTransformation:
        r"""The WFR neuron step with learning rate ``s alpha / beta`` and the F1 cap.

        With it, ``theta_j += s alpha sigma_j grad F(theta_j)`` and
        ``w_j *= exp(s alpha sigma_j F(theta_j))`` (see :func:`smc_ebm.optim.wfr`).
        """
        return wfr(
            self.step_size * self.alpha / _beta(energy),
            radius=self.radius,
            manifold=manifold_of(energy),
        )

    def restart_probability(self, step: Array) -> Array:
        """``p_R`` at optimizer step ``step``."""
        p = self.restart_prob
        if self.restart_every is not None:
            return jnp.where((step + 1) % int(self.restart_every) == 0, 1.0, 0.0)
        if isinstance(p, str):
            return jnp.asarray(min(self.step_size * self.alpha, 1.0))
        if callable(p):
            return jnp.clip(jnp.asarray(p(step)), 0.0, 1.0)
        return jnp.asarray(float(p))

    def validate(self, dim: int, n_data: int) -> None:
        check_init_array(self.init, self.num_walkers, dim)

    def init_state(
        self, key: PRNGKeyArray, energy: Any, data: Array, log_Z0: Array | None
    ) -> DualState:
        manifold = manifold_of(energy)
        n = int(self.num_walkers)
        if not isinstance(self.init, str):
            x = jnp.asarray(self.init, data.dtype)
        elif self.init == "uniform":
            if isinstance(manifold, Euclidean):
                raise ValueError(
                    "init='uniform' needs a compact manifold (e.g. the sphere of ShallowReLU); "
                    "use init='data' or 'model' for energies on R^d."
                )
            x = manifold.uniform(key, n, data.shape[1]).astype(data.dtype)
        elif self.init == "data":
            x = data[jax.random.choice(key, data.shape[0], (n,), replace=n > data.shape[0])]
        else:
            if not getattr(energy, "can_sample", False):
                raise ValueError(
                    f"init='model' needs an energy that samples itself; "
                    f"{type(energy).__name__} does not."
                )
            x = jnp.asarray(energy.sample(key, n), data.dtype)
        x = manifold.project(x)
        u, g, pgrad = jax.jit(evaluate_uniform)(energy, x)
        zero = jnp.zeros((), data.dtype)
        walkers = WalkerState(x, u, g, jnp.zeros(n, data.dtype), zero, pgrad, jnp.mean(u))
        return DualState(walkers, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    # ----------------------------------------------------------------------------------
    def model_term(self, key, state, energy, batch):
        """Model term from the cached walkers, then restart some walkers at the batch."""
        model_grad, model_energy = state.param_grad, state.model_energy
        state = self.restart(key, state, energy, batch)
        one, nan = jnp.asarray(1.0, model_energy.dtype), jnp.asarray(jnp.nan, model_energy.dtype)
        return state, ModelTerm(model_grad, model_energy, one, nan)

    def restart(self, key: PRNGKeyArray, state: DualState, energy: Any, batch: Array) -> DualState:
        """Replace each walker by a random point of ``batch`` with probability ``p_R``.

        The energy and gradient of the restarted walkers are recomputed (one pass over all
        walkers, skipped when none restarts).
        """
        ku, ki = jax.random.split(key)
        n = state.position.shape[0]
        p = self.restart_probability(state.step).astype(state.position.dtype)
        mask = jax.random.uniform(ku, (n,), state.position.dtype) < p
        idx = jax.random.randint(ki, (n,), 0, batch.shape[0])
        x = jnp.where(mask[:, None], batch[idx], state.position)

        def reevaluate():
            u, g = jax.vmap(jax.value_and_grad(energy))(x)
            return u, g

        u, g = jax.lax.cond(jnp.any(mask), reevaluate, lambda: (state.energy, state.grad))
        walkers = state.walkers._replace(position=x, energy=u, grad=g)
        return state._replace(walkers=walkers, restarts=jnp.sum(mask).astype(jnp.int32))

    def step(self, key, state, energy_old, energy_new, step):
        """One Langevin move with the old energy on its manifold; evaluate at the new one.

        ``StepInfo.resampled`` counts the walkers restarted at data in this step.
        """
        kernel = ProjectedLangevin(manifold_of(energy_old), self.step_size / _beta(energy_old))
        x, _ = kernel.move(key, state.walkers.population.walkers, energy_old)
        u, g, pgrad = evaluate_uniform(energy_new, x)
        w = state.walkers
        walkers = WalkerState(x, u, g, w.log_weights, w.log_Z_anchor, pgrad, jnp.mean(u))
        state = DualState(walkers, state.step + 1, state.restarts)
        info = StepInfo(state.restarts, jnp.asarray(1.0, u.dtype), walker_checks(walkers))
        return state, info
