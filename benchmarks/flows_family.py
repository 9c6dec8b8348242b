"""The flow strategies on a family of random 2-D Gaussian mixtures: MSE of the learned mode weights.

The four-Gaussian example (``examples/flowmc_four_gaussians.py``) is one mixture; this runs its
recipe unchanged on ``--mixtures`` random ones, to see how the MSE is spread over mixtures.

Mixture ``i`` is drawn with ``numpy.random.default_rng(1000 + i)`` (a fixed seed list):

- 3 to 6 modes, uniformly;
- weights from a flat Dirichlet, redrawn until every weight lies in [0.05, 0.5];
- per-mode **variances** (not standard deviations) uniform in [0.03, 0.1] (the four Gaussians
  have 0.05 I); a fair coin per mixture makes them isotropic or diagonal;
- centres uniform in the box [-3, 3]^2, redrawn until every two are at least 2 apart (as in the
  four Gaussians), so that each mode's half-gap to its neighbours is at least 3.16 standard
  deviations and nearest-centre assignment gives each mode its own mass to within 0.1%.

Every method trains the recipe of the example (``smc_ebm.recipes``): a tilted MLP energy
(width 64, depth 2) over the flow's base N(0, 2^2 I), a 4-layer affine flow (width 32), FlowMC,
flow-Jarzynski, Jarzynski (ULA) and PCD as ``flow_strategies(n, flow, 0.02, 0.005, 32, 1e-3)``,
Adam with a cosine decay from 1e-3 to 1e-5, batch 512, 20 000 draws of the mixture; training
seeds 3, 4, ... (``--seeds``). The metric is the MSE of the mode weights of
``se.metrics.mode_weights_grid`` on a 300 x 300 grid of [-4, 4]^2 (the box with a margin of 1).

Per method it prints, over all runs (mixtures x seeds): the median, 90th percentile (linear
interpolation) and worst MSE, the mean signed relative error of the lightest mode's learned
weight ((learned - true) / true), the divergences (``se.TrainingError``), and the wall time per
run and in total. The JSON (``--out``) is rewritten atomically after every mixture, marked
``"complete": false`` until the last one.

Default budget: the example's, 512 walkers and 5000 steps for every method, 10 mixtures, one
seed each (about 20 min on 2 CPU cores: 53-55 s per flow run, 5-6 s per local one).

    python benchmarks/flows_family.py                 # the default budget
    python benchmarks/flows_family.py --first-seed 4  # the same with training seed 4
    python benchmarks/flows_family.py --combine a.json b.json   # one table of earlier runs
    python benchmarks/flows_family.py --quick         # 2 mixtures, 300 steps: a smoke test
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time
import warnings
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

import smc_ebm as se
from smc_ebm.recipes import flow_strategies, table, tilted_energy, train, write_json

BOX, MARGIN, MIN_SEP = 3.0, 1.0, 2.0
BOUNDS = ((-BOX - MARGIN, BOX + MARGIN), (-BOX - MARGIN, BOX + MARGIN))
WEIGHT_RANGE, VARIANCE_RANGE = (0.05, 0.5), (0.03, 0.1)
BARS = {"median": 2e-4, "p90": 4.29e-4}  # for the flow strategies (4.29e-4: the paper's MSE)
N_DATA, BATCH, LR, LR_FINAL = 20_000, 512, 1e-3, 0.01
RESULTS = Path(__file__).parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mixtures", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="default 5000 (300 with --quick)")
    p.add_argument("--walkers", type=int, default=512)
    p.add_argument("--seeds", type=int, default=1, help="training seeds per mixture")
    p.add_argument("--first-seed", type=int, default=3, help="training seeds from this one")
    p.add_argument("--only", default=None, help="comma-separated methods, e.g. FlowMC,PCD")
    p.add_argument(
        "--lr-final",
        type=float,
        default=LR_FINAL,
        help=f"final learning rate as a fraction of the first (cosine decay; {LR_FINAL})",
    )
    p.add_argument("--quick", action="store_true", help="2 mixtures, 300 steps")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    p.add_argument(
        "--combine", type=Path, nargs="+", default=None, help="tabulate these JSON files' runs"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.mixtures = min(args.mixtures, 2)
    args.steps = args.steps or (300 if args.quick else 5000)
    name = "flows_family_quick.json" if args.quick else "flows_family.json"
    args.out = args.out or RESULTS / name
    return args


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def select(names, only: str | None) -> list[str]:
    """The methods named in ``only`` (case, spaces and punctuation ignored), in ``names``' order."""
    if not only:
        return list(names)
    wanted = {_key(w) for w in only.split(",") if w.strip()}
    unknown = wanted - {_key(n) for n in names}
    if unknown:
        raise SystemExit(f"--only: unknown methods {sorted(unknown)}; known: {list(names)}")
    return [n for n in names if _key(n) in wanted]


