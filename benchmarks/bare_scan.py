"""Algorithm 1 as a bare ``lax.scan`` (no library code), to time the library against.

The paper's Gaussian-mixture setting: ``U(x) = -logsumexp_k(l_k - |x - mu_k|^2 / 2)``, SGD per
field, ULA moves with the OLD parameters, Jarzynski increments, ESS-triggered systematic
resampling. Every gradient is recomputed where it is needed (the walkers' x-gradient before the
move, energies and x-gradients after it, the weighted parameter gradient), as a plain
implementation would: the library's fused step evaluates each walker once per step instead.
``bare_pcd`` is the same loop without weights, with walkers started at data.

    python benchmarks/bare_scan.py --dim 50 --num-walkers 10000 --steps 200
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp


def energy(theta, x):
    means, logits = theta
    return -jax.nn.logsumexp(logits - 0.5 * jnp.sum((x - means) ** 2, axis=-1))


def _batch(theta, x):
    return jax.vmap(energy, (None, 0))(theta, x)


def _value_and_grad_x(theta, x):
    return jax.vmap(jax.value_and_grad(energy, 1), (None, 0))(theta, x)


def _sgd(theta, data, model_grad, lr):
    data_grad = jax.grad(lambda th: jnp.mean(_batch(th, data)))(theta)
    return jax.tree.map(lambda p, d, m, r: p - r * (d - m), theta, data_grad, model_grad, lr)


def _systematic(key, w):
    n = w.shape[0]
    u = (jax.random.uniform(key, dtype=w.dtype) + jnp.arange(n, dtype=w.dtype)) / n
    return jnp.clip(jnp.searchsorted(jnp.cumsum(w), u), 0, n - 1)


def make_jarzynski(data, h, lr, threshold):
    """``run(carry, keys)``: a jitted scan of Algorithm 1; carry = (theta, x, a, anchor)."""

    def step(carry, key):
        theta, x, a, anchor = carry
        k_move, k_res = jax.random.split(key)
        w = jax.nn.softmax(a)
        model_grad = jax.grad(lambda th: jnp.sum(w * _batch(th, x)))(theta)
        new_theta = _sgd(theta, data, model_grad, lr)
        u0, g0 = _value_and_grad_x(theta, x)
        y = x - h * g0 + jnp.sqrt(2 * h) * jax.random.normal(k_move, x.shape, x.dtype)
        u1, g1 = _value_and_grad_x(new_theta, y)
        # A = alpha_k(x, y) - alpha_{k+1}(y, x), alpha(x, y) = U(x) + (y-x).g/2 + h|g|^2/4
        fwd = u0 + 0.5 * jnp.sum((y - x) * g0, -1) + 0.25 * h * jnp.sum(g0 * g0, -1)
        bwd = u1 + 0.5 * jnp.sum((x - y) * g1, -1) + 0.25 * h * jnp.sum(g1 * g1, -1)
        a = a + fwd - bwd
        n = a.shape[0]
        ess = jnp.exp(2 * jax.nn.logsumexp(a) - jax.nn.logsumexp(2 * a)) / n
        lme = jax.nn.logsumexp(a) - jnp.log(n)

        def resample():
            return _systematic(k_res, jax.nn.softmax(a)), jnp.zeros_like(a), anchor + lme

        idx, a, anchor = jax.lax.cond(ess < threshold, resample, lambda: (jnp.arange(n), a, anchor))
        return (new_theta, y[idx], a, anchor), ess

    @jax.jit
    def run(carry, keys):
        return jax.lax.scan(step, carry, keys)

    return run


def make_pcd(data, h, lr):
    """``run(carry, keys)``: a jitted scan of PCD; carry = (theta, x)."""

    def step(carry, key):
        theta, x = carry
        model_grad = jax.grad(lambda th: jnp.mean(_batch(th, x)))(theta)
        new_theta = _sgd(theta, data, model_grad, lr)
        _, g = _value_and_grad_x(new_theta, x)
        x = x - h * g + jnp.sqrt(2 * h) * jax.random.normal(key, x.shape, x.dtype)
        return (new_theta, x), None

    @jax.jit
    def run(carry, keys):
        return jax.lax.scan(step, carry, keys)

    return run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--num-walkers", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    key = jax.random.key(0)
    data = jax.random.normal(key, (10_000, args.dim))
    theta = (0.1 * jax.random.normal(jax.random.key(1), (2, args.dim)), jnp.zeros(2))
    lr = (0.025, 0.125)
    x = data[: args.num_walkers]
    runs = {
        "bare Jarzynski": (
            make_jarzynski(data, 0.1, lr, 1 / 1.05),
            (theta, x, jnp.zeros(len(x)), 0.0),
        ),
        "bare PCD": (make_pcd(data, 0.1, lr), (theta, x)),
    }
    for name, (run, carry) in runs.items():
        keys = jax.random.split(jax.random.key(2), args.steps)
        jax.block_until_ready(run(carry, keys))  # compile
        best = float("inf")
        for _ in range(args.reps):
            t0 = time.perf_counter()
            jax.block_until_ready(run(carry, keys))
            best = min(best, time.perf_counter() - t0)
        print(f"{name}: {1e3 * best / args.steps:.3f} ms/step (best of {args.reps})")


if __name__ == "__main__":
    main()
