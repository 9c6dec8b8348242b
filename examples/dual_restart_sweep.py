"""Restart probability p_R: from maximum likelihood (p_R = 0) to score matching (p_R = s alpha).

Dual training (alpha = 20, s = 0.02) of the m = 64 shallow ReLU student on S^14 with walkers
restarted at random data points with probability p_R per step (Domingo-Enrich et al.):
p_R = 0 is maximum likelihood, p_R = s alpha = 0.4 score matching, values in between
interpolate; an annealed p_R (from s alpha to 0) is run too. Prints the final KL and score
metric of each and saves a figure and a JSON into --out-dir.

Default (2-core CPU, a few minutes): bimodal teacher, 4000 data, 1000 walkers, 3000
iterations. The paper's sizes: --n-data 100000 --num-walkers 200000 (GPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np
import optax

import smc_ebm as se
from smc_ebm.recipes import output_dir, stop_if_interrupted

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=15)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--angle", type=float, default=2.87)
    p.add_argument("--n-data", type=int, default=4000)
    p.add_argument("--num-test", type=int, default=4000)
    p.add_argument("--num-walkers", type=int, default=1000)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--alpha", type=float, default=20.0)
    p.add_argument("--step-size", type=float, default=0.02)
    p.add_argument("--record-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--out-dir", type=Path, default=Path("outputs/dual_restart_sweep"))
    args = p.parse_args()
    output_dir(args.out_dir)
    kd, kt, ke, kf = jax.random.split(jax.random.key(args.seed), 4)
    data = se.datasets.sphere_teacher(kd, args.n_data, args.dim, angle=args.angle)
    test = data.teacher.sample(kt, args.num_test)
    energy = se.energies.ShallowReLU(args.dim, args.width, key=ke, beta=data.teacher.beta)
    metrics = {
        "kl": se.metrics.kl_estimate(test, data.teacher),
        "score": se.metrics.score_error(test, data.teacher),
    }
    sm = min(args.step_size * args.alpha, 1.0)
    settings = {
        "p_R = 0 (ML)": 0.0,
        f"p_R = {sm / 100:g}": sm / 100,
        f"p_R = {sm / 10:g}": sm / 10,
        f"p_R = s alpha = {sm:g} (SM)": sm,
        "annealed s alpha -> 0": optax.linear_schedule(sm, 0.0, args.steps // 2),
    }
    print(
        f"teacher angle {args.angle} rad, d = {args.dim}, m = {args.width}, "
        f"N = {args.num_walkers}, s = {args.step_size}, alpha = {args.alpha}"
    )
    print(f"{'setting':>28s} {'final KL':>9s} {'min KL':>9s} {'final score':>12s} {'wall s':>7s}")
    out = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, p_r in settings.items():
        dual = se.Dual(
            args.num_walkers, step_size=args.step_size, alpha=args.alpha, restart_prob=p_r
        )
        t0 = time.perf_counter()
        res = se.fit(
            energy,
            data.samples,
            strategy=dual,
            optimizer=dual.optimizer(energy),
            num_steps=args.steps,
            key=kf,
            metrics=metrics,
            record_every=args.record_every,
            progress=not args.no_progress,
        )
        stop_if_interrupted(res)
        h = res.history
        tail = max(1, len(h["kl"]) // 10)
        final_kl, final_sc = float(np.median(h["kl"][-tail:])), float(np.median(h["score"][-tail:]))
        wall = time.perf_counter() - t0
        print(
            f"{name:>28s} {final_kl:9.4f} {float(h['kl'].min()):9.4f} {final_sc:12.3f} {wall:7.1f}"
        )
        out[name] = {
            "step": h["step"].tolist(),
            "kl": h["kl"].tolist(),
            "score": h["score"].tolist(),
            "final_kl": final_kl,
            "final_score": final_sc,
            "wall_s": wall,
        }
        axes[0].loglog(np.maximum(h["step"], 1), h["kl"], label=name)
        axes[1].loglog(np.maximum(h["step"], 1), h["score"], label=name)
    axes[0].set_ylabel("KL(teacher || model)")
    axes[1].set_ylabel("score metric")
    for ax in axes:
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out_dir / "dual_restart_sweep.png", dpi=120)
    (args.out_dir / "dual_restart_sweep.json").write_text(json.dumps(out))
    print(f"saved {args.out_dir}/dual_restart_sweep.png and .json")


if __name__ == "__main__":
    main()
