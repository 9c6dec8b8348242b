"""Teacher-student Gaussian mixture: Jarzynski vs PCD, CD and unweighted walkers.

The setting of Carbone, Hua, Coste & Vanden-Eijnden (NeurIPS 2023), Sec. 5.1 and Appendix B.1:
a 50-d teacher with two unit Gaussian modes at ``-10 e_1`` (weight 1/4) and ``+6 e_1``
(weight 3/4), 10^4 samples; a two-mode student with unnormalised logits, 10^4 walkers,
ULA step ``h = 0.1``, 8000 SGD steps with learning rate 0.125 on the logits and 0.025 on
the means, resampling (systematic) when the ESS drops below 1/1.05.

For each strategy and seed it prints, as mean ± sd over the seeds:

* the learned weight of the student mode nearest the teacher's ``-10 e_1`` mode (target 0.25),
* the exact KL(teacher || student) (the student's exact log Z),
* the Jarzynski estimate of the KL (its cross-entropy estimate minus the teacher entropy)
  and its gap to the exact KL,
* the fraction of recorded steps at which that weight is < 0.05 or > 0.95 (mode collapse),
* the time per step (wall time of ``fit`` divided by the steps, compilation included),

and saves a figure and a JSON of the numbers into ``--out-dir``.

The default is the paper's full setting (long: 4 strategies x 5 seeds x 8000 steps at
d = 50 and 10^4 walkers; minutes per run on a GPU, much longer on a CPU). A quick check::

    python examples/gmm_teacher_student.py --dim 10 --n-data 2000 --num-walkers 2000 \
        --steps 300 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import smc_ebm as se
from smc_ebm.recipes import output_dir, stop_if_interrupted

STRATEGIES = ("Jarzynski", "PCD", "CD", "Unweighted")
TARGET = 0.25
A, B = -10.0, 6.0
COLLAPSE = (0.05, 0.95)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dim", type=int, default=50, help="dimension of the teacher")
    p.add_argument("--n-data", type=int, default=10_000, help="teacher samples")
    p.add_argument(
        "--num-walkers", type=int, default=10_000, help="walkers (persistent strategies)"
    )
    p.add_argument("--steps", type=int, default=8000, help="optimizer steps")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument("--record-every", type=int, default=10, help="history resolution in steps")
    p.add_argument("--step-size", type=float, default=0.1, help="ULA step h")
    p.add_argument("--lr-logits", type=float, default=0.125, help="SGD learning rate of logits")
    p.add_argument("--lr-means", type=float, default=0.025, help="SGD learning rate of means")
    p.add_argument("--ess-threshold", type=float, default=1 / 1.05, help="Jarzynski resampling")
    p.add_argument("--resampling", default="systematic", choices=sorted(se.smc.RESAMPLERS))
    p.add_argument("--observers", type=int, default=0, help="Jarzynski: observer walkers (0: none)")
    p.add_argument(
        "--reseed-every",
        type=int,
        default=0,
        help="Jarzynski: reseed the driving walkers from the observers every K steps (0: never)",
    )
    p.add_argument("--cd-steps", type=int, default=4, help="ULA steps of CD from the data")
    p.add_argument("--init-scale", type=float, default=0.01, help="std of the initial means")
    p.add_argument("--out-dir", type=Path, default=Path("outputs/gmm_teacher_student"))
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p.parse_args(argv)


def make_strategy(name: str, args: argparse.Namespace) -> Any:
    h = args.step_size
    if name == "Jarzynski":
        resampling = se.ESSResampling(args.ess_threshold, args.resampling)
        return se.Jarzynski(
            args.num_walkers,
            h,
            resampling=resampling,
            num_observers=args.observers,
            reseed_every=args.reseed_every,
        )
    if name == "PCD":
        return se.PCD(args.num_walkers, h)
    if name == "CD":  # one walker per data point, restarted at the data every step
        return se.CD(num_steps=args.cd_steps, step_size=h)
    return se.Unweighted(args.num_walkers, h)


def weight_near(center: jax.Array):
    """Weight of the student mode nearest ``center`` (mode labels are arbitrary)."""

    def weight(energy: se.energies.GaussianMixture) -> jax.Array:
        idx = jnp.argmin(jnp.sum((energy.means - center) ** 2, axis=-1))
        return energy.weights[idx]

    return weight


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Train every strategy on one seed's data from one seed's initial student."""
    k_data, k_init, k_fit = jax.random.split(jax.random.key(seed), 3)
    data = se.datasets.two_mode_teacher(
        k_data, n=args.n_data, dim=args.dim, a=A, b=B, weight=TARGET
    )
    student = se.energies.GaussianMixture.init(k_init, 2, args.dim, scale=args.init_scale)
    optimizer = se.optim.by_field(logits=optax.sgd(args.lr_logits), means=optax.sgd(args.lr_means))
    entropy = float(data.entropy())
    weight_fn = weight_near(jnp.zeros(args.dim).at[0].set(A))
    kl_fn = se.metrics.exact_kl(data.samples, data.log_prob)
    out = {}
    for name in args.strategies:
        print(f"seed {seed}, {name} ...", flush=True)
        res = se.fit(
            student,
            data.samples,
            strategy=make_strategy(name, args),
            optimizer=optimizer,
            num_steps=args.steps,
            key=k_fit,
            metrics={"weight": weight_fn, "exact_kl": kl_fn},
            record_every=args.record_every,
            progress=not args.no_progress,
        )
        stop_if_interrupted(res)
        h = res.history
        w = h["weight"]
        out[name] = {
            "weight": float(weight_fn(res.energy)),
            "exact_kl": float(kl_fn(res.energy)),
            "estimated_kl": res.cross_entropy - entropy,
            "collapse_fraction": float(np.mean((w < COLLAPSE[0]) | (w > COLLAPSE[1]))),
            "ms_per_step": 1e3 * res.wall_time / max(res.steps, 1),
            "resamplings": int(np.sum(h["resampled"])),
            "history": {
                "step": h["step"].tolist(),
                "weight": w.tolist(),
                "exact_kl": h["exact_kl"].tolist(),
                "estimated_kl": (h["cross_entropy"] - entropy).tolist(),
            },
        }
    return out


