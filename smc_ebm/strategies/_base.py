"""The strategy interface: pure ``(init_state, negative_phase, advance)`` over NamedTuples."""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.energies._conv import energy_l2_grad
from smc_ebm.energies._tilted import Tilted
from smc_ebm.kernels._evaluate import mean_param_grad


class WalkerState(NamedTuple):
    """Population of walkers following the moving target.

    Attributes:
        position: ``(N, d)`` walker positions ``X``.
        energy: ``(N,)`` cached ``U_theta(X)`` at the current parameters.
        grad: ``(N, d)`` cached ``grad_x U_theta(X)`` (stale for frozen walkers in
            mini-batched mode, where it is recomputed before each move).
        log_weights: ``(N,)`` log-weights ``A`` (all zero for unweighted strategies).
        log_Z_anchor: ``()`` log Z at the last resampling (or log Z_0).
        param_grad: pytree, the walkers' estimate of ``E_rho_theta[dU/dtheta]`` at the
            current parameters, computed in the same pass as ``energy`` and ``grad``.
        model_energy: ``()`` the weighted mean of ``energy``.
        observers: an optional independent :class:`ObserverState` that follows the same
            parameter path but never enters the gradient (an unbiased log Z estimator).
        grad_weights: ``(N,)`` the weight with which each walker's position entered
            ``param_grad`` (for the feedback correction); ``None`` when not tracked.
        refresh_base: the base energy that refreshed walkers are annealed from
            (``Walkers.refresh_every``); ``None`` when walkers are not refreshed.
    """

    position: Float[Array, "N d"]
    energy: Float[Array, " N"]
    grad: Float[Array, "N d"]
    log_weights: Float[Array, " N"]
    log_Z_anchor: Float[Array, ""]
    param_grad: Any
    model_energy: Float[Array, ""]
    observers: Any = None
    grad_weights: Any = None
    refresh_base: Any = None


class ObserverState(NamedTuple):
    """Weighted walkers that follow the parameter path without driving it.

    The gradient of step ``k`` depends on the driving walkers, so their Jarzynski weights
    see a parameter path that reacts to their own noise; the resulting log Z estimate
    drifts by about ``-tr(P Cov(m))`` per step (``P`` the optimizer's step matrix, ``m``
    the walkers' estimate of ``E[dU/dtheta]``). Observers are exact for the (given) path.
    Fields as in :class:`WalkerState`.
    """

    position: Float[Array, "M d"]
    energy: Float[Array, " M"]
    grad: Float[Array, "M d"]
    log_weights: Float[Array, " M"]
    log_Z_anchor: Float[Array, ""]


class StepInfo(NamedTuple):
    """Diagnostics of one optimizer step (all scalars).

    Attributes:
        ess: normalised ESS of the walkers' weights at the current parameters.
        log_Z: running estimate of log Z at the current parameters (NaN when the strategy
            carries no weights).
        resampled: whether the walkers were resampled after the move.
        acceptance: mean acceptance probability of the moves (1 for ULA).
    """

    ess: Float[Array, ""]
    log_Z: Float[Array, ""]
    resampled: Array
    acceptance: Float[Array, ""]


