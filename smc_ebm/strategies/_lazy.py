r"""Jarzynski walkers whose target follows the parameters only when they have moved far.

Algorithm 1 moves the walkers' target to the new parameters at every step, and each move adds
the walkers' error about the change of :math:`\log Z` on each region they cannot leave (a
mode, a digit class) to their weights. Those errors add up over the steps: the optimizer's
noise makes the parameters jitter back and forth, and every jitter, undone a step later, still
leaves its error in the weights. The trained model then inherits the sum (docs/maths.md §2.8).

Here the walkers follow a *target* :math:`\bar\theta` (maths §2.8): they are moved by a kernel
that leaves :math:`\rho_{\bar\theta}` invariant, with log-weights :math:`A` for it, and the model
term at the current parameters :math:`\theta` reweights them afresh at each step,

.. math::
    B_i = A_i - \big(U_\theta(X_i) - U_{\bar\theta}(X_i)\big), \qquad
    \mathbb E_{\rho_\theta}[f] \approx \textstyle\sum_i \mathrm{softmax}(B)_i f(X_i),

a one-step importance reweighting whose error is not carried on. The target jumps to
:math:`\theta` (``A <- B``) only when the parameters have moved far: when a fixed random subset
of the data (the *probes*), reweighted from :math:`\bar\theta` to :math:`\theta`, keeps less
than ``threshold`` of its ESS. Between jumps the back-and-forth of the parameters telescopes out
of the weights, and a jump adds the error of one net change only. With ``threshold`` above 1
the target jumps at every step: with MALA, Algorithm 1 exactly.

The rule reads the data, not the walkers. A rule that reads the walkers' own reweighting ESS
picks the moments when their error about the change leans one way and locks it in: on the fixed
path of ``tests/test_lazy_target.py`` such a rule biased a mode's mass by 8 standard errors,
where the probes' rule (and a fixed interval) leave none.

The cost per step is Algorithm 1's plus one forward pass over the probes: one move under the
target (MALA evaluates its proposals), and one evaluation at the current parameters, which gives
the shift and the model term.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from smc_ebm.energies import split_energy
from smc_ebm.kernels import KernelState, energies, evaluate, make_kernel
from smc_ebm.smc import default_increment, ess_fraction, log_mean_exp, resample, take_ancestors
from smc_ebm.strategies._base import (
    ForwardingStrategy,
    ModelTerm,
    StepInfo,
    WalkerState,
    all_finite,
    reads_walker_fields,
    walker_checks,
)
from smc_ebm.strategies._jarzynski import Jarzynski


class LazyTargetState(NamedTuple):
    r"""The walkers under their target, the target, and the shift to the current parameters.

    Attributes:
        walkers: :class:`WalkerState` whose ``energy``, ``grad`` and ``log_weights`` are for the
            target; its ``param_grad``, ``model_energy`` and ``grad_weights`` are the model term
            at the current parameters.
        target: the target's trainable arrays (``split_energy``'s first part).
        shift: ``(N,)`` :math:`U_\theta(X) - U_{\bar\theta}(X)` at the current parameters.
        probes: ``(M, d)`` the fixed data points that the jump rule reads.
        probe_energy: ``(M,)`` :math:`U_{\bar\theta}` at the probes.
        retargets: ``()`` how many times the target has jumped to the parameters.
    """

    walkers: WalkerState
    target: Any
    shift: Array
    probes: Array
    probe_energy: Array
    retargets: Array


reads_walker_fields(LazyTargetState)


@dataclasses.dataclass(frozen=True)
class LazyTarget(ForwardingStrategy):
    """Jarzynski walkers with a lazy target (see :func:`with_lazy_target`)."""

    inner: Any
    threshold: float = 0.9
    num_probes: int = 256

    weighted = True
    walkers_at_parameters = False  # they are held under the target

    def __post_init__(self):
        if not isinstance(self.inner, Jarzynski):
            raise TypeError(
                f"with_lazy_target wraps a Jarzynski strategy; got {type(self.inner).__name__}."
            )
        if self.inner.minibatched:
            raise ValueError(
                "with_lazy_target needs every walker moved at every step; "
                f"got walker_batch={self.inner.walker_batch}."
            )
        if self.inner.feedback_correction not in (False, "auto"):
            raise ValueError(
                "the feedback correction assumes that the target moves at every step; "
                f"with_lazy_target takes feedback_correction=False (got "
                f"{self.inner.feedback_correction!r})."
            )
        if not float(self.threshold) > 0:
            raise ValueError(f"threshold must be > 0; got {self.threshold}.")
        if int(self.num_probes) < 2:
            raise ValueError(f"num_probes must be >= 2; got {self.num_probes}.")

    def init_state(self, key, energy, data, log_Z0):
        walkers = self.inner.init_state(key, energy, data, log_Z0)
        k_probes = jax.random.fold_in(key, 1)
        m = min(int(self.num_probes), data.shape[0])
        probes = data[jax.random.choice(k_probes, data.shape[0], (m,), replace=False)]
        return LazyTargetState(
            walkers,
            split_energy(energy)[0],
            jnp.zeros_like(walkers.log_weights),
            probes,
            energies(energy, probes),
            jnp.zeros((), jnp.int32),
        )

    def walkers(self, state):
        """Positions and log-weights for the current parameters."""
        return state.walkers.position, state.walkers.log_weights - state.shift

    def ess_and_log_Z(self, state):
        w = state.walkers
        b = w.log_weights - state.shift
        return ess_fraction(b), w.log_Z_anchor + log_mean_exp(b)

    def model_term(self, key, state, energy, batch):
        ess, log_z = self.ess_and_log_Z(state)
        w = state.walkers
        return state, ModelTerm(w.param_grad, w.model_energy, ess, log_z)

    def should_jump(self, state, log_weights, shift, probe_energy, step):
        """Whether the target jumps to the new parameters: the probes' ESS below ``threshold``.

        ``log_weights`` and ``shift`` are the walkers' (for the target, and to the new
        parameters), ``probe_energy`` the new parameters' energies at ``state.probes``, ``step``
        the step's index. The rule
        reads the probes only (module docstring: a rule that reads the walkers biases them);
        ``benchmarks/lazy_target_rules.py`` overrides it to measure other rules.
        """
        return ess_fraction(state.probe_energy - probe_energy) < self.threshold

    def step(self, key, state, energy_old, energy_new, step):
        k_move, k_res = jax.random.split(key)
        kernel = make_kernel(self.inner.kernel, self.inner.step_size)
        params_new, static = split_energy(energy_new)
        target = eqx.combine(state.target, static)
        w = state.walkers
        # 1. move under the target (a kernel step at a fixed energy: its energy and gradient
        #    at the new positions come with it) and add the kernel's increment (0 for MALA)
        old = KernelState(w.position, w.energy, w.grad)
        moved, move = kernel.step(k_move, old, target)
        a = w.log_weights + default_increment(kernel)(kernel, old, moved, move)
        # 2. one evaluation at the new parameters: the shift and the model term
        u, g, param_grad = evaluate(energy_new, moved.position)
        shift = u - moved.energy
        # 3. the target jumps to the parameters when the probes, reweighted from the target to
        #    them, keep less than ``threshold`` of their ESS (a rule that reads no walker)
        probe_energy = energies(energy_new, state.probes)
        jump = self.should_jump(state, a, shift, probe_energy, step)
        probe_energy = jnp.where(jump, probe_energy, state.probe_energy)
        a = jnp.where(jump, a - shift, a)
        u_t = jnp.where(jump, u, moved.energy)
        g_t = jnp.where(jump, g, moved.grad)
        target_new = jax.tree.map(lambda p, q: jnp.where(jump, p, q), params_new, state.target)
        shift = jnp.where(jump, jnp.zeros_like(shift), shift)
        p = jax.nn.softmax(a - shift)
        # 4. resample the target's population when its ESS is low
        do = self.inner.resampling.should_resample(step + 1, ess_fraction(a))
        population = WalkerState(moved.position, u_t, g_t, a, w.log_Z_anchor, None, None).population
        population, idx = resample(do, k_res, population, self.inner.resampling.method)
        shift, gw = take_ancestors(do, idx, shift, p)
        walkers = WalkerState(*population, param_grad(p), jnp.sum(p * u), gw)
        retargets = state.retargets + jump.astype(jnp.int32)
        new = LazyTargetState(walkers, target_new, shift, state.probes, probe_energy, retargets)
        finite = {
            **walker_checks(walkers),
            "shift to the parameters": all_finite(shift),
            "energy of the probes": all_finite(probe_energy),
        }
        return new, StepInfo(do, jnp.mean(move.acceptance), finite)


def with_lazy_target(
    strategy: Jarzynski, threshold: float = 0.9, num_probes: int = 256
) -> LazyTarget:
    r"""Jarzynski walkers whose target jumps to the parameters only when they have moved far.

    The walkers are moved and weighted for a target :math:`\bar\theta`; the model term at the
    current parameters :math:`\theta` reweights them by :math:`e^{-(U_\theta - U_{\bar\theta})}`
    at each step, and :math:`\bar\theta` jumps to :math:`\theta` when ``num_probes`` data
    points, drawn once at the start and reweighted the same way, keep less than ``threshold`` of
    their ESS. Between jumps the parameters' back-and-forth leaves nothing in the weights
    (docs/maths.md §2.8). The cost per step is Algorithm 1's plus one forward pass over the
    probes; ``result.state.retargets`` counts the jumps.

    Args:
        strategy: a :class:`~smc_ebm.Jarzynski` that moves every walker at every step
            (no ``walker_batch``), without the feedback correction (``False``, or ``"auto"``,
            which is then not applied).
        threshold: the jump rule ``ESS(probes) < threshold``; above 1 the target jumps at
            every step (with MALA, Algorithm 1).
        num_probes: how many data points the rule reads (all of them when there are fewer).

    Example:
        >>> import smc_ebm as se
        >>> strategy = se.strategies.with_lazy_target(se.Jarzynski(1024, 0.3, kernel="mala"))
    """
    return LazyTarget(strategy, float(threshold), int(num_probes))
