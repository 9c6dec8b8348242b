"""Is ``se.fit``'s Jarzynski training biased relative to the plain Algorithm 1?

The teacher-student mixture of the README (two unit modes at ``-10 e_1``, weight 1/4, and
``+6 e_1``, weight 3/4; a two-mode student with unnormalised logits; per-field SGD) is trained,
seed by seed, by three variants from the same data, the same initial student and the same
initial walkers (exact samples of the initial student, passed to ``fit`` as ``init=``):

* ``lib``: ``se.Jarzynski`` with its defaults (``feedback_correction="auto"``, on for SGD);
* ``lib_nocorr``: the same with ``feedback_correction=False``, the plain algorithm;
* ``plain``: ``benchmarks/plain_jarzynski.py``, an independent implementation of Algorithm 1.

Per run it records the learned weight of the student mode nearest ``-10 e_1`` (final, and
averaged over the last quarter of the steps), the fraction of the training data in that mode
(what the maximum-likelihood estimate targets), and the walkers' weighted fraction in it. It
prints the mean ± SE per variant, the paired differences between variants ± SE, and writes a
JSON under ``benchmarks/results/`` (rewritten after every seed, so an interrupted study keeps
its finished seeds).

Examples::

    python benchmarks/bias_study.py --setting small --seeds 32      # d = 10, N = 2000
    python benchmarks/bias_study.py --setting paper --seeds 5       # the README's setting
    python benchmarks/bias_study.py --tiny                          # a few seconds
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import smc_ebm as se
from smc_ebm.recipes import stop_if_interrupted

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain_jarzynski  # noqa: E402

A, B, TARGET = -10.0, 6.0, 0.25
VARIANTS = ("lib", "lib_nocorr", "plain")
PAIRS = (("lib", "plain"), ("lib_nocorr", "plain"), ("lib", "lib_nocorr"))
N_TRAJECTORY = 20  # points of the weight's trajectory kept per run
SETTINGS = {
    "paper": dict(dim=50, n_data=10_000, num_walkers=10_000, steps=8000),
    "small": dict(dim=10, n_data=2000, num_walkers=2000, steps=2000),
    "tiny": dict(dim=3, n_data=200, num_walkers=100, steps=60),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="small")
    p.add_argument("--tiny", action="store_true", help="the tiny setting, 2 seeds (a smoke test)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 32; tiny 2)")
    p.add_argument("--seed-start", type=int, default=0, help="first seed")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    for name in ("dim", "n_data", "num_walkers", "steps"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="override")
    p.add_argument("--step-size", type=float, default=0.1, help="ULA step h")
    p.add_argument("--ess-threshold", type=float, default=1 / 1.05)
    p.add_argument("--lr-logits", type=float, default=0.125)
    p.add_argument("--lr-means", type=float, default=0.025)
    p.add_argument("--init-scale", type=float, default=0.01, help="std of the initial means")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default under results/)")
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="only print the table of saved studies (runs pooled; same setting)",
    )
    args = p.parse_args(argv)
    if args.tiny:
        args.setting = "tiny"
    for name, value in SETTINGS[args.setting].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.seeds is None:
        args.seeds = 2 if args.setting == "tiny" else 32
    if args.out is None:
        args.out = Path(__file__).parent / "results" / f"bias_study_{args.setting}.json"
    return args


def mode_index(means: jax.Array) -> int:
    """Index of the student mode nearest the teacher's ``A e_1`` mode."""
    center = jnp.zeros(means.shape[1]).at[0].set(A)
    return int(jnp.argmin(jnp.sum((means - center) ** 2, axis=-1)))


def in_mode_a(x: jax.Array) -> jax.Array:
    """Points on the ``A e_1`` side of the midpoint between the teacher's modes."""
    return (x[:, 0] < 0.5 * (A + B)).astype(x.dtype)


def weighted_fraction(x: jax.Array, log_w: jax.Array) -> float:
    return float(jnp.sum(jax.nn.softmax(log_w) * in_mode_a(x)))


def weight_near_a(energy: se.energies.GaussianMixture) -> jax.Array:
    center = jnp.zeros(energy.means.shape[1]).at[0].set(A)
    return energy.weights[jnp.argmin(jnp.sum((energy.means - center) ** 2, axis=-1))]


