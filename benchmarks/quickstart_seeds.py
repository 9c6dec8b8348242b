"""The README's Quickstart, as written, over several seeds: what it learns and how much that varies.

Every seed draws its own data, initial student and run key (``jax.random.key(3 * seed + i)``
for i = 0, 1, 2; seed 0 is the README's snippet exactly). Per seed it records the learned
weight of the light mode, the data's own fraction in that mode (what maximum likelihood
targets), the learned weight averaged over the last quarter of the steps, the walkers' weighted
fraction in that mode, and the final log Z against the exact value for the learned mixture
(log Z = log sum_k exp(logit_k) + d/2 log 2 pi sigma^2). It prints mean, sd and
SE over seeds and writes a JSON (rewritten after every seed).

    python benchmarks/quickstart_seeds.py --seeds 10     # the README's numbers (about 10 min)
    python benchmarks/quickstart_seeds.py --tiny         # a few seconds
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
import optax

import smc_ebm as se
from smc_ebm.recipes import stop_if_interrupted

A, B = -10.0, 6.0  # the teacher's modes (two_mode_teacher's defaults), light mode at A e_1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="d=3, 200 points, 60 steps, 2 seeds")
    default_out = Path(__file__).parent / "results" / "quickstart.json"
    p.add_argument("--out", type=Path, default=default_out)
    args = p.parse_args(argv)
    args.size = dict(dim=50, n=10_000, steps=8000)
    if args.tiny:
        args.size, args.seeds = dict(dim=3, n=200, steps=60), 2
    return args


def light_mode(x: jax.Array) -> jax.Array:
    return (x[:, 0] < 0.5 * (A + B)).astype(x.dtype)


def light_weight(energy) -> jax.Array:
    center = jnp.zeros(energy.means.shape[1]).at[0].set(A)
    return energy.weights[jnp.argmin(jnp.sum((energy.means - center) ** 2, axis=-1))]


def run_seed(seed: int, size: dict) -> dict:
    # The README's Quickstart, with its three keys shifted by 3 * seed.
    dim, n, steps = size["dim"], size["n"], size["steps"]
    data = se.datasets.two_mode_teacher(jax.random.key(3 * seed), n=n, dim=dim)
    energy = se.energies.GaussianMixture.init(
        jax.random.key(3 * seed + 1), num_modes=2, dim=dim, scale=0.1
    )
    strategy = se.Jarzynski(
        num_walkers=n,
        step_size=0.1,
        resampling=se.ESSResampling(threshold=1 / 1.05, method="systematic"),
    )
    t0 = time.perf_counter()
    result = se.fit(
        energy,
        data.samples,
        strategy=strategy,
        optimizer=se.optim.by_field(logits=optax.sgd(0.125), means=optax.sgd(0.025)),
        num_steps=steps,
        key=jax.random.key(3 * seed + 2),
        metrics={"weight": light_weight},
        record_every=max(1, steps // 200),
        progress=False,
    )
    stop_if_interrupted(result)
    hist = result.history
    late = hist["step"] > 0.75 * steps
    logits = result.energy.logits
    sigma = result.energy.sigma
    exact_log_z = float(jax.nn.logsumexp(logits) + 0.5 * dim * math.log(2 * math.pi * sigma**2))
    p = jax.nn.softmax(result.log_weights)
    return {
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        "data_fraction": float(jnp.mean(light_mode(data.samples))),
        "weight": float(light_weight(result.energy)),
        "weight_last_quarter": float(np.mean(hist["weight"][late])),
        "walker_fraction": float(jnp.sum(p * light_mode(result.walkers))),
        "log_Z_error": float(result.log_Z) - exact_log_z,
    }


def summary(runs: list[dict]) -> dict:
    out = {}
    for key in ("data_fraction", "weight", "weight_last_quarter", "walker_fraction", "log_Z_error"):
        v = np.array([r[key] for r in runs])
        out[key] = dict(mean=v.mean(), sd=v.std(ddof=1), se=v.std(ddof=1) / math.sqrt(len(v)))
    d = np.array([r["weight"] - r["data_fraction"] for r in runs])
    out["weight_minus_data"] = dict(
        mean=d.mean(), sd=d.std(ddof=1), se=d.std(ddof=1) / math.sqrt(len(d))
    )
    return {k: {s: float(x) for s, x in v.items()} for k, v in out.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(seed, args.size))
        r = runs[-1]
        print(
            f"seed {seed:2d}: weight {r['weight']:.4f}"
            f" (last quarter {r['weight_last_quarter']:.4f})"
            f"  data {r['data_fraction']:.4f}  walkers {r['walker_fraction']:.4f}"
            f"  log Z error {r['log_Z_error']:+.3f}  {r['seconds']:.0f} s",
            flush=True,
        )
        if len(runs) >= 2:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"size": args.size, "runs": runs, "summary": summary(runs)}))
            tmp.replace(args.out)
    for key, s in summary(runs).items():
        print(f"{key:22} mean {s['mean']:+.4f}  sd {s['sd']:.4f}  SE {s['se']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
