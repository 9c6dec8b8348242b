"""Jump rules of ``se.strategies.with_lazy_target`` on a fixed path with exact answers.

The energy is a two-mode Gaussian mixture in 2-d, modes 12 standard deviations apart (no MALA
walker crosses), so the mass of each mode is :math:`Z_k = 2\\pi e^{\\ell_k}` exactly. The
parameter path is fixed in advance (it does not depend on the walkers, so Jarzynski's equality
holds exactly): over 300 steps mode 0 gains 1.5 in logit and drifts by one standard deviation,
and both means jitter by N(0, 0.05^2) around that, as an optimizer's noise makes them.

For each rule, 96 replicas of 128 MALA walkers (step 0.3, resampling below an ESS of 0.5) follow
the path from exact samples of its start. Per mode, the unnormalised estimate
:math:`e^{c}\\frac1N\\sum_i e^{B_i} 1[X_i \\in k]` has expectation :math:`Z_k` for an unbiased
rule; the table prints its mean over the replicas in standard errors from :math:`Z_k` (z), the
sd over the replicas of what the path added to :math:`\\log(\\hat Z_0/\\hat Z_1)` (its value at
the end minus at the start, so the first draw's error is left out), and the jumps of the target.

Rules: Algorithm 1 (``se.Jarzynski``: the target follows every step), the library's rule (the
probes' ESS below 0.9), the walkers' own reweighting ESS (``ESS(B) < 0.9 ESS(A)``) and a fixed
interval (every 50 steps). ``tests/test_lazy_target.py`` checks the first two.

    python benchmarks/lazy_target_rules.py
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

import smc_ebm as se
from smc_ebm.energies import GaussianMixture

STEPS, WALKERS, REPLICAS = 300, 128, 96
MEANS = jnp.array([[-6.0, 0.0], [6.0, 0.0]])


def path():
    """``(means (STEPS+1, 2, 2), logits (STEPS+1, 2))`` of the fixed path."""
    t = jnp.linspace(0.0, 1.0, STEPS + 1)
    logits = jnp.stack([1.5 * t, jnp.zeros_like(t)], axis=1)
    drift = jnp.zeros((STEPS + 1, 2, 2)).at[:, 0, 1].set(t)
    jitter = 0.05 * jax.random.normal(jax.random.key(11), (STEPS + 1, 2, 2))
    jitter = jitter.at[0].set(0.0)
    return MEANS[None] + drift + jitter, logits


def mode_masses(strategy):
    """Per replica, each mode's estimated mass at the start and at the end, and the jumps.

    Returns ``(start (R, 2), end (R, 2), exact (2,), jumps (R,))``.
    """
    means, logits = path()
    first = GaussianMixture(means=MEANS, logits=jnp.zeros(2))
    data = first.sample(jax.random.key(0), 100)

    def masses(state):
        x, b = strategy.walkers(state)
        inner = getattr(state, "walkers", state)
        w = jnp.exp(b + inner.log_Z_anchor)
        left = x[:, 0] < 0
        return jnp.stack([jnp.mean(jnp.where(left, w, 0.0)), jnp.mean(jnp.where(left, 0.0, w))])

    def one(key):
        k0, k1 = jax.random.split(key)
        state = strategy.init_state(k0, first, data, first.log_partition())

        def body(state, inp):
            k, j = inp
            e_old = GaussianMixture(means=means[j], logits=logits[j])
            e_new = GaussianMixture(means=means[j + 1], logits=logits[j + 1])
            state, _ = strategy.step(k, state, e_old, e_new, j)
            return state, None

        start = masses(state)
        keys = jax.random.split(k1, STEPS)
        state, _ = jax.lax.scan(body, state, (keys, jnp.arange(STEPS)))
        return start, masses(state), getattr(state, "retargets", STEPS)

    start, end, jumps = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), REPLICAS))
    exact = 2 * np.pi * np.exp(np.asarray(logits[-1]))
    return np.asarray(start), np.asarray(end), exact, np.asarray(jumps)


def summary(start, end, exact):
    """``(z-scores of the mean mass per mode, sd of the path-added log mass ratio)``."""
    ratio = end / exact
    z = (ratio.mean(axis=0) - 1) / (ratio.std(axis=0, ddof=1) / np.sqrt(len(ratio)))
    added = np.log(end[:, 0] / end[:, 1]) - np.log(start[:, 0] / start[:, 1])
    return z, float(np.std(added))


@dataclasses.dataclass(frozen=True)
class WalkerESSRule(se.strategies.LazyTarget):
    """Jumps when the walkers' own reweighting loses ESS: ``ESS(B) < threshold ESS(A)``."""

    def should_jump(self, state, log_weights, shift, probe_energy, step):
        ess = se.smc.ess_fraction
        return ess(log_weights - shift) < self.threshold * ess(log_weights)


@dataclasses.dataclass(frozen=True)
class IntervalRule(se.strategies.LazyTarget):
    """Jumps every ``every`` steps."""

    every: int = 50

    def should_jump(self, state, log_weights, shift, probe_energy, step):
        return (step + 1) % self.every == 0


def rules():
    walkers = se.Jarzynski(WALKERS, 0.3, kernel="mala", resampling=se.ESSResampling(0.5))
    return {
        "Algorithm 1 (every step)": walkers,
        "probes' ESS < 0.9 (the library's rule)": se.strategies.with_lazy_target(walkers, 0.9),
        "walkers' ESS(B) < 0.9 ESS(A)": WalkerESSRule(walkers, 0.9),
        "every 50 steps": IntervalRule(walkers, 0.9),
    }


def main() -> dict:
    t0 = time.time()
    out = {}
    print("| rule | z, mode 0 | z, mode 1 | sd of the added log ratio | jumps |")
    print("|---|---|---|---|---|")
    for name, strategy in rules().items():
        start, end, exact, jumps = mode_masses(strategy)
        z, sd = summary(start, end, exact)
        out[name] = {"z": z.tolist(), "sd": sd, "jumps": float(jumps.mean())}
        print(f"| {name} | {z[0]:+.1f} | {z[1]:+.1f} | {sd:.3f} | {jumps.mean():.1f} |", flush=True)
    print(f"\n{REPLICAS} replicas of {WALKERS} walkers, {STEPS} steps; {time.time() - t0:.0f} s")
    return out


if __name__ == "__main__":
    main()
