"""The moves and the flow training of the flow strategies (:mod:`smc_ebm.strategies._flowmc`).

:func:`flow_moves` is ``num_global`` i-SIR moves with the flow as proposal followed by ``num_local``
MALA moves whose step size is adapted toward a target acceptance; every move leaves the model
invariant. :class:`FlowMoves` is the same moves at a fixed step size as one
:class:`~smc_ebm.kernels.Kernel`, for :func:`~smc_ebm.kernels.run_chains`.
:func:`train_flow` takes maximum-likelihood steps of the flow on the (weighted) walkers or on a
replay buffer.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from smc_ebm.flows import make_flow, mle_step
from smc_ebm.kernels import Kernel, MoveInfo, adapt_step_size, evaluate, isir_move, mala_move
from smc_ebm.smc import log_mean_exp, normalized_weights, resample_indices


def flow_moves(
    key, x, energy, flow, step_size, num_global, num_local, num_proposals, target_accept, adapt_rate
):
    """``num_global`` i-SIR moves then ``num_local`` MALA moves, all invariant for ``energy``.

    Returns ``(x, adapted step size, mean MALA acceptance, mean i-SIR move probability)``.
    """
    k_glob, k_loc = jax.random.split(key)
    dtype = x.dtype
    u = jax.vmap(energy)(x)
    p_move = jnp.asarray(0.0, dtype)
    if num_global:

        def glob(carry, k):
            x, u = carry
            x, u, p = isir_move(k, x, u, energy, flow, num_proposals)
            return (x, u), jnp.mean(p)

        (x, u), ps = jax.lax.scan(glob, (x, u), jax.random.split(k_glob, num_global))
        p_move = jnp.mean(ps).astype(dtype)
    acc = jnp.asarray(1.0, dtype)
    if num_local:
        u, g, _ = evaluate(energy, x)

        def loc(carry, k):
            x, u, g, h = carry
            x, u, g, a = mala_move(k, x, u, g, energy, h)
            acc = jnp.mean(a).astype(dtype)
            h = adapt_step_size(h, acc, target_accept, adapt_rate)
            return (x, u, g, h), acc

        (x, u, g, step_size), accs = jax.lax.scan(
            loc, (x, u, g, step_size), jax.random.split(k_loc, num_local)
        )
        acc = jnp.mean(accs)
    return x, step_size, acc, p_move


class FlowMoves(Kernel):
    """The moves of a flow strategy at a fixed step size, as one invariant kernel."""

    invariant: ClassVar[bool] = True

    def __init__(self, strategy: Any, flow: Any, step_size: Any):
        self.strategy, self.flow, self.step_size = strategy, flow, step_size

    def move(self, key, state, energy):
        s = self.strategy
        x, _, acc, _ = flow_moves(
            key,
            state.position,
            energy,
            self.flow,
            self.step_size,
            s.num_global,
            s.num_local,
            s.num_proposals,
            s.target_accept,
            0.0,
        )
        return x, MoveInfo(jnp.broadcast_to(acc, state.energy.shape))


def train_flow(key, flow, opt_state, buffer, x, a, weighted, flow_steps, batch, opt):
    """``flow_steps`` maximum-likelihood steps on the (weighted) walkers or the buffer.

    Returns ``(flow, opt_state, buffer, last negative log-likelihood)``.
    """
    nll = jnp.asarray(0.0, x.dtype)
    if not flow_steps:
        return flow, opt_state, buffer, nll
    n = x.shape[0]
    k_res, k_draw = jax.random.split(key)
    weights = normalized_weights(a) if weighted else None
    if buffer is not None:
        # The buffer holds unweighted samples: weighted walkers enter it resampled.
        push = x[resample_indices(k_res, a, "multinomial")] if weighted else x
        buffer = buffer.push(push)
    static = eqx.filter(flow, eqx.is_array, inverse=True)

    def body(carry, k):
        arrays, s = carry
        f = eqx.combine(arrays, static)
        if buffer is not None:
            xb, wb = buffer.draw(k, batch), None
        elif batch < n:
            idx = jax.random.choice(k, n, (batch,), p=weights)
            xb, wb = x[idx], None
        else:
            xb, wb = x, weights
        f, s, nll = mle_step(f, s, xb, opt, wb)
        return (eqx.filter(f, eqx.is_array), s), nll

    keys = jax.random.split(k_draw, flow_steps)
    (arrays, opt_state), nlls = jax.lax.scan(
        body, (eqx.filter(flow, eqx.is_array), opt_state), keys
    )
    return eqx.combine(arrays, static), opt_state, buffer, nlls[-1].astype(x.dtype)


@functools.lru_cache(maxsize=16)
def template_static(dim, kind, num_layers, width, depth, knots, interval):
    """The non-array part of a default flow (it depends neither on the key nor on sigma).

    It holds closures over concrete arrays, so it must first be built outside any trace:
    ``FlowStrategy.init_state`` does so, and later (traced) calls hit the cache.
    """
    flow = make_flow(
        jax.random.key(0),
        dim,
        kind=kind,
        num_layers=num_layers,
        width=width,
        depth=depth,
        knots=knots,
        interval=interval,
    )
    return eqx.partition(flow, eqx.is_array)[1]


def default_flow(strategy: Any, key: Any, data: Any) -> Any:
    """The strategy's default flow: :func:`~smc_ebm.flows.make_flow` at the identity.

    Over ``N(0, sigma^2 I)``, ``sigma`` = ``flow_sigma`` or the data's root-mean variance.
    """
    sigma = strategy.flow_sigma
    if sigma is None:  # the data's mean per-coordinate spread
        sigma = float(jnp.sqrt(jnp.mean(jnp.var(data, axis=0)))) if data.shape[0] > 1 else 1.0
        sigma = sigma if sigma > 0 else 1.0
    return make_flow(
        key,
        data.shape[1],
        sigma=sigma,
        kind=strategy.flow_kind,
        num_layers=strategy.flow_layers,
        width=strategy.flow_width,
        depth=strategy.flow_depth,
        knots=strategy.flow_knots,
        interval=strategy.flow_interval,
    )


def importance_start(key, energy, data, flow, n):
    """``n`` importance samples of the flow: ``(x, A = -U - log q, log mean e^A)``.

    ``mean e^A`` estimates ``Z_0``.
    """

    @eqx.filter_jit
    def importance(flow, energy, key):
        x, log_q = flow.sample_and_log_prob(key, (n,))
        x = x.astype(data.dtype)
        return x, -jax.vmap(energy)(x) - log_q.astype(data.dtype)

    x, a = importance(flow, energy, key)
    return x, a, log_mean_exp(a)
