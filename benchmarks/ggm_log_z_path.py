"""Where the error of Jarzynski's tracked log Z comes from on the Gaussian graphical model.

The setting of ``examples/numpyro_ggm.py`` (d = 5, 2000 data, 2048 walkers and 2048 MALA
observers, ULA h = 0.05, Adam 0.02 decayed a thousandfold over 4000 steps), with one thing
changed at a time:

* ``--warmup W``: the learning rate's linear warm-up (the example's default 500; 0: none);
* ``--observer-step F``: the observers' MALA step, ``F`` times the drivers' (the same
  parameter path, since the observers never enter the gradient, but other moves);
* ``--start exact``: every walker starts from exact draws of the model at ``L = I``
  (a standard normal) instead of the annealed start.

Prints, per seed, log Z - exact at the final precision, the parameters' error against the
MLE, and the drivers' lowest ESS and number of resamplings (docs/numpyro.md, "Why the
warm-up"; output in ``benchmarks/results/ggm_log_z_path.txt``)::

    python benchmarks/ggm_log_z_path.py --warmup 0 --seeds 0 1 2 3 4 5 6
    python benchmarks/ggm_log_z_path.py --warmup 0 --observer-step 3 --seeds 0 1 2 3 4 5 6
    python benchmarks/ggm_log_z_path.py --warmup 0 --start exact --seeds 0 1 2 3 4 5 6
    python benchmarks/ggm_log_z_path.py --warmup 500 --seeds 0 1 2 3 4 5 6

About 15 s per seed on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import jax
import numpy as np

_spec = importlib.util.spec_from_file_location(
    "numpyro_ggm", Path(__file__).resolve().parents[1] / "examples" / "numpyro_ggm.py"
)
ggm_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ggm_example)


def run(seed, warmup, observer_step, start, dim=5, h=0.05, walkers=2048, steps=4000, n_data=2000):
    """The example's run (``examples/numpyro_ggm.py``) with one thing changed."""
    init = "model"
    if start == "exact":  # the model at L = I is a standard normal
        init = np.random.default_rng(7).normal(size=(walkers, dim)).astype(np.float32)
    row = ggm_example.run(
        "jarzynski",
        dim,
        n_data,
        walkers,
        steps,
        0.02,
        h,
        seed,
        progress=False,
        warmup=warmup,
        observer_step_size=observer_step * h,
        init=init,
    )
    return {
        "seed": seed,
        "warmup": warmup,
        "observer_step": observer_step,
        "start": start,
        "log_Z_err": round(row["log_Z_err"], 4),
        "rel_err_vs_mle": round(row["rel_err_vs_mle"], 4),
        "drivers_min_ess": round(row["drivers_min_ess"], 3),
        "resamplings": row["resamplings"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--observer-step", type=float, default=1.0)
    p.add_argument("--start", choices=["model", "exact"], default="model")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--tiny", action="store_true", help="128 walkers, 60 steps: a smoke test")
    a = p.parse_args(argv)
    size = dict(walkers=128, steps=60, n_data=200) if a.tiny else {}
    warmup = min(a.warmup, 10) if a.tiny else a.warmup
    rows = []
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float
        for seed in a.seeds:
            rows.append(run(seed, warmup, a.observer_step, a.start, **size))
            print(json.dumps(rows[-1]), flush=True)
    errs = np.array([r["log_Z_err"] for r in rows])
    if len(errs) > 1:
        within = int(np.sum(np.abs(errs) < 0.05))
        print(
            f"log Z - exact: {errs.mean():+.3f} +- {errs.std(ddof=1):.3f} (mean +- sd over "
            f"{len(errs)} seeds), {within} within 0.05, worst {errs[np.argmax(np.abs(errs))]:+.3f}"
        )
    return rows


if __name__ == "__main__":
    main()
