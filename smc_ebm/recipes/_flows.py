"""The flow examples' recipe: a tilted energy over a flow's base, the four strategies, training."""

from __future__ import annotations

import time

import jax
import numpy as np
import optax

import smc_ebm as se
from smc_ebm._naming import renamed
from smc_ebm.recipes._output import stop_if_interrupted


def tilted_energy(key, dim, sigma, width, depth, flow_key, flow_kw, squared=0):
    """A Tilted energy over the flow's base N(0, sigma^2 I), and the flow.

    ``squared=0``: a scalar SiLU MLP, zero at the start (the model starts at the base).
    ``squared=k``: :class:`~smc_ebm.energies.SquaredNorm` of a ReLU MLP with ``k`` outputs,
    whose energy grows quadratically away from the data (Gaussian tails); it starts near,
    not at, the base.
    """
    flow = se.flows.make_flow(flow_key, dim, sigma=sigma, **flow_kw)
    if squared:
        net = se.energies.SquaredNorm.mlp(
            dim, squared, width, depth, key=key, activation=jax.nn.relu
        )
    else:
        net = se.energies.MLP(dim, width, depth, key=key, zero_init=True)
    return se.energies.Tilted(net, se.flows.base_distribution(flow)), flow


@renamed()
def flow_strategies(num_walkers, flow, step_size, ula_step, num_proposals, flow_lr):
    """FlowMC, flow-Jarzynski, Jarzynski (ULA) and PCD as the flow examples configure them."""
    common = dict(
        step_size=step_size,
        flow=flow,
        num_proposals=num_proposals,
        num_global=1,
        num_local=2,
        flow_optimizer=optax.adam(flow_lr),
    )
    return {
        "FlowMC": se.FlowMC(num_walkers, **common),
        "flow-Jarzynski": se.FlowJarzynski(num_walkers, feedback_correction=False, **common),
        "Jarzynski (ULA)": se.Jarzynski(num_walkers, ula_step, feedback_correction=False),
        "PCD": se.PCD(num_walkers, ula_step),
    }


def train(energy, data, strategy, steps, lr, batch, seed, lr_final=1.0, progress=True):
    """Adam on the energy; with ``lr_final < 1`` its rate decays as a cosine to ``lr_final * lr``.

    ``progress``: the live bar of ``fit``. A run stopped by Ctrl-C or SIGTERM raises
    ``KeyboardInterrupt`` here, so that a loop over methods or seeds stops with it.

    The decay removes most of the stationary jitter of the mode weights that a constant rate
    leaves (the gradient's Monte Carlo noise, from 512 walkers and a batch of 512).
    """
    schedule = lr if lr_final >= 1.0 else optax.cosine_decay_schedule(lr, steps, alpha=lr_final)
    t0 = time.perf_counter()
    res = se.fit(
        energy,
        data,
        strategy=strategy,
        optimizer=optax.adam(schedule),
        num_steps=steps,
        batch_size=batch,
        key=jax.random.key(seed),
        progress=progress,
    )
    stop_if_interrupted(res)
    return res, time.perf_counter() - t0


def table(rows, cols):
    """Print ``rows`` (name -> values) as a Markdown table with columns ``cols``."""
    head = "| method | " + " | ".join(cols) + " |"
    print(head)
    print("|" + "---|" * (len(cols) + 1))
    for name, vals in rows.items():
        cells = [v if isinstance(v, str) else f"{v:.3g}" for v in vals]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return np.nan