class Library:
    """``se.fit`` with one strategy; the optimizer and metrics are reused across seeds."""

    def __init__(self, args: argparse.Namespace, correction: bool | str):
        self.args, self.correction = args, correction
        self.optimizer = se.optim.by_field(
            logits=optax.sgd(args.lr_logits), means=optax.sgd(args.lr_means)
        )
        self.metrics = {"weight": weight_near_a}
        self.record_every = 10 if args.steps >= 100 else 1

    def __call__(self, key, data, student, walkers) -> dict:
        a = self.args
        strategy = se.Jarzynski(
            a.num_walkers,
            a.step_size,
            resampling=se.ESSResampling(threshold=a.ess_threshold, method="systematic"),
            init=walkers,
            feedback_correction=self.correction,
        )
        res = se.fit(
            student,
            data,
            strategy=strategy,
            optimizer=self.optimizer,
            num_steps=a.steps,
            key=key,
            metrics=self.metrics,
            record_every=self.record_every,
            progress=False,
        )
        stop_if_interrupted(res)
        hist = res.history
        late = hist["step"] > 0.75 * a.steps
        every = max(1, len(hist["step"]) // N_TRAJECTORY)
        return {
            "weight": float(weight_near_a(res.energy)),
            "weight_last_quarter": float(np.mean(hist["weight"][late])),
            "trajectory": hist["weight"][every - 1 :: every].round(5).tolist(),
            "walker_fraction": weighted_fraction(res.walkers, res.log_weights),
            "resamplings": int(np.sum(hist["resampled"])),
        }


def run_plain(args, key, data, student, walkers) -> dict:
    params = {"logits": student.logits, "means": student.means}
    lr = {"logits": args.lr_logits, "means": args.lr_means}
    (params, x, log_w), (logits, resampled) = plain_jarzynski.train(
        key,
        params,
        walkers,
        data,
        lr,
        step_size=args.step_size,
        threshold=args.ess_threshold,
        num_steps=args.steps,
    )
    k = mode_index(params["means"])
    weights = np.asarray(jax.nn.softmax(logits, axis=-1)[:, k])
    late = np.arange(1, args.steps + 1) > 0.75 * args.steps
    every = max(1, args.steps // N_TRAJECTORY)
    return {
        "weight": float(weights[-1]),
        "weight_last_quarter": float(weights[late].mean()),
        "trajectory": weights[every - 1 :: every].round(5).tolist(),
        "walker_fraction": weighted_fraction(x, log_w),
        "resamplings": int(np.sum(resampled)),
    }


def exact_samples(key, student: se.energies.GaussianMixture, n: int) -> jax.Array:
    """``n`` exact draws of the student mixture (unit-variance modes)."""
    k_comp, k_noise = jax.random.split(key)
    comp = jax.random.categorical(k_comp, student.logits, shape=(n,))
    return student.means[comp] + jax.random.normal(k_noise, (n, student.means.shape[1]))


def run_seed(seed: int, args: argparse.Namespace, libs: dict) -> dict:
    k_data, k_init, k_walk, k_fit = jax.random.split(jax.random.key(seed), 4)
    data = se.datasets.two_mode_teacher(
        k_data, n=args.n_data, dim=args.dim, a=A, b=B, weight=TARGET
    )
    student = se.energies.GaussianMixture.init(k_init, 2, args.dim, scale=args.init_scale)
    walkers = exact_samples(k_walk, student, args.num_walkers)
    out = {"seed": seed, "data_fraction": float(jnp.mean(in_mode_a(data.samples)))}
    for name in args.variants:
        t0 = time.perf_counter()
        if name == "plain":
            r = run_plain(args, k_fit, data.samples, student, walkers)
        else:
            r = libs[name](k_fit, data.samples, student, walkers)
        r["seconds"] = time.perf_counter() - t0
        out[name] = r
        print(
            f"seed {seed:3d} {name:10s} weight {r['weight']:.4f}  last-quarter "
            f"{r['weight_last_quarter']:.4f}  walkers {r['walker_fraction']:.4f}  data "
            f"{out['data_fraction']:.4f}  ({r['seconds']:.1f} s)",
            flush=True,
        )
    return out


def mean_se(values) -> dict:
    v = np.asarray(values, float)
    se_ = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se_, "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def summarise(runs: list[dict], variants: list[str]) -> dict:
    data = np.array([r["data_fraction"] for r in runs])
    summary = {"n_seeds": len(runs), "data_fraction": mean_se(data), "variants": {}, "paired": {}}
    for v in variants:
        w = np.array([r[v]["weight"] for r in runs])
        wl = np.array([r[v]["weight_last_quarter"] for r in runs])
        wf = np.array([r[v]["walker_fraction"] for r in runs])
        summary["variants"][v] = {
            "weight": mean_se(w),
            "weight_minus_data": mean_se(w - data),
            "weight_last_quarter": mean_se(wl),
            "last_quarter_minus_data": mean_se(wl - data),
            "walker_fraction_minus_data": mean_se(wf - data),
            "weight_minus_walker_fraction": mean_se(w - wf),
            "seconds": mean_se([r[v]["seconds"] for r in runs]),
        }
    for x, y in PAIRS:
        if x in variants and y in variants:
            summary["paired"][f"{x} - {y}"] = {
                key: mean_se([r[x][key] - r[y][key] for r in runs])
                for key in ("weight", "weight_last_quarter")
            }
    return summary


def _pm(s: dict, spec: str = "+.4f") -> str:
    return f"{s['mean']:{spec}} ± {s['se']:{spec.lstrip('+')}}"


def print_table(summary: dict, args: argparse.Namespace) -> None:
    n = summary["n_seeds"]
    print(
        f"\n{args.setting}: d={args.dim}, n_data={args.n_data}, N={args.num_walkers}, "
        f"{args.steps} steps, {n} seeds; mean ± SE over seeds"
    )
    print(f"data fraction of the -10 e_1 mode: {_pm(summary['data_fraction'], '.4f')}")
    cols = (
        ("weight", "weight", ".4f"),
        ("weight - data", "weight_minus_data", "+.4f"),
        ("last 1/4", "weight_last_quarter", ".4f"),
        ("last 1/4 - data", "last_quarter_minus_data", "+.4f"),
        ("walkers - data", "walker_fraction_minus_data", "+.4f"),
        ("s/run", "seconds", ".1f"),
    )
    rows = [["variant", *(c[0] for c in cols)]]
    for v, s in summary["variants"].items():
        rows.append([v, *(_pm(s[k], spec) for _, k, spec in cols)])
    rows.append(["paired", "weight", "", "last 1/4", "", "", ""])
    for pair, s in summary["paired"].items():
        rows.append([pair, _pm(s["weight"]), "", _pm(s["weight_last_quarter"]), "", "", ""])
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.from_json is not None:
        reports = [json.loads(path.read_text()) for path in args.from_json]
        saved = argparse.Namespace(**reports[0]["config"])
        runs = [run for report in reports for run in report["runs"]]
        print_table(summarise(runs, saved.variants), saved)
        seconds = sum(report["total_seconds"] for report in reports)
        print(f"\n{len(runs)} seeds in {seconds:.0f} s")
        return {"config": reports[0]["config"], "runs": runs, "total_seconds": seconds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    libs = {"lib": Library(args, "auto"), "lib_nocorr": Library(args, False)}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(f"jax {jax.__version__} on {jax.devices()}; {config}", flush=True)
    t0 = time.perf_counter()
    runs: list[dict] = []
    report: dict = {}
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        runs.append(run_seed(seed, args, libs))
        report = {
            "config": config,
            "target_weight": TARGET,
            "summary": summarise(runs, args.variants),
            "runs": runs,
            "total_seconds": time.perf_counter() - t0,
            "devices": [str(d) for d in jax.devices()],
        }
        args.out.write_text(json.dumps(report, indent=1))
    print_table(report["summary"], args)
    print(f"\n{len(runs)} seeds in {report['total_seconds']:.0f} s; numbers: {args.out}")
    return report


if __name__ == "__main__":
    main()
