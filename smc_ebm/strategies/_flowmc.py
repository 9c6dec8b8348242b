r"""Flow-assisted persistent chains: FlowMC (flowMC-EBM) and flow-Jarzynski (DESIGN 1.3).

Both strategies carry a companion flow :math:`q_\phi` that is trained, at every optimizer step,
by maximum likelihood on the negative samples, and move their walkers with ``num_global`` i-SIR
moves (flow proposals) followed by ``num_local`` MALA moves whose step size is adapted toward
``target_accept``. Both kernels leave the model invariant, so:

* :func:`FlowMC` (Grenioux, Moulines & Gabrié, 2023) uses the moved walkers as plain
  negative samples (no weights);
* :func:`FlowJarzynski` carries annealed-importance weights through the moves: when the
  parameters go from :math:`\theta_k` to :math:`\theta_{k+1}`,
  :math:`A \mathrel{+}= U_k(X) - U_{k+1}(X)` at the current positions, the walkers are
  resampled if the ESS is low, then moved with the (invariant) kernels of
  :math:`\theta_{k+1}`; :math:`E[f(X)e^A]/E[e^A] = E_{\rho_{k+1}}[f]` and
  :math:`\log Z_{k+1} = \log Z_0 + \log \overline{e^{A}}` (re-anchored at resampling).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm.flows import (
    FLOW_KINDS,
    ReplayBuffer,
    init_flow_optimizer,
)
from smc_ebm.kernels import (
    evaluate,
    run_chains,
)
from smc_ebm.smc import (
    ESSResampling,
    IntervalResampling,
    NoResampling,
    ais_increment,
    ess_fraction,
    log_mean_exp,
    maybe_resample_indices,
    normalized_weights,
    resample_indices,
    take_ancestors,
)
from smc_ebm.strategies._base import (
    AbstractStrategy,
    ModelTerm,
    StepInfo,
    WalkerState,
    check_feedback_correction,
    check_init_array,
    exact_start,
    reads_walker_fields,
    walker_checks,
)
from smc_ebm.strategies._feedback import FeedbackCorrection
from smc_ebm.strategies._flow_moves import (
    FlowMoves,
    default_flow,
    flow_moves,
    importance_start,
    template_static,
    train_flow,
)


class FlowState(NamedTuple):
    """Walkers plus the companion flow.

    Attributes:
        walkers: :class:`~smc_ebm.strategies.WalkerState` (``log_weights`` are zero for
            :func:`FlowMC`); its fields (``position``, ``log_weights``, ...) read through.
        flow: the array leaves of the flow (``eqx.filter(flow, eqx.is_array)``); the
            strategy's :meth:`FlowStrategy.flow_of` rebuilds the flow.
        flow_opt_state: the flow optimizer's state.
        step_size: ``()`` the current (adapted) MALA step size.
        buffer: a :class:`~smc_ebm.flows.ReplayBuffer` or ``None``.
        flow_nll: ``()`` the flow's negative log-likelihood of its last training batch.
        global_acceptance: ``()`` mean probability that an i-SIR move left its point.
    """

    walkers: WalkerState
    flow: Any = None
    flow_opt_state: Any = None
    step_size: Any = None
    buffer: Any = None
    flow_nll: Any = None
    global_acceptance: Any = None


reads_walker_fields(FlowState)


@dataclasses.dataclass(frozen=True)
class FlowStrategy(AbstractStrategy):
    """Persistent walkers moved by i-SIR (flow proposals) and MALA, with a companion flow.

    The common engine of :func:`FlowMC` and :func:`FlowJarzynski`; use those constructors.
    """

    num_walkers: int = 1000
    step_size: float = 0.05
    flow: Any = None
    num_proposals: int = 32
    num_global: int = 2
    num_local: int = 4
    target_accept: float = 0.75
    adapt_rate: float = 0.05
    flow_optimizer: Any = None
    flow_steps: int = 1
    flow_batch: int | None = None
    buffer_size: int = 0
    flow_sigma: float | None = None
    flow_kind: str = "affine"
    flow_layers: int = 6
    flow_width: int = 64
    flow_depth: int = 2
    flow_knots: int = 8
    flow_interval: float = 4.0
    init: Any = "model"
    weighted: bool = False
    resampling: ESSResampling | IntervalResampling | NoResampling = dataclasses.field(
        default_factory=ESSResampling
    )
    feedback_correction: bool | str = False

    def __post_init__(self) -> None:
        if int(self.num_walkers) < 2:
            raise ValueError(f"num_walkers must be >= 2; got {self.num_walkers}.")
        check_feedback_correction(self.feedback_correction)
        if not float(self.step_size) > 0 or not math.isfinite(float(self.step_size)):
            raise ValueError(f"step_size must be a positive finite number; got {self.step_size}.")
        if self.num_proposals < 2:
            raise ValueError(f"num_proposals must be >= 2; got {self.num_proposals}.")
        if self.num_global < 0 or self.num_local < 0 or self.num_global + self.num_local == 0:
            raise ValueError(
                f"num_global and num_local must be >= 0 and not both 0; got {self.num_global}, "
                f"{self.num_local}."
            )
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError(f"target_accept must be in (0, 1); got {self.target_accept}.")
        if self.adapt_rate < 0:
            raise ValueError(f"adapt_rate must be >= 0; got {self.adapt_rate}.")
        if self.flow_steps < 0:
            raise ValueError(f"flow_steps must be >= 0; got {self.flow_steps}.")
        if self.flow_batch is not None and self.flow_batch < 1:
            raise ValueError(f"flow_batch must be >= 1; got {self.flow_batch}.")
        if self.buffer_size < 0 or (0 < self.buffer_size < self.num_walkers):
            raise ValueError(
                f"buffer_size must be 0 (no buffer) or >= num_walkers={self.num_walkers}; "
                f"got {self.buffer_size}."
            )
        if self.flow_sigma is not None and not float(self.flow_sigma) > 0:
            raise ValueError(f"flow_sigma must be positive; got {self.flow_sigma}.")
        if self.flow_kind not in FLOW_KINDS:
            raise ValueError(f"flow_kind must be one of {FLOW_KINDS}; got {self.flow_kind!r}.")
        if isinstance(self.init, str) and self.init not in ("model", "data"):
            raise ValueError(f"init must be 'model', 'data' or an array; got {self.init!r}.")

    # ----------------------------------------------------------------------------------
    @property
    def _optimizer(self) -> optax.GradientTransformation:
        return optax.adam(1e-3) if self.flow_optimizer is None else self.flow_optimizer

    def _static(self, dim: int) -> Any:
        if self.flow is not None:
            return eqx.partition(self.flow, eqx.is_array)[1]
        return template_static(
            int(dim),
            self.flow_kind,
            self.flow_layers,
            self.flow_width,
            self.flow_depth,
            self.flow_knots,
            float(self.flow_interval),
        )

    def flow_of(self, state: FlowState) -> Any:
        """The companion flow held by ``state`` (a flowjax distribution)."""
        return eqx.combine(state.flow, self._static(state.position.shape[1]))

    def validate(self, dim: int, n_data: int) -> None:
        if dim < 2 and self.flow is None:
            raise ValueError(f"flow strategies need dim >= 2 (coupling flows); got dim={dim}.")
        flow_dim = None if self.flow is None else getattr(self.flow, "shape", (None,))[-1]
        if flow_dim is not None and int(flow_dim) != dim:
            raise ValueError(f"the flow's dimension {flow_dim} does not match the data's {dim}.")
        check_init_array(self.init, self.num_walkers, dim)

    def init_state(
        self, key: PRNGKeyArray, energy: Any, data: Array, log_Z0: Array | None
    ) -> FlowState:
        n, dim = self.num_walkers, data.shape[1]
        self.validate(dim, data.shape[0])
        k_flow, k_x, k_res = jax.random.split(key, 3)
        self._static(dim)  # build (and cache) the flow's structure outside any trace
        flow = self.flow if self.flow is not None else default_flow(self, k_flow, data)
        x, a, log_z_est = self._initial_positions(k_x, energy, data, flow)
        if not self.weighted:
            if log_z_est is not None:  # importance samples of the flow: resample once
                x = x[resample_indices(k_res, a, "multinomial")]
            a = jnp.zeros(n, data.dtype)
        if log_Z0 is None:
            log_Z0 = log_z_est if log_z_est is not None else jnp.asarray(0.0, data.dtype)
        anchor = jnp.asarray(log_Z0, data.dtype) - log_mean_exp(a)
        opt_state = init_flow_optimizer(flow, self._optimizer)
        buffer = None
        if self.buffer_size:
            buffer = ReplayBuffer.empty(self.buffer_size, dim, data.dtype).push(x)
        u, g, pgrad, model_energy, p = eqx.filter_jit(_evaluate_weighted)(energy, x, a)
        zero = jnp.zeros((), data.dtype)
        return FlowState(
            WalkerState(x, u, g, a, anchor, pgrad, model_energy, p if self.weighted else None),
            eqx.filter(flow, eqx.is_array),
            opt_state,
            jnp.asarray(self.step_size, data.dtype),
            buffer,
            zero,
            zero,
        )

    def _initial_positions(self, key, energy, data, flow):
        """Positions, log-weights and (for flow importance samples) a log Z_0 estimate."""
        x = exact_start(key, energy, data, self.init, self.num_walkers)
        if x is not None:
            return x, jnp.zeros(self.num_walkers, data.dtype), None
        return importance_start(key, energy, data, flow, self.num_walkers)

    # ----------------------------------------------------------------------------------
    def ess_and_log_Z(self, state: FlowState) -> tuple[Array, Array]:
        dtype = state.energy.dtype
        if not self.weighted:
            return jnp.asarray(1.0, dtype), jnp.asarray(jnp.nan, dtype)
        a = state.log_weights
        return ess_fraction(a), state.log_Z_anchor + log_mean_exp(a)

    def model_term(self, key, state, energy, batch):
        ess, log_z = self.ess_and_log_Z(state)
        return state, ModelTerm(state.param_grad, state.model_energy, ess, log_z)

    def update_rule(self):
        if not self.weighted or self.feedback_correction is False:
            return None
        rule = FeedbackCorrection(mode=self.feedback_correction)
        return rule.through(lambda s: s.walkers, lambda s, w: s._replace(walkers=w))

    def step(self, key, state, energy_old, energy_new, step):
        k_res, k_move, k_flow = jax.random.split(key, 3)
        x, a, anchor = state.position, state.log_weights, state.log_Z_anchor
        flow = self.flow_of(state)
        resampled = jnp.asarray(False)
        if self.weighted:
            # AIS: the target moves from theta_k to theta_{k+1} at the current positions.
            u_new, _, _ = evaluate(energy_new, x)
            a = a + ais_increment(state.energy, u_new)
            resampled = self.resampling.should_resample(step + 1, ess_fraction(a))
            idx, a, anchor = maybe_resample_indices(
                resampled, k_res, a, anchor, self.resampling.method
            )
            (x,) = take_ancestors(resampled, idx, x)
        x, step_size, acc, p_move = self._moves(k_move, x, energy_new, flow, state.step_size)
        u, g, pg_fn = evaluate(energy_new, x)
        p = normalized_weights(a) if self.weighted else jnp.full_like(a, 1.0 / a.shape[0])
        flow, opt_state, buffer, nll = self._train_flow(
            k_flow, flow, state.flow_opt_state, state.buffer, x, a
        )
        walkers = WalkerState(
            x, u, g, a, anchor, pg_fn(p), jnp.sum(p * u), p if self.weighted else None
        )
        new = FlowState(
            walkers,
            eqx.filter(flow, eqx.is_array),
            opt_state,
            step_size,
            buffer,
            nll,
            p_move,
        )
        return new, StepInfo(resampled, acc, walker_checks(walkers))

    def sample_chains(
        self, key: PRNGKeyArray, state: FlowState, energy: Any, num_steps: int
    ) -> Float[Array, "N T d"]:
        """Run the walkers as independent chains under a FIXED energy and flow.

        Each step is one round of the strategy's moves (``num_global`` i-SIR, ``num_local``
        MALA at the state's adapted step size, no adaptation). Returns ``(N, num_steps, d)``,
        e.g. for :func:`smc_ebm.metrics.rhat`.
        """

        @eqx.filter_jit
        def run(flow, energy, x, h, key):
            xs, _, _ = run_chains(key, FlowMoves(self, flow, h), energy, x, num_steps)
            return jnp.swapaxes(xs, 0, 1)

        return run(self.flow_of(state), energy, state.position, state.step_size, key)

    def _moves(self, key, x, energy, flow, step_size):
        """``num_global`` i-SIR then ``num_local`` MALA moves (:func:`flow_moves`)."""
        return flow_moves(
            key,
            x,
            energy,
            flow,
            step_size,
            self.num_global,
            self.num_local,
            self.num_proposals,
            self.target_accept,
            self.adapt_rate,
        )

    def _train_flow(self, key, flow, opt_state, buffer, x, a):
        """``flow_steps`` maximum-likelihood steps on the walkers (:func:`train_flow`)."""
        return train_flow(
            key,
            flow,
            opt_state,
            buffer,
            x,
            a,
            self.weighted,
            self.flow_steps,
            self.flow_batch or self.num_walkers,
            self._optimizer,
        )


def _evaluate_weighted(energy, x, a):
    u, g, pg_fn = evaluate(energy, x)
    p = jax.nn.softmax(a)
    return u, g, pg_fn(p), jnp.sum(p * u), p


@dataclasses.dataclass(frozen=True)
class FlowMC(FlowStrategy):
    r"""flowMC-EBM: persistent chains with flow i-SIR and MALA moves (Grenioux et al., 2023).

    Each optimizer step: the EBM step on the contrastive gradient with the current
    walkers as negative samples; then each walker makes ``num_global`` i-SIR moves (the
    current point plus ``num_proposals - 1`` flow proposals, one picked with probability
    :math:`\propto e^{-U(y)}/q(y)`) and ``num_local`` MALA moves (step size adapted toward
    ``target_accept``), under the new parameters; then ``flow_steps`` maximum-likelihood
    steps of the flow on the walkers (or on a replay buffer of past walkers).

    Args:
        num_walkers: number of persistent chains ``N >= 2``.
        step_size: initial MALA step size (adapted during training).
        flow: a flowjax distribution to use as the flow (default: :func:`make_flow` at the
            identity over ``N(0, flow_sigma^2 I)``). With a :class:`~smc_ebm.energies.Tilted`
            energy over ``se.flows.base_distribution(flow)`` and a zero net, model, flow and
            base coincide at the start.
        num_proposals: i-SIR candidate-set size ``M`` (current point included).
        num_global: i-SIR moves per step.
        num_local: MALA moves per step.
        target_accept: MALA acceptance the step size is adapted toward.
        adapt_rate: adaptation rate of :math:`\log h` (0 freezes the step size).
        flow_optimizer: optax transformation of the flow (default ``adam(1e-3)``).
        flow_steps: flow MLE steps per optimizer step (0 freezes the flow).
        flow_batch: flow batch size (default ``num_walkers``).
        buffer_size: replay buffer of past walkers (0: train on the current walkers only).
        flow_sigma: base standard deviation (default: the data's root-mean variance).
        flow_kind: ``"affine"`` (RealNVP) or ``"spline"`` (rational-quadratic).
        flow_layers: coupling layers.
        flow_width: conditioner width.
        flow_depth: conditioner depth.
        flow_knots: spline knots (``flow_kind="spline"``).
        flow_interval: spline interval half-width.
        init: ``"model"`` (exact samples when possible, else flow samples resampled by
            importance weights), ``"data"`` or an ``(N, d)`` array.

    Example:
        >>> import smc_ebm as se
        >>> strategy = se.FlowMC(512, step_size=0.05, num_proposals=16)
    """

    weighted: bool = False
    resampling: ESSResampling | IntervalResampling | NoResampling = dataclasses.field(
        default_factory=NoResampling
    )


@dataclasses.dataclass(frozen=True)
class FlowJarzynski(FlowStrategy):
    r"""Jarzynski/AIS-weighted walkers moved by flow i-SIR and MALA (DESIGN 1.2, 1.3).

    As :func:`FlowMC`, plus log-weights: at each parameter update
    :math:`A \mathrel{+}= U_k(X) - U_{k+1}(X)`; resampling (default: ESS below 0.5,
    systematic) resets :math:`A` and re-anchors :math:`\log Z`; the moves are invariant, so
    they add nothing to :math:`A`. The negative phase uses the weights, the flow is trained
    on the weighted walkers, and ``log_Z``/``cross_entropy`` are tracked as in
    :func:`~smc_ebm.Jarzynski`. Initial walkers with ``init="model"``: exact samples when
    possible, else importance samples of the flow with :math:`A = -U - \log q` (which also
    estimates :math:`\log Z_0`).

    Args:
        num_walkers: number of walkers.
        step_size: initial MALA step size.
        resampling: :class:`ESSResampling` (default), :class:`IntervalResampling` or
            :class:`NoResampling`.
        feedback_correction: first-order correction of the walkers' self-influence through
            the parameter update (as in :func:`~smc_ebm.Jarzynski`; ``"auto"``, the default,
            applies it when the optimizer's update is linear in the gradient and skips it
            silently otherwise, e.g. under Adam; ``True`` warns when it skips).

    The other keywords are those of :class:`FlowMC`.
    """

    weighted: bool = True
    feedback_correction: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.resampling is None:
            object.__setattr__(self, "resampling", ESSResampling())
        super().__post_init__()
