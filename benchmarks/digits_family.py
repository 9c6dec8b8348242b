"""The digits example on a family of random digit triples and proportions.

``examples/digits_proportions.py`` reproduces the paper on digits 2, 3, 6 at 4/7, 2/7, 1/7;
this runs the same example, with its defaults, on ``--triples`` other cases, to see whether
the result carries over.

Triple ``i`` is drawn with ``numpy.random.default_rng(2000 + i)`` (a fixed seed list): three
distinct digits of 0-9; a minority weight uniform in [0.10, 0.20], a middle weight uniform in
[minority + 0.05, (1 - minority) / 2 - 0.02], and the majority the rest. Each triple is
trained with ``--seeds`` seeds by Jarzynski and PCD (the example's ``--first-seed 0``), every
other setting the example's default; ``--model-ais K`` also measures each trained model's own
class proportions by per-class annealing (``se.metrics.class_masses``, K MALA steps; about
4-10 minutes per model on a 2-core CPU, so off by default). The example's ``--model-chains K``
also runs K MALA steps on each frozen final model from its final walkers (about a minute per
model on a 2-core CPU); the chains' proportions, and their curve in the JSON, show whether the
walkers were at the final model's equilibrium; the example's ``--observers M`` adds M MALA
observers to each strategy, whose final weighted proportions are reported as another estimate
of the model's (checked against the annealing on Jarzynski's models only, docs/digits.md).
Options it does not know go to the example unchanged (e.g. ``--lr-final 0.01``, or
``--strategies Jarzynski`` to run one strategy), to measure another setting on the family.

Per strategy it prints the mean and the sd over runs (triples x seeds) of the relative error
``|p - p*| / p*`` per class position (minority, middle, majority), for the final walkers, the
walkers averaged over the last 25% of the run, and (with ``--model-ais`` or ``--model-chains``)
the model; the bars of the family are a mean relative error of at most 10% at every position
for the averaged walkers, below PCD's, and 20% for the model. The JSON (``--out``) is rewritten
atomically after every triple, marked ``"complete": false`` until the last one.

    python benchmarks/digits_family.py --triples 6 --seeds 1   # 12 runs, about 16 min (2 CPUs)
    python benchmarks/digits_family.py                         # 6 triples x 3 seeds
    python benchmarks/digits_family.py --quick                 # 1 triple, 40 steps: a smoke test
    python benchmarks/digits_family.py --combine a.json b.json  # the table of earlier runs
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import digits_proportions as example  # noqa: E402

from smc_ebm.recipes import write_json  # noqa: E402

FORWARDS_TO = "examples/digits_proportions.py"  # where options it does not know go

POSITIONS = ("minority", "middle", "majority")
STRATEGIES = ("Jarzynski", "PCD")
ESTIMATES = {  # the example's JSON key -> the name printed
    "proportions": "final walkers",
    "averaged_proportions": "walkers, mean of the last 25%",
    "ais_proportions": "the model (per-class annealing)",
    "observer_proportions": "the model (observers, final)",
    "model_proportions": "MALA chains on the model, mean of the 2nd half",
    "model_last": "MALA chains on the model, last record",
}
RESULTS = Path(__file__).parent / "results"


def draw_triple(i: int) -> dict:
    """Digits and target weights of triple ``i`` (weights in the order of the digits)."""
    rng = np.random.default_rng(2000 + i)
    digits = [int(d) for d in rng.choice(10, 3, replace=False)]
    minority = rng.uniform(0.10, 0.20)
    middle = rng.uniform(minority + 0.05, (1 - minority) / 2 - 0.02)
    weights = np.array([1 - minority - middle, middle, minority])
    order = rng.permutation(3)  # the majority is not always the first digit given
    return {"digits": [digits[j] for j in order], "weights": weights[order].tolist()}


def relative_errors(props, target) -> np.ndarray:
    """``(runs, 3)`` relative errors, columns ordered minority, middle, majority."""
    props, target = np.asarray(props, float), np.asarray(target, float)
    order = np.argsort(target)
    return (np.abs(props - target) / target)[:, order]


def summarise(records: list[dict]) -> dict:
    """Mean and sd over runs of the relative error per position, per strategy and estimate."""
    out: dict = {}
    for name in STRATEGIES:
        for key, label in ESTIMATES.items():
            errs = [
                relative_errors(r[name][key], r["target"])
                for r in records
                if r.get(name, {}).get(key)
            ]
            if errs:
                e = np.concatenate(errs)
                out[f"{name}, {label}"] = {
                    "runs": len(e),
                    "mean": e.mean(0).tolist(),
                    "sd": (e.std(0, ddof=1) if len(e) > 1 else 0 * e[0]).tolist(),
                }
    return out


def print_table(summary: dict, runs: str) -> None:
    print(f"\nrelative error |p - p*| / p*, mean ± sd over {runs}")
    print("| strategy, estimate | runs | " + " | ".join(POSITIONS) + " |")
    print("|---|---|---|---|---|")
    for label, s in summary.items():
        cells = [f"{m:.0%} ± {d:.0%}" for m, d in zip(s["mean"], s["sd"], strict=True)]
        print(f"| {label} | {s['runs']} | " + " | ".join(cells) + " |")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--triples", type=int, default=6)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--model-ais", type=int, default=0, help="per-class annealing steps (0: off)")
    p.add_argument("--first-seed", type=int, default=0, help="the example's --first-seed")
    p.add_argument("--quick", action="store_true", help="1 triple, 1 seed, tiny sizes")
    p.add_argument(
        "--combine", type=Path, nargs="+", default=None, help="summarise these JSON files' runs"
    )
    p.add_argument("--out", type=Path, default=None)
    args, passed = p.parse_known_args(argv)
    if passed and not passed[0].startswith("--"):
        p.error(f"unrecognized arguments: {' '.join(passed)}")
    if args.combine:
        records = [r for f in args.combine for r in json.loads(f.read_text())["records"]]
        summary = summarise(records)
        print_table(summary, f"the runs of {len(args.combine)} files")
        return summary
    if args.quick:
        args.triples, args.seeds = 1, 1
    default = Path("outputs") / "digits_family_quick.json"
    out_path = args.out or (default if args.quick else RESULTS / "digits_family.json")
    extra = ["--no-progress", "--seeds", str(args.seeds), "--model-ais", str(args.model_ais)]
    extra += ["--first-seed", str(args.first_seed), *passed]
    if args.quick:
        extra += ["--steps", "40", "--num-walkers", "32", "--walker-batch", "16"]
        extra += ["--num-anneal", "2", "--channels", "2", "2", "2", "--batch-size", "16"]
    run_args = vars(args) | {"out": str(out_path), "example": passed}
    t0 = time.perf_counter()
    records: list[dict] = []
    for i in range(args.triples):
        triple = draw_triple(i)
        argv_i = ["--labels", *map(str, triple["digits"])]
        argv_i += ["--weights", *(f"{w:.6f}" for w in triple["weights"])]
        argv_i += ["--out-dir", str(Path("outputs") / "digits_family" / f"triple_{i}"), *extra]
        with contextlib.redirect_stdout(io.StringIO()) as log:
            res = example.main(argv_i)
        record = {"triple": i, **triple, "target": res["target"], "log": log.getvalue()}
        names = [n for n in STRATEGIES if n in res]  # the example's --strategies may drop one
        for name in names:
            keep = (*ESTIMATES, "ais", "model_curves", "wall_s")  # "ais": errors, log Z, arrival
            record[name] = {k: res[name][k] for k in keep if k in res[name]}
            if res[name].get("model_curves"):
                record[name]["model_last"] = [c[-1] for c in res[name]["model_curves"]]
        records.append(record)
        errs = {
            name: relative_errors(record[name]["averaged_proportions"], res["target"]).mean(0)
            for name in names
        }
        line = "; ".join(f"{n} {np.round(e, 2).tolist()}" for n, e in errs.items())
        print(
            f"triple {i}: digits {triple['digits']} at {np.round(res['target'], 3).tolist()}: "
            f"averaged walkers' relative error (minority, middle, majority) {line}; "
            f"{time.perf_counter() - t0:.0f} s so far",
            flush=True,
        )
        payload = {"complete": False, "args": run_args}
        write_json(out_path, payload | {"summary": summarise(records), "records": records})
    summary = summarise(records)
    wall = time.perf_counter() - t0
    print_table(summary, f"{args.triples} triples x {args.seeds} seeds")
    print(f"\ntotal wall time {wall:.0f} s; numbers in {out_path}")
    payload = {"complete": True, "args": run_args, "wall_s": wall}
    write_json(out_path, payload | {"summary": summary, "records": records})
    return summary


if __name__ == "__main__":
    main()