def _mean_sd(values: list[float]) -> dict[str, float | None]:
    arr = np.asarray(values, float)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return {"mean": None, "sd": None}
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def summarise(runs: list[dict[str, dict[str, Any]]], strategies: list[str]) -> dict[str, Any]:
    summary = {}
    for name in strategies:
        rs = [r[name] for r in runs]
        summary[name] = {
            "weight": _mean_sd([r["weight"] for r in rs]),
            "exact_kl": _mean_sd([r["exact_kl"] for r in rs]),
            "estimated_kl": _mean_sd([r["estimated_kl"] for r in rs]),
            "kl_gap": _mean_sd([r["estimated_kl"] - r["exact_kl"] for r in rs]),
            "collapse_fraction": _mean_sd([r["collapse_fraction"] for r in rs]),
            "ms_per_step": _mean_sd([r["ms_per_step"] for r in rs]),
        }
    return summary


def _pm(stat: dict[str, float | None], spec: str) -> str:
    if stat["mean"] is None:
        return "—"
    return f"{stat['mean']:{spec}} ± {stat['sd']:{spec}}"


def print_table(summary: dict[str, Any], n_seeds: int) -> None:
    cols = (
        ("weight (0.25)", "weight", ".3f"),
        ("exact KL", "exact_kl", ".4f"),
        ("estimated KL", "estimated_kl", ".4f"),
        ("est. - exact", "kl_gap", ".4f"),
        ("collapsed", "collapse_fraction", ".2f"),
        ("ms/step", "ms_per_step", ".1f"),
    )
    rows = [[name] + [_pm(s[key], spec) for _, key, spec in cols] for name, s in summary.items()]
    header = ["strategy"] + [c[0] for c in cols]
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    print(f"\nmean ± sd over {n_seeds} seed(s)")
    for r in [header, ["-" * w for w in widths], *rows]:
        print(
            " | ".join(
                c.ljust(w) if j == 0 else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    print(
        "weight: student mode nearest -10 e_1; collapsed: fraction of recorded steps with that "
        f"weight < {COLLAPSE[0]} or > {COLLAPSE[1]}; ms/step includes compilation."
    )


def plot(runs: list[dict[str, dict[str, Any]]], strategies: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_w, ax_kl = fig.subplots(1, 2)
    for i, name in enumerate(strategies):
        for s, run in enumerate(runs):
            h = run[name]["history"]
            ax_w.plot(
                h["step"],
                h["weight"],
                color=f"C{i}",
                lw=1,
                alpha=0.8,
                label=name if s == 0 else None,
            )
    ax_w.axhline(TARGET, color="k", ls=":", lw=1, label=f"target {TARGET}")
    ax_w.set(
        xlabel="optimizer step",
        ylabel="weight of the mode at -10 e_1",
        ylim=(-0.02, 1.02),
        title="Learned weight (one line per seed)",
    )
    ax_w.legend(fontsize="small")
    if "Jarzynski" in strategies:
        for s, run in enumerate(runs):
            h = run["Jarzynski"]["history"]
            ax_kl.plot(
                h["step"], h["exact_kl"], color="C0", lw=1, label="exact KL" if s == 0 else None
            )
            ax_kl.plot(
                h["step"],
                h["estimated_kl"],
                color="C3",
                lw=1,
                ls="--",
                label="Jarzynski estimate" if s == 0 else None,
            )
        ax_kl.set_yscale("symlog", linthresh=1e-2)
        ax_kl.axhline(0.0, color="k", lw=0.5)
        ax_kl.legend(fontsize="small")
    ax_kl.set(
        xlabel="optimizer step",
        ylabel="KL(teacher || model)",
        title="Jarzynski: exact vs estimated KL",
    )
    fig.savefig(path, dpi=120)


def _json_safe(obj: Any) -> Any:
    """NaN and inf become ``null`` so that the file is strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output_dir(args.out_dir)
    print(f"jax {jax.__version__} on {jax.devices()}")
    t0 = time.perf_counter()
    runs = [run_seed(seed, args) for seed in range(args.seeds)]
    summary = summarise(runs, args.strategies)
    print_table(summary, args.seeds)
    fig_path = args.out_dir / "gmm_teacher_student.png"
    plot(runs, args.strategies, fig_path)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {
        "config": config,
        "target_weight": TARGET,
        "summary": summary,
        "runs": [{"seed": s, **run} for s, run in enumerate(runs)],
        "total_seconds": time.perf_counter() - t0,
        "devices": [str(d) for d in jax.devices()],
    }
    json_path = args.out_dir / "gmm_teacher_student.json"
    json_path.write_text(json.dumps(_json_safe(report), indent=1))
    print(f"\nfigure: {fig_path}\nnumbers: {json_path}")


if __name__ == "__main__":
    main()
