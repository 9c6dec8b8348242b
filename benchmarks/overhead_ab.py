"""Time per step of two commits side by side in one process (Jarzynski, PCD, Unweighted).

The package of the other commit is exported with ``git archive`` into a temporary folder and
renamed ``smc_ebm_ref`` (its imports rewritten), so both versions run in this process, on the
same data, interleaved in short repetitions (the machine's load changes on a scale of
seconds). Each repetition continues every run with ``fit(resume=...)`` for ``--steps`` steps;
the script prints, per version and strategy, the minimum and median ms/step, and the ratios
new/old of the minima and of the back-to-back medians, plus Jarzynski/PCD within each version.

    python benchmarks/overhead_ab.py --ref 28fdec9            # paper setting: d = 50, N = 10^4
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import jax
import optax


def export(ref: str, dest: Path) -> None:
    """``smc_ebm`` at ``ref`` as the package ``smc_ebm_ref`` in ``dest``."""
    root = Path(__file__).resolve().parents[1]
    blob = subprocess.run(
        ["git", "archive", ref, "smc_ebm"], cwd=root, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "smc_ebm").rename(dest / "smc_ebm_ref")
    for p in (dest / "smc_ebm_ref").rglob("*.py"):
        text = p.read_text()
        p.write_text(re.sub(r"\bsmc_ebm\b", "smc_ebm_ref", text))


def strategies(se, n, h):
    return {
        "Jarzynski": se.Jarzynski(n, h, resampling=se.ESSResampling(1 / 1.05, "systematic")),
        "PCD": se.PCD(n, h),
        "Unweighted": se.Unweighted(n, h),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default="HEAD~1", help="the other commit")
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--num-walkers", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=200, help="steps per repetition")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=300)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    export(args.ref, tmp)
    sys.path.insert(0, str(tmp))
    versions = {
        "old": importlib.import_module("smc_ebm_ref"),
        "new": importlib.import_module("smc_ebm"),
    }
    runs, times = {}, {}
    for vname, se in versions.items():
        data = se.datasets.two_mode_teacher(jax.random.key(0), n=10_000, dim=args.dim)
        energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, args.dim, scale=0.1)
        opt = se.optim.by_field(logits=optax.sgd(0.125), means=optax.sgd(0.025))
        for sname, strategy in strategies(se, args.num_walkers, 0.1).items():
            res = se.fit(
                energy,
                data.samples,
                strategy=strategy,
                optimizer=opt,
                num_steps=args.warmup,
                key=jax.random.key(2),
                progress=False,
                chunk_size=args.steps,
            )
            runs[vname, sname] = (se, data, strategy, opt, res)
            times[vname, sname] = []
    order = list(runs)
    for rep in range(args.reps):
        for k in order if rep % 2 == 0 else order[::-1]:
            se, data, strategy, opt, res = runs[k]
            res = se.fit(
                res.energy,
                data.samples,
                strategy=strategy,
                optimizer=opt,
                num_steps=args.steps,
                key=jax.random.key(2),
                progress=False,
                resume=res,
                chunk_size=args.steps,
            )
            runs[k] = (se, data, strategy, opt, res)
            times[k].append(1e3 * float(sum(res.chunk_seconds)) / args.steps)
    print(
        f"d={args.dim}, N={args.num_walkers}, {args.reps} reps x {args.steps} steps, ref {args.ref}"
    )
    print(f"{'version':8} {'strategy':11} {'min ms':>8} {'median ms':>10}")
    for (v, s), t in times.items():
        print(f"{v:8} {s:11} {min(t):8.3f} {statistics.median(t):10.3f}")
    for s in ("Jarzynski", "PCD", "Unweighted"):
        a, b = times["old", s], times["new", s]
        paired = statistics.median(y / x for x, y in zip(a, b, strict=True))
        print(f"new/old {s:11} minima {min(b) / min(a):.3f}  paired median {paired:.3f}")
    for v in ("old", "new"):
        a, b = times[v, "PCD"], times[v, "Jarzynski"]
        paired = statistics.median(y / x for x, y in zip(a, b, strict=True))
        print(f"{v} Jarzynski/PCD  minima {min(b) / min(a):.3f}  paired median {paired:.3f}")
    return {f"{v} {s}": t for (v, s), t in times.items()}


if __name__ == "__main__":
    main()
