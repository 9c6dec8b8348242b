"""The digits model's own class proportions along training, as observers see them.

Trains one strategy of the digits example (``--strategy``, default Jarzynski) for one seed
with ``--observers M`` MALA observers: weighted walkers, annealed from the base, that follow
the same parameter path but never enter the gradient (``se.strategies.with_observers``,
docs/maths.md §2.6). Given the path, the observers are an ordinary SMC sampler of the model,
so where their ESS holds their weighted class proportions estimate the model's own at every
step. Every ``--every`` steps it prints the class proportions of the driving walkers
(weighted, and unweighted; the two agree for PCD and Unweighted) and of the observers
(weighted), with the observers' ESS; ``--ais-at STEP ...`` also anneals the model per class
at those steps (``se.metrics.class_masses``, as the example's ``--model-ais``), to check the
observers there.

Every option of ``examples/digits_proportions.py`` passes through unchanged (the example's
defaults otherwise; ``--observers 1024`` unless given). The observers do not change the
driving walkers' path: with and without them the trained model is the same. The run is cut
into fits of ``--every`` steps, each resuming the last (``se.fit(resume=...)``), which equals
the uninterrupted run; the JSON is rewritten after each.

    python benchmarks/digits_observers.py --labels 3 2 0 --weights 0.499 0.305 0.196
    python benchmarks/digits_observers.py --quick   # 40 steps, tiny sizes: a smoke test
    python benchmarks/digits_observers.py --summarise a.json b.json   # the table of runs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import digits_proportions as example  # noqa: E402

import smc_ebm as se  # noqa: E402
from smc_ebm.recipes import write_json  # noqa: E402

FORWARDS_TO = "examples/digits_proportions.py"  # where options it does not know go
QUICK = ["--steps", "40", "--num-walkers", "32", "--walker-batch", "16", "--num-anneal", "2"]
QUICK += ["--channels", "2", "2", "2", "--batch-size", "16", "--observers", "16"]


def weighted_row(clf, state) -> dict:
    """Class proportions of the driving walkers and of the observers in ``state``."""
    x, a = np.asarray(state.position), np.asarray(state.log_weights)
    obs = state.observers
    return {
        "walkers": clf.proportions(x, a).round(4).tolist(),
        "walkers_unweighted": clf.proportions(x, None).round(4).tolist(),
        "observers": clf.proportions(np.asarray(obs.position), obs.log_weights).round(4).tolist(),
        "observers_ess": round(float(se.smc.ess_fraction(obs.log_weights)), 4),
    }


def summarise(paths) -> list[str]:
    """One line per run and quarter of it: the walkers' and the observers' proportions."""
    head = "| strategy, example options | step | walkers (weighted) | observers | observers' ESS |"
    lines = [head + " per-class annealing |", "|---|---|---|---|---|---|"]
    for path in paths:
        saved = json.loads(Path(path).read_text())
        setting = " ".join(saved["args"]["example"])
        labels = f"--labels {' '.join(map(str, saved['labels']))} "
        for common in (labels, "--observers 1024", "--no-progress"):
            setting = setting.replace(common, "")  # said once, above the table
        setting = re.sub(r"--weights( [0-9.]+)+ ?", "", setting).strip() or "defaults"
        setting = f"{saved['args'].get('strategy', 'Jarzynski')}, {setting}"
        last = saved["rows"][-1]["step"]
        for row in saved["rows"]:
            if (4 * row["step"]) % last == 0 or "annealing" in row:
                cells = [" / ".join(f"{p:.3f}" for p in row[k]) for k in ("walkers", "observers")]
                ais = " / ".join(f"{p:.3f}" for p in row.get("annealing", []))
                lines.append(
                    f"| {setting} | {row['step']} | {cells[0]} | {cells[1]} | "
                    f"{row['observers_ess']:.2f} | {ais} |"
                )
    return lines


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="the example's seed")
    p.add_argument("--strategy", choices=("Jarzynski", "PCD", "Unweighted"), default="Jarzynski")
    p.add_argument("--every", type=int, default=100, help="steps between rows")
    p.add_argument(
        "--ais-at",
        type=int,
        nargs="+",
        default=(),
        help="also anneal the model per class at these steps (the example's model_masses, "
        "--model-ais steps, 800 unless given), to check the observers there",
    )
    p.add_argument("--quick", action="store_true", help="40 steps, tiny sizes")
    p.add_argument("--out", type=Path, default=Path("outputs") / "digits_observers.json")
    p.add_argument("--summarise", type=Path, nargs="+", default=None, help="tabulate these runs")
    args, passed = p.parse_known_args(argv)
    if args.summarise:
        lines = summarise(args.summarise)
        print("\n".join(lines))
        return {"table": lines}
    passed = [*(QUICK if args.quick else []), *passed]
    if "--observers" not in passed:
        passed += ["--observers", "1024"]
    if args.quick:
        args.every = 10
    ex = example.parse_args([*passed, "--strategies", args.strategy, "--no-progress"])
    if args.ais_at and not ex.model_ais:
        ex.model_ais = 2 if args.quick else 800
    if ex.observers < 2:
        p.error("--observers must be at least 2")
    if args.every < 1 or ex.steps % args.every:
        p.error(f"--every must divide the example's --steps ({ex.steps}); got {args.every}")
    data, clf = example.load(ex, jax.random.key(0))
    side = int(round(np.sqrt(data.samples.shape[1])))
    energy, optimizer, key = example.initial(args.seed, ex, side)
    strategy = example.make_strategy(args.strategy, ex, side * side)
    target = np.asarray(ex.weights) / np.sum(ex.weights)
    print(
        f"{args.strategy}: digits {ex.labels} at {np.round(target, 3).tolist()}, seed {args.seed}",
        flush=True,
    )
    payload = {"args": vars(args) | {"out": str(args.out), "example": passed}}
    payload |= {"labels": ex.labels, "target": target.tolist(), "rows": []}
    res, t0 = None, time.perf_counter()
    with jax.numpy_dtype_promotion("standard"):
        for _ in range(ex.steps // args.every):
            res = se.fit(
                energy,
                data.samples,
                strategy=strategy,
                optimizer=optimizer,
                num_steps=args.every,
                key=key,
                batch_size=ex.batch_size or None,
                record_every=10,
                progress=False,
                resume=res,
            )
            row = {"step": int(res.steps), **weighted_row(clf, res.state)}
            if row["step"] in args.ais_at:
                masses = example.model_masses(clf, res.energy, data, args.seed, ex)
                row["annealing"] = np.round(masses["proportions"], 4).tolist()
                row["annealing_se"] = np.round(masses["standard_errors"], 4).tolist()
                row["annealing_log_Z_spread"] = round(float(np.ptp(masses["log_Z"])), 2)
            payload["rows"].append(row)
            payload["wall_s"] = time.perf_counter() - t0
            write_json(args.out, payload)
            cells = "; ".join(
                f"{k} {np.round(v, 3).tolist()}" for k, v in row.items() if k != "step"
            )
            print(f"step {row['step']}: {cells}; {payload['wall_s']:.0f} s", flush=True)
            if res.interrupted:  # Ctrl-C or SIGTERM: the rows so far are kept, marked so
                payload["interrupted"] = True
                write_json(args.out, payload)
                print(f"interrupted at step {res.steps}; stopped")
                break
    print(f"numbers in {args.out}")
    return payload


if __name__ == "__main__":
    main()
