"""The cost of checkpoints: ``fit`` with and without them, side by side (paper GMM setting).

    python benchmarks/checkpoint_cost.py [--steps 2000] [--reps 6]

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


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--reps", type=int, default=6)
    args = p.parse_args()
    steps = args.steps
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=10000, dim=50)
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, 50, scale=0.1)
    kw = dict(
        strategy=se.Jarzynski(10000, 0.1),
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
    for rep in range(args.reps):
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


if __name__ == "__main__":
    main()
