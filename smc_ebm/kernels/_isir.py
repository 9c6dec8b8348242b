r"""Iterated sampling-importance resampling (i-SIR) with a flow proposal, and step-size adaptation.

i-SIR (Andrieu, Lee & Vihola, 2018; used with flows by Samsonov et al., 2022 and Grenioux,
Moulines & Gabrié, 2023): from the current point :math:`y_0 = x`, draw :math:`M - 1`
independent proposals :math:`y_{1..M-1} \sim q` and move to :math:`y_J` with

.. math::
    P(J = j) \propto w(y_j) = \frac{e^{-U(y_j)}}{q(y_j)}.

The kernel leaves :math:`\rho \propto e^{-U}` invariant for any proposal with full support,
so the weights of a moving-target SMC need only the AIS increment :math:`U_k - U_{k+1}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from smc_ebm._naming import renamed
from smc_ebm.kernels._base import Kernel, MoveInfo


@renamed()
def isir_move(
    key: PRNGKeyArray,
    x: Float[Array, "n d"],
    u: Float[Array, " n"],
    energy_fn: Callable[[Array], Array],
    flow: Any,
    num_proposals: int,
) -> tuple[Float[Array, "n d"], Float[Array, " n"], Float[Array, " n"]]:
    r"""One i-SIR step for each of ``n`` independent chains.

    Args:
        key: PRNG key.
        x: ``(n, d)`` current points.
        u: ``(n,)`` energies ``U(x)`` (cached).
        energy_fn: ``U``, one sample ``(d,) -> ()``.
        flow: the proposal, with ``log_prob`` and ``sample_and_log_prob`` (a flowjax
            distribution).
        num_proposals: ``M >= 2``, the size of the candidate set (current point included).

    Returns:
        ``(x_new, u_new, p_move)``: the new points, their energies, and the probability
        :math:`1 - w(y_0) / \sum_j w(y_j)` that each chain left its point.
    """
    if num_proposals < 2:
        raise ValueError(f"isir_move: num_proposals must be >= 2; got {num_proposals}.")
    n, d = x.shape
    k_prop, k_pick = jax.random.split(key)
    y, log_q_y = flow.sample_and_log_prob(k_prop, (n, num_proposals - 1))
    y = y.astype(x.dtype)
    u_y = jax.vmap(jax.vmap(energy_fn))(y)
    log_q_x = flow.log_prob(x)
    cand = jnp.concatenate([x[:, None, :], y], axis=1)  # (n, M, d)
    cand_u = jnp.concatenate([u[:, None], u_y], axis=1)  # (n, M)
    log_w = -cand_u - jnp.concatenate([log_q_x[:, None], log_q_y], axis=1).astype(x.dtype)
    # A proposal where U or log q is not finite gets weight 0 (never the current point:
    # its weight is finite because the chain is at a point of finite energy).
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    j = jax.random.categorical(k_pick, log_w, axis=-1)
    rows = jnp.arange(n)
    p_move = 1.0 - jax.nn.softmax(log_w, axis=-1)[:, 0]
    return cand[rows, j], cand_u[rows, j], p_move


def adapt_step_size(
    step_size: Float[Array, ""],
    acceptance: Float[Array, ""],
    target: float = 0.75,
    rate: float = 0.05,
) -> Float[Array, ""]:
    r"""Robbins-Monro step on the log step size toward a target acceptance rate.

    :math:`\log h \leftarrow \log h + \gamma\,(\bar a - a^*)`: larger steps when MALA
    accepts more than ``target``, smaller when it accepts less.
    """
    return step_size * jnp.exp(rate * (acceptance - target)).astype(step_size.dtype)


class ISIR(Kernel):
    """i-SIR with a flow proposal (:func:`isir_move`), invariant for its energy.

    Args:
        flow: the proposal (a flowjax distribution).
        num_proposals: candidates per move, the current point included (``>= 2``).
    """

    invariant: ClassVar[bool] = True

    def __init__(self, flow: Any, num_proposals: int):
        self.flow, self.num_proposals = flow, num_proposals

    def move(self, key, state, energy):
        x, u, p_move = isir_move(
            key, state.position, state.energy, energy, self.flow, self.num_proposals
        )
        return x, MoveInfo(p_move, u)
