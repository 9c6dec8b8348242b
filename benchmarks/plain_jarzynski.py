"""A plain, independent implementation of Algorithm 1 of Carbone et al. (NeurIPS 2023).

Jarzynski-weighted ULA walkers for maximum-likelihood training of a Gaussian-mixture energy,
written from the paper and sharing no code with ``smc_ebm`` (no feedback correction, no
observers, no fused evaluations: every gradient is recomputed with ``jax.grad``). Energy, as
``smc_ebm.energies.GaussianMixture`` with unit ``sigma``, so that both take the same parameters:

    U(x) = -logsumexp_k(logits_k - |x - means_k|^2 / (2 sigma^2)).

One step ``k`` (parameters ``theta_k``, walkers ``X_k``, log-weights ``A_k``):

1. ``D_k = mean_data dU_k/dtheta - sum_i softmax(A_k)_i dU_k(X_k^i)/dtheta``;
   ``theta_{k+1} = theta_k - lr * D_k`` (SGD, one learning rate per field);
2. ULA move with the OLD parameters: ``X' = X - h grad_x U_k(X) + sqrt(2h) xi``;
3. ``A += log [e^{-U_{k+1}(X')} q_{k+1}(X' -> X)] - log [e^{-U_k(X)} q_k(X -> X')]`` with
   ``q_k`` the ULA kernel of ``U_k``;
4. if ``ESS / N = 1 / (N sum p^2) < threshold``: systematic resampling, ``A = 0``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp


def energy(params, x, sigma=1.0):
    sq = jnp.sum((x - params["means"]) ** 2, axis=-1)
    return -logsumexp(params["logits"] - 0.5 * sq / sigma**2)


grad_x = jax.vmap(jax.grad(energy, argnums=1), in_axes=(None, 0))
grad_theta = jax.vmap(jax.grad(energy, argnums=0), in_axes=(None, 0))
energies = jax.vmap(energy, in_axes=(None, 0))


def log_ula_kernel(params, x, y, h):
    """log q(x -> y) of ULA on ``energy(params, .)`` up to a constant: N(y; x - h grad U, 2h I)."""
    mean = x - h * grad_x(params, x)
    return -jnp.sum((y - mean) ** 2, axis=-1) / (4 * h)


def systematic(key, log_w):
    n = log_w.shape[0]
    cdf = jnp.cumsum(jax.nn.softmax(log_w))
    u = (jax.random.uniform(key, dtype=log_w.dtype) + jnp.arange(n, dtype=log_w.dtype)) / n
    return jnp.minimum(jnp.searchsorted(cdf, u), n - 1)


def step(carry, key, data, lr, h, threshold):
    params, x, a = carry
    k_move, k_res = jax.random.split(key)
    p = jax.nn.softmax(a)
    g_data = jax.tree.map(lambda g: jnp.mean(g, axis=0), grad_theta(params, data))
    g_model = jax.tree.map(lambda g: jnp.tensordot(p, g, axes=1), grad_theta(params, x))
    new = {f: params[f] - lr[f] * (g_data[f] - g_model[f]) for f in params}
    y = x - h * grad_x(params, x) + jnp.sqrt(2 * h) * jax.random.normal(k_move, x.shape)
    a = (
        a
        - energies(new, y)
        + log_ula_kernel(new, y, x, h)
        + energies(params, x)
        - log_ula_kernel(params, x, y, h)
    )
    ess = 1.0 / (a.shape[0] * jnp.sum(jax.nn.softmax(a) ** 2))
    idx = jnp.where(ess < threshold, systematic(k_res, a), jnp.arange(a.shape[0]))
    a = jnp.where(ess < threshold, jnp.zeros_like(a), a)
    return (new, y[idx], a), (new["logits"], ess < threshold)


@functools.partial(jax.jit, static_argnames=("step_size", "threshold", "num_steps"))
def train(key, params, walkers, data, lr, *, step_size, threshold, num_steps):
    """Run Algorithm 1 for ``num_steps`` steps from walkers ``X_0`` with zero log-weights.

    ``params = {"logits": (K,), "means": (K, d)}``, ``lr = {"logits": .., "means": ..}``.
    Returns ``(params, walkers, log_weights), (logits, resampled)``: the final state, and the
    logits after each step ``(num_steps, K)`` and whether that step resampled.
    """
    a0 = jnp.zeros(walkers.shape[0], walkers.dtype)

    def body(carry, k):
        return step(carry, k, data, lr, step_size, threshold)

    return jax.lax.scan(body, (params, walkers, a0), jax.random.split(key, num_steps))
