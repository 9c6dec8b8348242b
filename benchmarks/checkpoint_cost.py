"""The cost of checkpoints: ``fit`` with and without them, side by side (paper GMM setting).

    python benchmarks/checkpoint_cost.py [--steps 2000] [--reps 6]
    python benchmarks/checkpoint_cost.py --tiny     # d=2, 200 walkers, 100 steps: a smoke run

Each repetition runs the same training twice, with ``checkpoint_every = steps // 10`` (the
CLI's default: ten checkpoints of 10^4 x 50 walkers) and without, in alternating order, and
prints the ratio of their wall times and the cost per checkpoint.
"""

import argparse
import shutil
import tempfile
import time

import jax
import numpy as np
import optax

import smc_ebm as se


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--tiny", action="store_true", help="d=2, 200 walkers, 100 steps, 1 rep")
    args = p.parse_args(argv)
    steps, reps = (100, 1) if args.tiny else (args.steps, args.reps)
    dim, walkers, n = (2, 200, 500) if args.tiny else (50, 10000, 10000)
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=n, dim=dim)
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, dim, scale=0.1)
    kw = dict(
        strategy=se.Jarzynski(walkers, 0.1),
        optimizer=optax.sgd(0.05),
        num_steps=steps,
        progress=False,
        record_every=10,
    )

    def run(seed, checkpointed):
        d = tempfile.mkdtemp()
        extra = dict(checkpoint=d + "/c", checkpoint_every=steps // 10) if checkpointed else {}
        t0 = time.perf_counter()
        se.fit(energy, data.samples, key=jax.random.key(seed), **kw, **extra)
        t = time.perf_counter() - t0
        shutil.rmtree(d)
        return t

    run(2, False), run(2, True)  # compile both
    ratios, per_checkpoint = [], []
    for rep in range(reps):
        t = {}
        for checkpointed in [False, True] if rep % 2 == 0 else [True, False]:
            t[checkpointed] = run(3 + rep, checkpointed)
        ratios.append(t[True] / t[False])
        per_checkpoint.append((t[True] - t[False]) / 10)
        print(
            f"rep {rep}: plain {t[False]:.2f} s, checkpointed {t[True]:.2f} s, "
            f"ratio {ratios[-1]:.3f}",
            flush=True,
        )
    q1, q3 = np.quantile(ratios, [0.25, 0.75])
    print(f"{steps} steps; median cost per checkpoint {1e3 * np.median(per_checkpoint):.1f} ms")
    print(f"median ratio checkpointed/plain {np.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f})")
    return {"ratios": ratios, "per_checkpoint_s": per_checkpoint}


if __name__ == "__main__":
    main()
