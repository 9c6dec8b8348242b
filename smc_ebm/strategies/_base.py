"""The strategy protocol: ``init_state``, ``model_term`` and ``step`` over NamedTuple states."""

from __future__ import annotations

import abc
import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm._naming import OldAttributes, RenamedArguments
from smc_ebm.energies import energy_l2_grad
from smc_ebm.kernels import mean_param_grad
from smc_ebm.smc import Population, normalized_weights, row_sum


class WalkerState(NamedTuple):
    """Persistent walkers following the moving target (Jarzynski, PCD, Unweighted).

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
        grad_weights: ``(N,)`` the weight with which each walker's position entered
            ``param_grad`` (read by the feedback correction); ``None`` for unweighted walkers.
    """

    position: Float[Array, "N d"]
    energy: Float[Array, " N"]
    grad: Float[Array, "N d"]
    log_weights: Float[Array, " N"]
    log_Z_anchor: Float[Array, ""]
    param_grad: Any
    model_energy: Float[Array, ""]
    grad_weights: Any = None

    @property
    def population(self) -> Population:
        """The weighted population (:class:`smc_ebm.smc.Population`) of these walkers."""
        return Population(*self[:5])


def reads_walker_fields(cls: type, walkers: Any = None) -> type:
    """Give the state class ``cls`` a read-only property for each :class:`WalkerState` field.

    Each reads the field from ``walkers(state)`` (default: ``state.walkers``): a strategy whose
    state wraps a :class:`WalkerState` reads like one.
    """
    get = (lambda s: s.walkers) if walkers is None else walkers
    for name in WalkerState._fields:
        setattr(cls, name, property(lambda s, _n=name: getattr(get(s), _n)))
    return cls


class ModelTerm(NamedTuple):
    """A strategy's estimate of the model term of the gradient, at the current parameters.

    Attributes:
        grad: pytree shaped like the energy's trainable arrays, ``E_rho[dU/dtheta]``.
        energy: ``()`` ``E_rho[U]``.
        ess: ``()`` normalised ESS of the walkers' weights (1 without weights).
        log_Z: ``()`` running estimate of log Z (NaN when the strategy has no weights).
    """

    grad: Any
    energy: Float[Array, ""]
    ess: Float[Array, ""]
    log_Z: Float[Array, ""]


class StepInfo(NamedTuple):
    """What a strategy's :meth:`~AbstractStrategy.step` reports (all scalars).

    Attributes:
        resampled: whether the walkers were resampled.
        acceptance: mean acceptance probability of the moves (1 for ULA).
        finite: ``{quantity: bool}``, in the order in which ``fit`` reports them, whether each
            quantity of the new state is finite (e.g. ``"walker log-weights"``).
    """

    resampled: Array
    acceptance: Float[Array, ""]
    finite: dict[str, Array]


