"""Re-measure a saved digits model's own class proportions with another annealing budget.

``examples/digits_proportions.py --save-models --out-dir DIR`` writes each trained energy
(``energy_<strategy>_<seed>.eqx``) and the run's options (``numbers.json``). This script
rebuilds that energy from the same options, loads the saved leaves, and runs the per-class
annealing (``se.metrics.class_masses``, as the example's ``--model-ais``) once per
``--steps`` value, so that one can check what its docstring asks: that the proportions and
the bases' ``log Z`` do not move when the number of annealing steps is doubled. ``--within``
anneals inside each class's region instead (``class_masses(within=True)``). The proportions,
standard errors, ``log Z``, arrival and energies of every budget are written to a JSON file
(``--out``; by default beside the saved model).

When the run saved its final walkers (``walkers_<model>.npz``), their weighted class
proportions and each class's weighted mean energy are printed and written too, beside the
annealing's ``mean_energy`` (the model's mass of each class) and the data's: a class whose
annealed mass lies well below the walkers' energies holds a well that the walkers do not fill.
``--steps`` with no value reports the walkers only.

    python benchmarks/digits_model_masses.py DIR --model jarzynski_0 --steps 800 1600
    python benchmarks/digits_model_masses.py DIR --within --steps 800 1600
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import digits_proportions as example  # noqa: E402

from smc_ebm.recipes import write_json  # noqa: E402


def example_args(run_dir: Path) -> argparse.Namespace:
    """The example's options of the saved run (its ``numbers.json`` holds them as text)."""
    saved = json.loads((run_dir / "numbers.json").read_text())["args"]
    args = example.parse_args([])
    for name, text in saved.items():
        try:
            value = ast.literal_eval(text)  # numbers, lists, True/False, None
        except (ValueError, SyntaxError):
            value = text  # strings: kernel names, paths
        setattr(args, name, Path(value) if name == "out_dir" else value)
    return args


def walker_classes(energy, data, clf, path: Path) -> dict:
    """The saved walkers' weighted class proportions and weighted mean energy of each class."""
    saved = np.load(path)
    x, log_w = jax.numpy.asarray(saved["position"]), np.asarray(saved["log_weights"], np.float64)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    u = np.asarray(jax.vmap(energy)(x), np.float64)
    u_data = np.asarray(jax.vmap(energy)(data.samples), np.float64)
    pred, y = np.asarray(clf.predict(x)), np.asarray(data.info["labels"])
    mean_u = [
        float(np.sum(w[pred == c] * u[pred == c]) / np.sum(w[pred == c]))
        if np.any(pred == c)
        else float("nan")
        for c in clf.classes
    ]
    return {
        "proportions": clf.proportions(x, log_w).tolist(),
        "mean_energy": mean_u,
        "data_mean_energy": [float(u_data[y == c].mean()) for c in clf.classes],
        "ess": float(1.0 / np.sum(w**2) / w.size),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="the example's --out-dir of a --save-models run")
    p.add_argument("--model", default="jarzynski_0", help="<strategy>_<seed> of the saved energy")
    p.add_argument("--steps", type=int, nargs="*", default=[800, 1600])
    p.add_argument("--walkers", type=int, default=1024, help="annealed walkers per class")
    p.add_argument("--seed", type=int, default=0, help="the annealing's key: 6000 + seed")
    p.add_argument(
        "--within",
        action="store_true",
        help="anneal inside each class's region (se.metrics.class_masses(within=True))",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the JSON written after each budget (default: RUN_DIR/masses_<model>[_within]"
        "_<steps>.json, e.g. masses_jarzynski_0_1600_3200.json)",
    )
    a = p.parse_args(argv)
    if a.out is None:
        inside = "_within" if a.within else ""
        budgets = "_".join(map(str, a.steps)) or "walkers"
        a.out = a.run_dir / f"masses_{a.model}{inside}_{budgets}.json"
    args = example_args(a.run_dir)
    args.model_ais_walkers, args.no_progress = a.walkers, True
    args.model_ais_within = a.within
    data, clf = example.load(args, jax.random.key(0))
    side = int(data.info["shape"][0])
    skeleton, _, _ = example.initial(0, args, side)
    energy = eqx.tree_deserialise_leaves(a.run_dir / f"energy_{a.model}.eqx", skeleton)
    target = np.asarray(args.weights) / np.sum(args.weights)
    print(f"model {a.run_dir / a.model}: digits {args.labels}, target {target.round(3)}")
    out = {"run_dir": str(a.run_dir), "model": a.model, "target": target.tolist()}
    out |= {"within": a.within, "walkers": a.walkers, "runs": []}
    walkers = a.run_dir / f"walkers_{a.model}.npz"
    if walkers.exists():
        out["walkers"] = walker_classes(energy, data, clf, walkers)
        print(
            f"  final walkers: proportions {np.round(out['walkers']['proportions'], 3)}, "
            f"mean energy by class {np.round(out['walkers']['mean_energy'], 2)} "
            f"(the data's {np.round(out['walkers']['data_mean_energy'], 2)})"
        )
        write_json(a.out, out)
    label = "log masses" if a.within else "bases' log Z"
    for steps in a.steps:
        args.model_ais = steps
        t0 = time.perf_counter()
        m = example.model_masses(clf, energy, data, a.seed, args)
        wall = time.perf_counter() - t0
        err = float(np.mean(np.abs(np.asarray(m["proportions"]) - target) / target))
        print(
            f"  {steps} steps, {a.walkers} walkers a class: proportions "
            f"{np.round(m['proportions'], 3)} ± {np.round(m['standard_errors'], 3)}, "
            f"{label} {np.round(m['log_Z'], 2)}, "
            f"mean relative error {err:.0%}, {wall:.0f} s"
        )
        m = {k: np.asarray(v).tolist() for k, v in m.items()}
        out["runs"].append({"steps": steps, "wall_s": wall, "mean_relative_error": err, **m})
        write_json(a.out, out)
    print(f"written: {a.out}")
    return out


if __name__ == "__main__":
    main()
