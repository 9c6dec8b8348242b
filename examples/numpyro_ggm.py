"""A doubly-intractable model in NumPyro with a known answer: a Gaussian graphical model.

The model is written through its precision matrix, ``numpyro.factor("quad", -x^T L L^T x / 2)``
with ``L`` a ``numpyro.param`` (scaled unit lower Cholesky), and its normaliser left out. For
zero-mean data the maximum-likelihood precision is the inverse sample covariance
``S^{-1}`` and ``log Z = d/2 log 2 pi - 1/2 log det Lambda`` in closed form, so the learned
parameters and Jarzynski's tracked log Z can be checked exactly. PCD tracks no log Z: its final
energy's log Z is estimated afterwards with ``se.sample``.

Adam's learning rate warms up linearly over the first ``--warmup`` steps (default 500), then
decays a thousandfold over the run. Without the warm-up, Adam moves every parameter by about
the full rate from the first step on, the target runs ahead of the walkers' moves, and the
weights' spread in those first steps dominates the tracked log Z's error (docs/numpyro.md).

Default (about a minute per strategy and seed on 2 CPU cores)::

    python examples/numpyro_ggm.py --dim 5 --seeds 0 1 2

Writes ``ggm.json`` into ``--out`` (default ``outputs/numpyro_ggm``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.distributions import constraints

import smc_ebm as se
from smc_ebm.recipes import output_dir


def ggm(d):
    chol = numpyro.param("L", jnp.eye(d), constraint=constraints.scaled_unit_lower_cholesky)
    x = numpyro.sample("x", dist.ImproperUniform(constraints.real_vector, (), (d,)))
    numpyro.factor("quad", -0.5 * jnp.sum((chol.T @ x) ** 2))


def log_z_of(prec):
    d = prec.shape[0]
    return 0.5 * d * math.log(2 * math.pi) - 0.5 * float(np.linalg.slogdet(prec)[1])


def teacher(dim, seed):
    rng = np.random.default_rng(1000 + seed)
    a = np.tril(rng.normal(scale=0.4, size=(dim, dim)), -1) + np.diag(rng.uniform(0.7, 1.5, dim))
    return a @ a.T


def run(
    strategy,
    dim,
    n_data,
    num_walkers,
    steps,
    lr,
    step_size,
    seed,
    num_observers=None,
    progress=True,
    warmup=500,
    observer_step_size=None,
    init="model",
):
    prec_true = teacher(dim, seed)
    data = jax.random.multivariate_normal(
        jax.random.key(seed), jnp.zeros(dim), jnp.asarray(np.linalg.inv(prec_true)), (n_data,)
    )
    data64 = np.asarray(data, np.float64)
    mle = np.linalg.inv(data64.T @ data64 / n_data)
    energy = se.energies.from_numpyro(ggm, dim, trainable=True)
    if strategy == "jarzynski":
        strat = se.strategies.with_observers(  # MALA observers give the tracked log Z
            se.Jarzynski(num_walkers, step_size, init=init),
            num_observers or num_walkers,
            step_size=observer_step_size,
        )
    else:
        strat = se.PCD(num_walkers, step_size)

    def schedule(k):  # a linear warm-up, and lr decayed a thousandfold over the run
        k = k.astype(jnp.float32)
        return lr * 0.1 ** (3 * k / steps) * jnp.minimum(1.0, (k + 1) / max(warmup, 1))

    t0 = time.perf_counter()
    res = se.fit(
        energy,
        data,
        strategy=strat,
        optimizer=optax.adam(schedule),
        num_steps=steps,
        key=jax.random.key(100 + seed),
        progress=progress,
        log_Z0=log_z_of(np.eye(dim)),
    )  # exact at the initial L = I
    wall = time.perf_counter() - t0
    chol = np.asarray(res.energy.param_values()["L"], np.float64)
    prec = chol @ chol.T
    out = {
        "strategy": strategy,
        "seed": seed,
        "warmup": warmup,
        "wall_s": wall,
        "rel_err_vs_mle": float(np.linalg.norm(prec - mle) / np.linalg.norm(mle)),
        "max_entry_err_vs_mle": float(np.max(np.abs(prec - mle)) / np.max(np.abs(mle))),
        "log_Z_exact_final": log_z_of(prec),
        "log_Z_exact_mle": log_z_of(mle),
    }
    if strategy == "jarzynski":
        out["log_Z_tracked"] = res.log_Z
        out["drivers_min_ess"] = float(np.nanmin(np.asarray(res.history["ess"])))
        out["resamplings"] = int(np.sum(res.history["resampled"]))
    else:
        s = se.sample(
            res.energy,
            key=jax.random.key(200 + seed),
            num_walkers=4000,
            num_steps=200,
            num_runs=8,
            step_size=step_size,
            init=dist.Normal(0, 2).expand([dim]).to_event(1),
            progress=progress,
        )
        out["log_Z_tracked"] = s.log_Z
        out["log_Z_sample_se"] = s.log_Z_se
    out["log_Z_err"] = out["log_Z_tracked"] - out["log_Z_exact_final"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=5)
    p.add_argument("--n-data", type=int, default=2000)
    p.add_argument("--num-walkers", type=int, default=2048)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--step-size", type=float, default=0.05)
    p.add_argument(
        "--num-observers",
        type=int,
        default=None,
        help="Jarzynski's observers (default num-walkers)",
    )
    p.add_argument(
        "--warmup", type=int, default=500, help="steps of the learning rate's linear warm-up"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--strategies", nargs="+", default=["jarzynski", "pcd"])
    p.add_argument("--out", default="outputs/numpyro_ggm")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    a = p.parse_args(argv)
    rows = []
    for strategy in a.strategies:
        for seed in a.seeds:
            row = run(
                strategy,
                a.dim,
                a.n_data,
                a.num_walkers,
                a.steps,
                a.lr,
                a.step_size,
                seed,
                a.num_observers,
                progress=not a.no_progress,
                warmup=a.warmup,
            )
            rows.append(row)
            print(
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )
    out = Path(a.out)
    output_dir(out)
    (out / "ggm.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    with jax.numpy_dtype_promotion("standard"):
        main()
