"""A Gaussian target moving along a fixed schedule, followed by a strategy's walkers.

rho_t = N(m(t), diag s(t)^2) for t = k / K, k = 0..K: its log Z, moments and E[dU/dtheta]
are known exactly, so every weighted estimate can be compared with the truth.
"""

import jax
import jax.numpy as jnp
import numpy as np

from smc_ebm.energies import Gaussian

DIM = 2
K = 60
# Coordinate 0: the mean moves fast (unweighted walkers lag behind); coordinate 1: the scale
# shrinks from 1 to 0.6, where ULA at h = 0.3 inflates the variance by 1 / (1 - h / 2s^2) ~ 1.7.
MEAN_END = np.array([1.5, -0.5])
SCALE_END = np.array([1.2, 0.6])
STEP_SIZE = 0.3
CHECKPOINTS = (K // 4 - 1, K // 2 - 1, K - 1)  # scan index k: walkers follow rho_{k+1}


def schedule(num_steps=K):
    t = np.linspace(0.0, 1.0, num_steps + 1)[:, None]
    means = t * MEAN_END
    scales = 1.0 + t * (SCALE_END - 1.0)
    return jnp.asarray(means, jnp.float32), jnp.asarray(scales, jnp.float32)


def target(k, means, scales):
    return Gaussian(means[k], scales[k])


def exact(means, scales):
    """Exact E[x], E[x^2], log Z, E[dU/dmean], E[dU/dscale] along the schedule (float64)."""
    m = np.asarray(means, np.float64)
    s = np.asarray(scales, np.float64)
    return {
        "m1": m,
        "m2": m**2 + s**2,
        "log_Z": np.sum(np.log(np.sqrt(2 * np.pi) * s), axis=1),
        "dmean": np.zeros_like(m),
        "dscale": -1.0 / s,
    }


def simulate(strategy, keys, num_steps=K):
    """Follow the schedule with ``strategy``; one independent population per key in ``keys``.

    Returns a dict of numpy arrays with a leading replica axis, then the step axis: the
    state AFTER ``advance(.., E_k, E_{k+1}, k)`` (so row k describes rho_{k+1}), plus the
    initial positions ``x0``.
    """
    means, scales = schedule(num_steps)
    dummy = jnp.zeros((1, DIM), jnp.float32)

    def one(key):
        k0, k1 = jax.random.split(key)
        e0 = target(0, means, scales)
        state = strategy.init_state(k0, e0, dummy, e0.log_partition())

        def body(state, inp):
            k, kk = inp
            state, resampled, acc = strategy.advance(
                kk, state, target(k, means, scales), target(k + 1, means, scales), k
            )
            ess, log_z = strategy.ess_and_log_Z(state)
            out = {
                "x": state.position,
                "a": state.log_weights,
                "log_Z": log_z,
                "ess": ess,
                "resampled": resampled,
                "acc": acc,
                "pg_mean": state.param_grad.mean,
                "pg_scale": state.param_grad.scale,
                "model_energy": state.model_energy,
                "energy": state.energy,
            }
            return state, out

        _, out = jax.lax.scan(body, state, (jnp.arange(num_steps), jax.random.split(k1, num_steps)))
        out["x0"] = state.position
        return out

    return jax.tree.map(np.asarray, jax.jit(jax.vmap(one))(keys))
