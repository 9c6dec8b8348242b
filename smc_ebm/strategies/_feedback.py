r"""The feedback correction: an update rule around the optimizer (docs/maths.md §2.6).

The walkers that estimate the model term also carry the weights of the path that their own
estimate chooses. Walker ``i`` entered the gradient with weight ``q_i``; through the update it
moved the parameters by ``-J q_i (\delta_i - m)`` (``\delta_i = dU(X_i)/d\theta``, ``m`` the
walkers' estimate, ``J`` the Jacobian of the update in the gradient), and its own increment
``-\delta_i \cdot \Delta\theta`` contains the systematic self-term
``q_i \delta_i^T J (\delta_i - m)`` that an independent walker would not see.
:class:`FeedbackCorrection` takes the optimizer's update and removes that term from the
walkers' log-weights before they follow the target, so the strategy's step stays Algorithm 1.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from smc_ebm._naming import OldAttributes, RenamedArguments
from smc_ebm.kernels import evaluate, per_walker_sized
from smc_ebm.smc import split_walkers, walker_blocks

# Walkers probed per step (all of them when there are fewer).
CORRECTION_PROBES = 1024


def _identity(state):
    return state


def _replace(state, walkers):
    return walkers


@dataclasses.dataclass(frozen=True)
class FeedbackCorrection(OldAttributes, metaclass=RenamedArguments):
    """Remove, to first order, the walkers' influence on their own weights through the update.

    ``fit`` asks a strategy for its update rule (:meth:`AbstractStrategy.update_rule`); this
    one replaces ``optimizer.update`` by :meth:`update`, which also returns the walker state
    with corrected log-weights.

    Args:
        mode: ``"auto"`` (apply when the optimizer's update is linear in the gradient),
            ``True`` (the same, with a warning when it is skipped), ``"local"`` (linearise any
            optimizer at its current state).
        start: the first step at which the correction applies.
        estimator: ``"probe"`` (one Rademacher probe per step) or ``"exact"`` (each walker's
            own parameter gradient).
        num_active: at most this many walkers entered a step's gradient (a moved batch).
        get: where the :class:`~smc_ebm.strategies.WalkerState` sits in the strategy's
            state: ``get(state)`` returns it (identity by default).
        put: ``put(state, walkers)`` returns the state with the walker state replaced.
    """

    mode: bool | str = "auto"
    start: int = 0
    estimator: str = "probe"
    num_active: int | None = None
    get: Callable[[Any], Any] = _identity
    put: Callable[[Any, Any], Any] = _replace

    def through(self, get: Callable, put: Callable) -> FeedbackCorrection:
        """The same rule for a state that holds this one's state at ``get`` / ``put``."""
        inner_get, inner_put = self.get, self.put
        return dataclasses.replace(
            self,
            get=lambda s: inner_get(get(s)),
            put=lambda s, w: put(s, inner_put(get(s), w)),
        )

    def prepare(self, optimizer: Any, opt_state: Any, params: Any) -> FeedbackCorrection | None:
        """The rule, or ``None`` where it does not apply to ``optimizer`` (checked on the host)."""
        if self.mode == "local" or update_is_linear(optimizer, opt_state, params):
            return self
        if self.mode is True:
            warnings.warn(
                "feedback_correction is skipped: it needs an optimizer whose update is linear in "
                "the gradient (SGD, momentum, per-field SGD, schedules); this one (e.g. Adam) is "
                "not, and its Jacobian at a near-zero gradient coordinate is unbounded.",
                stacklevel=3,
            )
        return None

    def update(self, key, optimizer, grad, opt_state, params, static, state, step):
        """``optimizer.update`` plus the corrected state: ``(updates, opt_state, state)``."""
        walkers = self.get(state)

        def corrected(_):
            updates, new_opt, corr = correction(
                key,
                optimizer,
                grad,
                opt_state,
                params,
                static,
                walkers,
                self.num_active,
                exact=self.estimator == "exact",
            )
            return updates, new_opt, walkers.log_weights + corr

        def uncorrected(_):
            updates, new_opt = optimizer.update(grad, opt_state, params)
            return updates, new_opt, walkers.log_weights

        if self.start > 0:
            updates, new_opt, a = jax.lax.cond(step >= self.start, corrected, uncorrected, None)
        else:
            updates, new_opt, a = corrected(None)
        return updates, new_opt, self.put(state, walkers._replace(log_weights=a))


def update_is_linear(optimizer, opt_state, params) -> bool:
    """Whether ``optimizer.update`` is linear in the gradient, checked once on the host.

    Compares the Jacobian diagonal (a JVP with a tangent of ones) at two random gradients;
    SGD, momentum and their per-field or scheduled forms give the same diagonal, Adam-like
    rescalings do not.
    """

    def diag(seed):
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        g = jax.tree.unflatten(
            treedef,
            [
                jax.random.normal(k, jnp.shape(x), jnp.asarray(x).dtype)
                if eqx.is_inexact_array(x)
                else x
                for k, x in zip(keys, leaves, strict=True)
            ],
        )
        ones = jax.tree.map(jnp.ones_like, g)
        _, (d, _) = jax.jvp(lambda g: optimizer.update(g, opt_state, params), (g,), (ones,))
        return jax.tree.leaves(d)

    try:
        d1, d2 = diag(0), diag(1)
    except Exception:  # an optimizer that cannot be differentiated: no correction
        return False
    return all(
        bool(np.all(np.isfinite(a)) and np.allclose(a, b, rtol=1e-5, atol=0.0))
        for a, b in zip(d1, d2, strict=True)
    )


def correction(
    key, optimizer, grad, opt_state, params, static, state, num_active=None, exact=False
):
    r"""Optimizer update and the first-order correction of the walkers' self-influence.

    The self-term ``q_i \delta_i^T J (\delta_i - m)`` is removed with ``S = -diag(J)``
    (exact for element-wise optimizers) and a Rademacher probe ``v``,
    ``d_i = \delta_i \cdot S^{1/2} v``: ``E[d_i (d_i - m \cdot S^{1/2} v)] =
    \delta_i^T S (\delta_i - m)``, with ``m`` the state's ``param_grad`` (the estimate that
    entered the update). Only walkers with ``q_i > 0`` (``state.grad_weights``) have a
    self-term: when at most ``num_active < N`` of them entered the gradient (a moved batch), those
    are found first. With more than :data:`CORRECTION_PROBES` of them, only every
    ``stride``-th one (random offset) is probed and its term scaled by ``stride``: the same
    expectation, at ``1 / stride`` of the cost. ``exact=True`` replaces the probe by each probed
    walker's own parameter gradient (memory ``n_probed x n_params``): no probe noise.

    Returns ``(updates, new_opt_state, correction (N,))``.
    """
    ones = jax.tree.map(jnp.ones_like, grad)
    (updates, new_opt), (diag, _) = jax.jvp(
        lambda g: optimizer.update(g, opt_state, params), (grad,), (ones,)
    )
    leaves, treedef = jax.tree.flatten(diag)
    # S = -diag(J). Adam-like updates g / sqrt(g^2) have a 0/0 derivative where a gradient
    # coordinate is exactly zero (e.g. the hidden layers of a net whose last layer starts at
    # zero); no walker influences such a coordinate to first order, so it gets no correction.
    scale = [jnp.maximum(-jnp.where(jnp.isfinite(d), d, 0.0), 0.0) for d in leaves]
    n = state.position.shape[0]
    m = n if num_active is None else min(int(num_active), n)
    stride = max(1, m // CORRECTION_PROBES)
    offset = jax.random.randint(jax.random.fold_in(key, 1), (), 0, stride)
    take, put = _probes(state.grad_weights, m, stride, offset)
    x, q = take(state.position), take(state.grad_weights)

    if exact:
        # S (delta_i - m) . delta_i from each walker's own gradient: the self-term itself.
        def self_term(xi):
            g = jax.grad(lambda p: eqx.combine(p, static)(xi))(params)
            return sum(
                jnp.sum(s_ * gi * (gi - mi))
                for s_, gi, mi in zip(
                    scale, jax.tree.leaves(g), jax.tree.leaves(state.param_grad), strict=True
                )
            )

        corr = stride * q * jax.vmap(self_term)(x)
    else:
        keys = jax.random.split(key, len(leaves))
        probe = [
            jnp.sqrt(s_) * jax.random.rademacher(k, s_.shape, s_.dtype)
            for k, s_ in zip(keys, scale, strict=True)
        ]
        d = directional_derivatives(params, static, x, jax.tree.unflatten(treedef, probe))
        # Walker i moves m = sum_j q_j delta_j by q_i (delta_i - m), so its self-term is
        # q_i delta_i^T S (delta_i - m) = E_v[q_i d_i (d_i - m . S^1/2 v)]; m is the state's
        # ``param_grad`` (what entered the update), so m . S^1/2 v needs no per-walker pass.
        m = sum(
            jnp.sum(a * b) for a, b in zip(jax.tree.leaves(state.param_grad), probe, strict=True)
        )
        corr = stride * q * d * (d - m)
    return updates, new_opt, put(corr)


def _probes(grad_weights: Array, m: int, stride: int, offset: Array) -> tuple[Callable, Callable]:
    """The probed walkers: every ``stride``-th of the ``m`` that entered the gradient.

    Returns ``take`` (a walker array ``(N, ...)`` to its probed rows, padding rows included)
    and ``put`` (values on the probed rows to an ``(N,)`` array, zero elsewhere).
    When every walker entered the gradient (``m == N``) the probes are the walkers
    ``offset + stride * j``. With the walkers split over ``B`` devices
    (:func:`~smc_ebm.smc.walker_blocks`) the same walkers are found in each device's block of
    ``N / B`` rows, so that neither the gather nor the scatter crosses devices (a gather of
    rows from a split array is a cross-device reduction of all of them, and the probes' work
    would be repeated on every device).
    """
    n = grad_weights.shape[0]
    blocks = walker_blocks()
    if blocks > 1 and m == n and n % blocks == 0:
        size = n // blocks
        first = jnp.mod(offset - size * jnp.arange(blocks), stride)
        local = first[:, None] + stride * jnp.arange(-(-size // stride))  # (B, probes a block)
        valid = local < size
        local = jnp.minimum(local, size - 1)

        def take(a):
            by_block = split_walkers(a.reshape(blocks, size, *a.shape[1:]))
            return jax.vmap(lambda b, i: b[i])(by_block, local).reshape(-1, *a.shape[1:])

        def put(values):
            values = jnp.where(valid, values.reshape(valid.shape), 0.0)
            out = jax.vmap(lambda i, v: jnp.zeros(size, v.dtype).at[i].add(v))(local, values)
            return out.reshape(n)

        return take, put
    # The walkers that entered the gradient (``m`` at most; index n pads when fewer did).
    pool = jnp.arange(n) if m == n else jnp.nonzero(grad_weights > 0, size=m, fill_value=n)[0]
    probed = offset + stride * jnp.arange(-(-m // stride))
    idx = pool[jnp.minimum(probed, m - 1)]
    valid = (probed < m) & (idx < n)
    idx = jnp.minimum(idx, n - 1)

    def take(a):
        return a[idx]

    def put(values):
        return jnp.zeros(n, values.dtype).at[idx].add(jnp.where(valid, values, 0.0))

    return take, put


def directional_derivatives(params, static, x, v) -> Array:
    r"""``d_i = \partial_\theta U(x_i) \cdot v`` for the rows ``x_i`` of ``x`` (``(m, d) -> (m,)``).

    For a small energy (:func:`~smc_ebm.kernels.per_walker_sized`, e.g. a mixture)
    ``kernels.evaluate`` gives ``param_grad(w) = sum_i w_i \partial_\theta U(x_i)`` in closed
    form or from per-walker gradients; it is linear in ``w`` and its transpose applied to ``v``
    is ``d``: for the mixture one product, where forward-mode differentiation of the energy took
    about 5% of a Jarzynski step on the 50-d benchmark. For a network the transpose needs a
    backward pass and forward mode is cheaper (by about 12% on a 2 x 128 MLP), so larger
    energies, and a ``param_grad`` that JAX cannot transpose, take forward mode.
    """

    def forward():
        return jax.jvp(lambda p: jax.vmap(eqx.combine(p, static))(x), (params,), (v,))[1]

    if not per_walker_sized(params, x.shape[-1]):
        return forward()
    param_grad = evaluate(eqx.combine(params, static), x)[2]
    try:
        (d,) = jax.linear_transpose(param_grad, jnp.zeros(x.shape[0], x.dtype))(v)
    except Exception:  # noqa: BLE001  (not transposable)
        return forward()
    return d
