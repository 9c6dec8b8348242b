"""What a Jarzynski step's resampling costs, by variant, inside a compiled ``lax.scan``.

Each variant runs ``--steps`` steps of: new log-weights (a random walk), the ESS, a decision to
resample one step in three, the ancestors, and the gather of an ``(N, d)`` walker array by
them, as ``fit``'s Jarzynski step does. The variants differ in how the ancestors are found:

* ``none``: no resampling (the identity gather only): the floor;
* ``cond-flip``: a conditional whose taken branch only reverses the order: its own cost;
* ``cond-blackjax``: ``lax.cond`` around blackjax's systematic resampler (``jnp.searchsorted``
  with its default ``method="scan"``, a loop of log2(N) small steps): the library's way;
* ``cond-sort``: the same with ``jnp.searchsorted(..., method="sort")`` (one sort, no loop);
* ``cond-unrolled``: the same with ``method="scan_unrolled"`` (the loop unrolled);
* ``where-*``: no conditional; the ancestors are computed every step and selected with
  ``jnp.where`` (on a GPU a conditional reads its predicate on the host).

It prints the median time per step over ``--reps`` calls, round-robin, for each N.

    python benchmarks/resampling_cost.py                 # N = 10^4 and 10^5, d = 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import blackjax.smc.resampling as bjr
import jax
import jax.numpy as jnp

VARIANTS = (
    "none",
    "cond-flip",
    "cond-blackjax",
    "cond-sort",
    "cond-unrolled",
    "where-blackjax",
    "where-sort",
    "where-unrolled",
)


def systematic(method: str):
    """blackjax's systematic resampler with ``searchsorted(..., method=method)``."""

    def resample(key, weights, num_samples):
        n = weights.shape[0]
        u = jax.random.uniform(key, ())
        cumsum = jnp.cumsum(weights)
        linspace = (jnp.arange(num_samples, dtype=weights.dtype) + u) / num_samples
        return jnp.clip(jnp.searchsorted(cumsum, linspace, method=method), 0, n - 1)

    return resample


def make(variant: str, steps: int):
    resampler = {
        "sort": systematic("sort"),
        "unrolled": systematic("scan_unrolled"),
    }.get(variant.split("-")[-1], bjr.systematic)

    def step(carry, k):
        x, a, key = carry
        key, k1, k2 = jax.random.split(key, 3)
        a = a + 0.05 * jax.random.normal(k1, a.shape)
        w = jax.nn.softmax(a)
        ess = 1.0 / jnp.sum(w**2) / a.shape[0]
        do = (k % 3 == 0) & (ess > 0)
        n = a.shape[0]
        ident = jnp.arange(n, dtype=jnp.int32)
        if variant == "none":
            idx = ident
        elif variant == "cond-flip":  # the conditional alone: a permutation in one branch
            idx = jax.lax.cond(do, lambda: jnp.flip(ident), lambda: ident)
        elif variant.startswith("cond"):
            idx = jax.lax.cond(do, lambda: resampler(k2, w, n).astype(jnp.int32), lambda: ident)
        else:
            idx = jnp.where(do, resampler(k2, w, n).astype(jnp.int32), ident)
        a = jnp.where(do, jnp.zeros_like(a), a)
        return (x[idx] + 1e-3, a, key), ess

    @jax.jit
    def run(x, a, key):
        return jax.lax.scan(step, (x, a, key), jnp.arange(steps))

    return run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5])
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--reps", type=int, default=9)
    args = p.parse_args(argv)
    print(f"jax {jax.__version__}, devices {jax.devices()}; d = {args.dim}, {args.steps} steps")
    out = {}
    for n in args.sizes:
        x = jax.random.normal(jax.random.key(0), (n, args.dim))
        a = jnp.zeros(n)
        runs = {v: make(v, args.steps) for v in VARIANTS}
        for v in VARIANTS:  # compiles
            jax.block_until_ready(runs[v](x, a, jax.random.key(1)))
        times = {v: [] for v in VARIANTS}
        for rep in range(args.reps):
            for v in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
                t0 = time.perf_counter()
                jax.block_until_ready(runs[v](x, a, jax.random.key(2 + rep)))
                times[v].append((time.perf_counter() - t0) / args.steps)
        out[n] = {v: statistics.median(t) for v, t in times.items()}
        line = ", ".join(f"{v} {1e3 * t:.4f}" for v, t in out[n].items())
        print(f"N = {n}: ms/step (median of {args.reps}): {line}", flush=True)
    return out


if __name__ == "__main__":
    main()