def all_finite(tree: Any) -> Array:
    """Whether every inexact array entry of ``tree`` is finite, from one sum per array.

    ``x * 0`` is 0 where ``x`` is finite and NaN where it is not (inf or NaN), so its sum is
    finite exactly when every entry is: unlike ``all(isfinite(x))`` this writes no boolean
    array of the size of ``x`` (the walkers' positions and gradients are checked every step).
    The rows are summed by :func:`smc_ebm.smc.row_sum` (on CPU a product with ones,
    faster there than XLA's fused reduction), then their sums.
    """

    def one(x):
        z = x * jnp.zeros((), x.dtype)
        if z.ndim and z.size:
            z = row_sum(z.reshape(-1, z.shape[-1]))
        return jnp.isfinite(jnp.sum(z))

    leaves = [one(x) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def walker_checks(state: WalkerState, certified: bool = False) -> dict[str, Array]:
    r"""The finiteness checks of walkers, in ``fit``'s order.

    With ``certified`` (weighted ULA walkers that all moved) the ``(N, d)`` positions and
    gradients are read only when the log-weights are not finite: the Jarzynski increment reads
    every coordinate of both, so a non-finite one has made its walker's log-weight non-finite,
    and the conditional finds which (the gradient comes first in the report).
    """
    weights_ok = all_finite((state.log_weights, state.log_Z_anchor))
    if certified:
        grad_ok = jax.lax.cond(
            weights_ok, lambda: jnp.asarray(True), lambda: all_finite(state.grad)
        )
        position_ok = jax.lax.cond(
            weights_ok, lambda: jnp.asarray(True), lambda: all_finite(state.position)
        )
    else:
        grad_ok, position_ok = all_finite(state.grad), all_finite(state.position)
    return {
        "energy of the walkers": all_finite(state.energy),
        "gradient of the walkers' energy": grad_ok,
        "walker log-weights": weights_ok,
        "walker positions": position_ok,
        "model term of the gradient": all_finite(state.param_grad),
    }


class AbstractStrategy(OldAttributes, metaclass=RenamedArguments):
    """A way of estimating the model term ``E_rho_theta[dU/dtheta]`` of the gradient.

    The protocol (``fit`` uses nothing else but :meth:`init_state`), at each optimizer
    step ``k``:

    1. ``model_term(key, state, energy_k, batch) -> (state, ModelTerm)``: the estimate of
       ``E_rho_k[dU/dtheta]`` (and ESS, log Z) from the walkers;
    2. the optimizer on ``D_k = mean_batch dU/dtheta - ModelTerm.grad`` (through the
       strategy's :meth:`update_rule`, if it has one);
    3. ``step(key, state, energy_k, energy_{k+1}, k) -> (state, StepInfo)``: the walkers
       follow the target from ``theta_k`` to ``theta_{k+1}``.

    ``init_state(key, energy, data, log_Z0)`` builds the first state (``init`` is the
    strategies' keyword for where walkers start). Strategies with a loss of
    their own (score matching) override :meth:`gradient`. docs/architecture.md has a complete
    example of a new strategy.
    """

    weighted: bool = False
    # Whether the state's walkers are cached (energies, gradients, weights) at the current
    # parameters; options that replace walkers evaluated there (reseeding, refreshing) need it.
    walkers_at_parameters: bool = True

    def validate(self, dim: int, n_data: int) -> None:
        """Raise ``ValueError`` for hyperparameters inconsistent with the data."""
        return None

    @abc.abstractmethod
    def init_state(self, key: PRNGKeyArray, energy: eqx.Module, data: Array, log_Z0: Array) -> Any:
        """Initial state, evaluated at the initial parameters."""

    @abc.abstractmethod
    def model_term(
        self, key: PRNGKeyArray, state: Any, energy: eqx.Module, batch: Array
    ) -> tuple[Any, ModelTerm]:
        """The model term of the gradient at ``energy`` (the current parameters)."""

    @abc.abstractmethod
    def step(
        self,
        key: PRNGKeyArray,
        state: Any,
        energy_old: eqx.Module,
        energy_new: eqx.Module,
        step: Array,
    ) -> tuple[Any, StepInfo]:
        """Follow the target from ``energy_old`` to ``energy_new``."""

    def update_rule(self) -> Any:
        """A part that wraps the optimizer (e.g. the feedback correction), or ``None``."""
        return None

    def ess_and_log_Z(self, state: Any) -> tuple[Array, Array]:
        """Normalised ESS and log Z estimate of ``state`` (``(1, NaN)`` without weights)."""
        dtype = jax.tree.leaves(state)[0].dtype if jax.tree.leaves(state) else jnp.float32
        return jnp.asarray(1.0, dtype), jnp.asarray(jnp.nan, dtype)

    @property
    def moved_fraction(self) -> float:
        """The fraction of the walkers that one step moves (below 1 with ``walker_batch``)."""
        return 1.0

    def walkers(self, state: Any) -> tuple[Array, Array]:
        """Final ``(positions (N, d), log_weights (N,))``."""
        return state.position, state.log_weights

    def gradient(
        self, key: PRNGKeyArray, state: Any, energy: eqx.Module, batch: Array
    ) -> tuple[Any, Any, Array, Array, ModelTerm]:
        """Contrastive gradient ``D = mean_batch dU/dtheta - model_grad``.

        Returns ``(state, D, loss, data_energy, model_term)`` with
        ``loss = mean_batch U - E_model[U]``.
        """
        data_energy, data_grad = mean_param_grad(energy, batch)
        state, term = self.model_term(key, state, energy, batch)
        grad = jax.tree.map(lambda a, b: a - b, data_grad, term.grad)
        if getattr(energy, "l2_penalty", 0.0):  # static: energies with an energy penalty
            x, a = self.walkers(state)
            w = normalized_weights(a) if self.weighted else jnp.full_like(a, 1.0 / a.shape[0])
            pen_grad, _ = energy_l2_grad(energy, batch, x, w)
            grad = jax.tree.map(lambda a, b: a + b, grad, pen_grad)
        return state, grad, data_energy - term.energy, data_energy, term

    # -- the names of the first protocol, kept working -------------------------------------
    def negative_phase(self, key, state, energy, batch):
        """Deprecated: :meth:`model_term` as ``(state, grad, energy)``."""
        warnings.warn(
            "negative_phase is deprecated; use model_term", DeprecationWarning, stacklevel=2
        )
        state, term = self.model_term(key, state, energy, batch)
        return state, term.grad, term.energy

    def advance(self, key, state, energy_old, energy_new, step):
        """Deprecated: :meth:`step` as ``(state, resampled, acceptance)``."""
        warnings.warn("advance is deprecated; use step", DeprecationWarning, stacklevel=2)
        state, info = self.step(key, state, energy_old, energy_new, step)
        return state, info.resampled, info.acceptance


class ForwardingStrategy(AbstractStrategy):
    """A strategy around ``inner`` (a field of the subclass).

    Attributes it lacks, and the validation of the hyperparameters, are read from ``inner``.
    """

    def __getattr__(self, name):
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def validate(self, dim: int, n_data: int) -> None:
        self.inner.validate(dim, n_data)


def check_init_array(init: Any, num_walkers: int, dim: int) -> None:
    """Raise ``ValueError`` unless an explicit ``init`` array has shape ``(num_walkers, dim)``.

    A string ``init`` (a named start) passes; each strategy validates its own names.
    """
    if not isinstance(init, str):
        shape = np.shape(init)
        if shape != (num_walkers, dim):
            raise ValueError(
                f"init array must have shape (num_walkers, dim) = ({num_walkers}, {dim}); "
                f"got {shape}."
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
    net_is_zero = getattr(energy, "net_is_zero", None)  # a Tilted energy: exact base samples
    if net_is_zero is not None and net_is_zero(data[: min(256, data.shape[0])]):
        return energy.sample_base(key, n).astype(data.dtype)
    return None
