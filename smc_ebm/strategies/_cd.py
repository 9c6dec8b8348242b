"""Contrastive divergence: walkers restarted at data every step (DESIGN 1.5)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from smc_ebm.kernels import evaluate, evaluate_uniform, ula_propose
from smc_ebm.strategies._base import (
    AbstractStrategy,
    ModelTerm,
    StepInfo,
    WalkerState,
    walker_checks,
)


@dataclasses.dataclass(frozen=True)
class CD(AbstractStrategy):
    """CD-P: ``num_walkers`` walkers restarted at random data points, ``num_steps`` ULA moves.

    The model term of the gradient is the plain mean over the moved walkers, which is
    biased towards the data (Hinton, 2002); kept as a baseline.

    Args:
        num_walkers: walkers per step (``None``: as many as the data batch, started at it).
        num_steps: ULA steps ``P`` from the data.
        step_size: ULA step ``h``.
    """

    num_walkers: int | None = None
    num_steps: int = 4
    step_size: float = 0.1

    def __post_init__(self) -> None:
        if self.num_walkers is not None and self.num_walkers < 2:
            raise ValueError(f"num_walkers must be >= 2; got {self.num_walkers}.")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1; got {self.num_steps}.")
        if not float(self.step_size) > 0 or not math.isfinite(float(self.step_size)):
            raise ValueError(f"step_size must be a positive finite number; got {self.step_size}.")

    def init_state(self, key, energy, data, log_Z0):
        n = self.num_walkers or data.shape[0]
        idx = jax.random.choice(key, data.shape[0], (n,), replace=n > data.shape[0])
        x = data[idx]
        u, g, pgrad = evaluate_uniform(energy, x)
        zero = jnp.zeros((), x.dtype)
        return WalkerState(x, u, g, jnp.zeros(n, x.dtype), zero, pgrad, jnp.mean(u))

    def model_term(self, key, state, energy, batch):
        k0, key = jax.random.split(key)
        if self.num_walkers is None:
            x = batch
        else:
            x = batch[jax.random.choice(k0, batch.shape[0], (self.num_walkers,))]
        _, g, _ = evaluate(energy, x)

        def body(carry, k):
            x, g = carry
            x = ula_propose(k, x, g, self.step_size)
            _, g, _ = evaluate(energy, x)
            return (x, g), None

        (x, _), _ = jax.lax.scan(body, (x, g), jax.random.split(key, self.num_steps - 1))
        x = ula_propose(jax.random.fold_in(key, self.num_steps), x, g, self.step_size)
        u, g, pgrad = evaluate_uniform(energy, x)
        n = x.shape[0]
        if self.num_walkers is None and state.position.shape[0] != n:
            new_state = state
        else:
            new_state = state._replace(position=x, energy=u, grad=g, param_grad=pgrad)
        one, nan = jnp.asarray(1.0, u.dtype), jnp.asarray(jnp.nan, u.dtype)
        return new_state, ModelTerm(pgrad, jnp.mean(u), one, nan)

    def step(self, key, state, energy_old, energy_new, step):
        info = StepInfo(
            jnp.asarray(False), jnp.asarray(1.0, state.energy.dtype), walker_checks(state)
        )
        return state, info
