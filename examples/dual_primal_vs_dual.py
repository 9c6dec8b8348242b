"""Primal (alpha = 0.05) against dual (alpha = 20) training of a shallow ReLU energy on S^14.

The setting of Domingo-Enrich, Bietti, Gabrié, Bruna & Vanden-Eijnden ("Dual training of
energy-based models with overparametrized shallow neural networks"): a student of m = 64
ReLU neurons on the sphere S^{d-1}, d = 15, density exp(-beta f) with beta = 10 and F1 norm
at most 1, learns a two-neuron teacher (weights -10, i.e. beta = 10 and unit weights) whose
neurons are at angle 2.87 rad (bimodal) or 1.37 rad (monomodal). Walkers move by projected
Langevin with s = 0.02; the neurons by the Wasserstein-Fisher-Rao step with time step s alpha.

For each teacher and regime it prints the KL estimate (teacher test samples) and the score
metric over the iterations, and the iteration at which the KL first comes within 10% of a
reference plateau (the larger of the two regimes' final KLs, median of the last 10% of the
records), hence the speed-up of the dual regime. Saves a figure and a JSON into --out-dir.

Default (2-core CPU, a few minutes): 4000 data, 1000 walkers, 20000 primal and 4000 dual
iterations (the dual regime is flat long before). The primal run is flagged as not converged
when the median KL of its last 10% of records is more than 10% below that of the records
at 40-50% of the run; its iteration count, hence the speed-up, is then a lower bound.
The paper's sizes: --n-data 100000 --num-walkers 200000 (GPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np

import smc_ebm as se
from smc_ebm.recipes import output_dir, stop_if_interrupted

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TEACHERS = {"bimodal": 2.87, "monomodal": 1.37}
REGIMES = {"primal": 0.05, "dual": 20.0}


def first_within(steps, kl, ref, frac=0.1):
    """First recorded step with KL <= (1 + frac) ref (None if never)."""
    hit = np.nonzero(kl <= (1 + frac) * ref)[0]
    return int(steps[hit[0]]) if hit.size else None


def converged(kl, frac=0.1):
    """The median of the last 10% of the records is within ``frac`` of that at 40-50%."""
    k = max(1, len(kl) // 10)
    last, prev = np.median(kl[-k:]), np.median(kl[4 * k : 5 * k])
    return bool(last >= (1 - frac) * prev)


def plateau(kl):
    return float(np.median(kl[-max(1, len(kl) // 10) :]))


def run(args, angle, key):
    kd, kt, ke, kf = jax.random.split(key, 4)
    data = se.datasets.sphere_teacher(kd, args.n_data, args.dim, angle=angle, weight=-10.0)
    test = data.teacher.sample(kt, args.num_test)
    energy = se.energies.ShallowReLU(args.dim, args.width, key=ke, beta=data.teacher.beta)
    metrics = {
        "kl": se.metrics.kl_estimate(test, data.teacher),
        "score": se.metrics.score_error(test, data.teacher),
    }
    out = {}
    for name, alpha in REGIMES.items():
        dual = se.Dual(args.num_walkers, step_size=args.step_size, alpha=alpha)
        t0 = time.perf_counter()
        res = se.fit(
            energy,
            data.samples,
            strategy=dual,
            optimizer=dual.optimizer(energy),
            num_steps=args.steps_primal if name == "primal" else args.steps_dual,
            key=kf,
            metrics=metrics,
            record_every=args.record_every,
            progress=not args.no_progress,
            chunk_size=max(args.record_every, 5000),
        )
        stop_if_interrupted(res)
        h = res.history
        out[name] = {
            "alpha": alpha,
            "step": h["step"].tolist(),
            "kl": h["kl"].tolist(),
            "score": h["score"].tolist(),
            "wall_s": time.perf_counter() - t0,
        }
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=15)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--n-data", type=int, default=4000)
    p.add_argument("--num-test", type=int, default=4000)
    p.add_argument("--num-walkers", type=int, default=1000)
    p.add_argument("--steps-primal", type=int, default=20000)
    p.add_argument("--steps-dual", type=int, default=4000)
    p.add_argument("--step-size", type=float, default=0.02)
    p.add_argument("--record-every", type=int, default=20)
    p.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=list(TEACHERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--out-dir", type=Path, default=Path("outputs/dual_primal_vs_dual"))
    args = p.parse_args()
    output_dir(args.out_dir)
    results = {}
    fig, axes = plt.subplots(
        2, len(args.teachers), figsize=(5 * len(args.teachers), 7), squeeze=False
    )
    for col, teacher in enumerate(args.teachers):
        res = run(args, TEACHERS[teacher], jax.random.fold_in(jax.random.key(args.seed), col))
        ref = max(plateau(np.asarray(r["kl"])) for r in res.values())
        print(
            f"\n== {teacher} teacher (angle {TEACHERS[teacher]} rad), d = {args.dim}, "
            f"m = {args.width}, N = {args.num_walkers}, s = {args.step_size}"
        )
        steps = np.asarray(res["primal"]["step"])
        show = np.unique(np.r_[0, np.geomspace(1, len(steps) - 1, 14).astype(int)])
        print("  step   " + "  ".join(f"{n:>7s} KL {n:>7s} score" for n in REGIMES))
        for i in show:
            row = "  ".join(
                f"{res[n]['kl'][i]:10.4f} {res[n]['score'][i]:13.3f}"
                if i < len(res[n]["kl"])
                else f"{'':10s} {'':13s}"
                for n in REGIMES
            )
            print(f"{int(steps[i]):7d}  {row}")
        hits = {}
        for name, r in res.items():
            kl = np.asarray(r["kl"])
            steps = np.asarray(r["step"])
            hits[name] = first_within(steps, kl, ref)
            own = first_within(steps, kl, plateau(kl))
            r.update(final_kl=plateau(kl), hit_ref=hits[name], hit_own=own, converged=converged(kl))
            print(
                f"  {name:6s} (alpha={r['alpha']}): final KL {plateau(kl):.4f}, within 10% of "
                f"{ref:.4f} at step {hits[name]}, of its own final at step {own}; "
                f"wall {r['wall_s']:.1f} s"
            )
        if hits["primal"] is not None and hits["dual"] is not None and hits["dual"] > 0:
            speed = hits["primal"] / hits["dual"]
            bound = "" if res["primal"]["converged"] else " (a lower bound: primal not converged)"
            print(f"  speed-up (iterations to within 10% of {ref:.4f}): {speed:.1f}x{bound}")
        else:
            speed = None
            print("  speed-up: primal did not reach the reference within the run")
        results[teacher] = {
            "angle": TEACHERS[teacher],
            "reference_kl": ref,
            "speedup": speed,
            "runs": res,
        }
        for name, r in res.items():
            axes[0, col].loglog(np.maximum(r["step"], 1), r["kl"], label=f"{name} (α={r['alpha']})")
            axes[1, col].loglog(np.maximum(r["step"], 1), r["score"], label=name)
        axes[0, col].axhline(1.1 * ref, color="k", ls=":", lw=0.8)
        axes[0, col].set_title(f"{teacher} teacher")
        axes[0, col].set_ylabel("KL(teacher || model)")
        axes[1, col].set_ylabel("score metric")
        axes[1, col].set_xlabel("iteration")
        axes[0, col].legend()
    fig.tight_layout()
    fig.savefig(args.out_dir / "dual_primal_vs_dual.png", dpi=120)
    (args.out_dir / "dual_primal_vs_dual.json").write_text(json.dumps(results))
    print(f"\nsaved {args.out_dir}/dual_primal_vs_dual.png and .json")


if __name__ == "__main__":
    main()