def draw_mixture(seed: int) -> dict:
    """Means ``(K, 2)``, variances ``(K, 2)`` and weights ``(K,)`` of mixture ``seed``."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 7))
    while True:
        w = rng.dirichlet(np.ones(k))
        if w.min() >= WEIGHT_RANGE[0] and w.max() <= WEIGHT_RANGE[1]:
            break
    means = []
    while len(means) < k:
        m = rng.uniform(-BOX, BOX, 2)
        if all(np.linalg.norm(m - q) >= MIN_SEP for q in means):
            means.append(m)
    isotropic = bool(rng.integers(2))
    var = rng.uniform(*VARIANCE_RANGE, (k, 1 if isotropic else 2)) * np.ones((k, 2))
    return {"means": np.array(means), "variances": var, "weights": w, "isotropic": isotropic}


def summarise(runs: list[dict], diverged: int, flow: bool) -> dict:
    mse = np.array([r["mse"] for r in runs])
    walls = [r["wall_s"] for r in runs]
    out = {"runs": len(runs), "diverged": diverged, "total_wall_s": float(sum(walls))}
    if not runs:
        return out
    out.update(
        median=float(np.median(mse)),
        p90=float(np.percentile(mse, 90)),
        worst=float(mse.max()),
        lightest_rel_error=float(np.mean([r["lightest_rel_error"] for r in runs])),
        wall_per_run_s=float(np.mean(walls)),
    )
    if flow:
        out["meets_bars"] = out["median"] <= BARS["median"] and out["p90"] <= BARS["p90"]
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.combine:
        return combine(args.combine)
    flow_kw = dict(num_layers=4, width=32, depth=2)
    energy, flow = tilted_energy(jax.random.key(1), 2, 2.0, 64, 2, jax.random.key(2), flow_kw)
    strats = flow_strategies(args.walkers, flow, 0.02, 0.005, 32, LR)
    names = select(strats, args.only)
    mixtures = [draw_mixture(1000 + i) for i in range(args.mixtures)]
    runs = {n: [] for n in names}
    diverged = {n: 0 for n in names}
    caught_all = {n: set() for n in names}
    t_start = time.perf_counter()

    def payload(complete: bool) -> dict:
        summary = {n: summarise(runs[n], diverged[n], "flow" in _key(n)) for n in names}
        for n in names:
            summary[n]["warnings"] = sorted(caught_all[n])
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        mix = [{k: np.asarray(v).tolist() for k, v in m.items()} for m in mixtures]
        return {
            "complete": complete,
            "config": {**config, "batch": BATCH, "lr": LR, "data": N_DATA},
            "box": BOX, "margin": MARGIN, "min_separation": MIN_SEP, "bars": BARS,
            "mixtures": mix, "runs": runs, "summary": summary,
            "total_wall_s": time.perf_counter() - t_start,
        }  # fmt: skip

    for i, m in enumerate(mixtures):
        mix = se.datasets.mixture(m["means"], m["variances"], m["weights"])
        data = mix.sample(jax.random.key(1000 + i), N_DATA)
        truth = np.asarray(mix.weights, np.float64)
        light = int(np.argmin(truth))
        weights_of = eqx.filter_jit(
            functools.partial(se.metrics.mode_weights_grid, centres=mix.means, bounds=BOUNDS, n=300)
        )
        print(f"mixture {i}: {len(truth)} modes, weights {np.round(truth, 3)}", flush=True)
        for name in names:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        res, _ = train(
                            energy, data, strats[name], args.steps, LR, BATCH, seed, args.lr_final
                        )
                    except se.TrainingError as err:
                        res = err
                for c in caught:
                    caught_all[name].add(f"{c.category.__name__}: {c.message}")
                    print(f"  {name}, seed {seed}: warning {c.category.__name__}: {c.message}")
                if isinstance(res, se.TrainingError):
                    diverged[name] += 1
                    print(f"  {name}, seed {seed}: diverged at step {res.step} ({res.quantity})")
                    continue
                w = np.asarray(weights_of(res.energy), np.float64)
                run = {
                    "mixture": i,
                    "seed": seed,
                    "mse": float(np.mean((w - truth) ** 2)),
                    "weights": w.tolist(),
                    "lightest_rel_error": float((w[light] - truth[light]) / truth[light]),
                    "wall_s": time.perf_counter() - t0,
                }
                runs[name].append(run)
                print(
                    f"  {name}, seed {seed}: MSE {run['mse']:.3g}, lightest "
                    f"{run['lightest_rel_error']:+.1%}, {run['wall_s']:.0f} s",
                    flush=True,
                )
        elapsed = time.perf_counter() - t_start
        print(
            f"  after {i + 1} of {len(mixtures)} mixtures: {elapsed / 60:.1f} min, projected "
            f"total {elapsed / (i + 1) * len(mixtures) / 60:.1f} min",
            flush=True,
        )
        write_json(args.out, payload(complete=i + 1 == len(mixtures)))

    out = payload(complete=True)
    print(
        f"\n{len(mixtures)} random mixtures x {args.seeds} seeds, {args.walkers} walkers, "
        f"{args.steps} steps; bars for the flow strategies: median <= {BARS['median']:.3g}, "
        f"p90 <= {BARS['p90']:.3g}"
    )
    print_table(out["summary"])
    print(f"total wall time: {out['total_wall_s'] / 60:.1f} min; JSON: {args.out}")
    return out


def combine(paths: list[Path]) -> dict:
    """The summary of the runs of several JSON files (e.g. other seeds), per method."""
    runs: dict[str, list] = {}
    diverged: dict[str, int] = {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        for name, rs in saved["runs"].items():
            runs.setdefault(name, []).extend(rs)
            diverged[name] = diverged.get(name, 0) + saved["summary"][name]["diverged"]
    summary = {n: summarise(runs[n], diverged[n], "flow" in _key(n)) for n in runs}
    print(f"the runs of {len(paths)} files: " + ", ".join(str(p) for p in paths))
    print_table(summary)
    return summary


def print_table(summary: dict) -> None:
    rows = {}
    for n, s in summary.items():
        if not s["runs"]:
            rows[n] = ["-"] * 5 + ["0", f"{s['diverged']}", "-", "-"]
            continue
        bars = {True: "yes", False: "no"}.get(s.get("meets_bars"), "-")
        rows[n] = [
            f"{s['median']:.3g}", f"{s['p90']:.3g}", f"{s['worst']:.3g}", bars,
            f"{s['lightest_rel_error']:+.1%}", f"{s['runs']}", f"{s['diverged']}",
            f"{s['wall_per_run_s']:.0f}", f"{s['total_wall_s']:.0f}",
        ]  # fmt: skip
    cols = ["median MSE", "p90 MSE", "worst MSE", "meets bars", "lightest mode, rel. error"]
    table(rows, cols + ["runs", "diverged", "wall s per run", "wall s total"])


if __name__ == "__main__":
    main()