class AbstractStrategy(abc.ABC):
    """A way of estimating the model term ``E_rho_theta[dU/dtheta]`` of the gradient.

    ``fit`` calls, at each optimizer step ``k``:

    1. ``negative_phase(key, state, energy_k, batch) -> (state, model_grad, model_energy,
       ess, log_Z)``;
    2. the optimizer on ``D_k = mean_batch dU/dtheta - model_grad``;
    3. ``advance(key, state, energy_k, energy_{k+1}, k) -> (state, resampled, acceptance)``.

    Strategies with a loss of their own (score matching) override :meth:`gradient`.
    """

    weighted: bool = False

    @property
    def weights_certify_walkers(self) -> bool:
        """Whether finite log-weights imply finite positions and gradients of the walkers.

        ``fit`` checks every quantity of the state after every step. When this is true it
        checks the ``(N,)`` energies and log-weights but not the ``(N, d)`` positions and
        gradients, which the strategy's weight increment has already read: a non-finite entry
        in either makes that walker's increment non-finite. False by default.
        """
        return False

    @abc.abstractmethod
    def validate(self, dim: int, n_data: int) -> None:
        """Raise ``ValueError`` for inconsistent hyperparameters."""

    @abc.abstractmethod
    def init_state(
        self, key: PRNGKeyArray, energy: eqx.Module, data: Array, log_Z0: Array
    ) -> WalkerState:
        """Initial walkers, evaluated at the initial parameters."""

    @abc.abstractmethod
    def negative_phase(
        self, key: PRNGKeyArray, state: WalkerState, energy: eqx.Module, batch: Array
    ) -> tuple[WalkerState, Any, Array]:
        """Return ``(state, E_model[dU/dtheta] estimate, E_model[U] estimate)``."""

    @abc.abstractmethod
    def advance(
        self,
        key: PRNGKeyArray,
        state: WalkerState,
        energy_old: eqx.Module,
        energy_new: eqx.Module,
        step: Array,
        correction: Array | None = None,
    ) -> tuple[WalkerState, Array, Array]:
        """Follow the target from ``energy_old`` to ``energy_new``: ``(state, resampled, acc)``.

        ``correction`` (``(N,)``, optional) is added to the log-weight increments.
        """

    def ess_and_log_Z(self, state: WalkerState) -> tuple[Array, Array]:
        """Normalised ESS and log Z estimate of the current state."""
        return jnp.asarray(1.0), jnp.asarray(jnp.nan)

    def gradient(
        self, key: PRNGKeyArray, state: WalkerState, energy: eqx.Module, batch: Array
    ) -> tuple[WalkerState, Any, Array, Array]:
        """Contrastive gradient ``D = mean_batch dU/dtheta - model_grad``.

        Returns ``(state, D, loss, data_energy)`` with ``loss = mean_batch U - E_model[U]``.
        """
        data_energy, data_grad = mean_param_grad(energy, batch)
        state, model_grad, model_energy = self.negative_phase(key, state, energy, batch)
        grad = jax.tree.map(lambda a, b: a - b, data_grad, model_grad)
        if getattr(energy, "l2_penalty", 0.0):  # static: energies with an energy penalty
            x, a = self.walkers(state)
            w = jax.nn.softmax(a) if self.weighted else jnp.full_like(a, 1.0 / a.shape[0])
            pen_grad, _ = energy_l2_grad(energy, batch, x, w)
            grad = jax.tree.map(lambda a, b: a + b, grad, pen_grad)
        return state, grad, data_energy - model_energy, data_energy

    def walkers(self, state: WalkerState) -> tuple[Array, Array]:
        """Final ``(positions (N, d), log_weights (N,))``."""
        return state.position, state.log_weights


def check_init_array(init: Any, n_walkers: int, dim: int) -> None:
    """Raise ``ValueError`` unless an explicit ``init`` array has shape ``(n_walkers, dim)``.

    A string ``init`` (a named start) passes; each strategy validates its own names.
    """
    if not isinstance(init, str):
        shape = np.shape(init)
        if shape != (n_walkers, dim):
            raise ValueError(
                f"init array must have shape (n_walkers, dim) = ({n_walkers}, {dim}); got {shape}."
            )


FEEDBACK_CORRECTIONS = (True, False, "auto", "local")


def check_feedback_correction(value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is one of :data:`FEEDBACK_CORRECTIONS`."""
    if value not in FEEDBACK_CORRECTIONS:
        raise ValueError(
            f"feedback_correction must be True, False, 'auto' or 'local'; got {value!r}."
        )


def exact_start(
    key: PRNGKeyArray, energy: Any, data: Float[Array, "n d"], init: Any, n: int
) -> Float[Array, "N d"] | None:
    """``n`` starting positions that need no weights, or ``None`` when none applies.

    In order: an explicit ``(n, d)`` array, ``init="data"`` (data points, with replacement
    when ``n`` exceeds the data), the energy's own exact sampler (``can_sample``), or the base
    of a :class:`Tilted` energy whose net is zero (checked on up to 256 data points).
    """
    if not isinstance(init, str):
        return jnp.asarray(init, data.dtype)
    if init == "data":
        idx = jax.random.choice(key, data.shape[0], (n,), replace=n > data.shape[0])
        return data[idx]
    if getattr(energy, "can_sample", False):
        return energy.sample(key, n).astype(data.dtype)
    if isinstance(energy, Tilted) and energy.net_is_zero(data[: min(256, data.shape[0])]):
        return energy.sample_base(key, n).astype(data.dtype)
    return None
