"""The same-step feedback correction when the training pulls the parameters back fast.

SGD (rate 0.05) on the mean and the scale of a 2-d Gaussian, from N(0, I) toward data with
sd (1.5, 0.7): the data term pulls the parameters back with a time constant of a few steps.
For N Jarzynski walkers (no observers), the drivers' running log Z after ``--steps`` steps is
compared with the closed form at the run's own final parameters, over ``--seeds`` seeds, with
the feedback correction off, on (probe) and on (exact per-walker gradients). The first-order
same-step self-term of docs/maths.md 2.6, (lr / N) sum_j Var(dU/dtheta_j) = (lr / N) sum_j 3 /
s_j^2 per step, is printed beside it at the final scales.

    python benchmarks/feedback_cross_step.py              # N = 64 and 256, 8 seeds, ~2 min
    python benchmarks/feedback_cross_step.py --tiny       # seconds
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import smc_ebm as se
from smc_ebm.energies import Gaussian

LR = 0.05


def gaussian_runs(strategy, steps: int, seeds: int):
    """The setting's ``fit`` results, one per seed (training key = seed).

    SGD at rate ``LR`` on the mean and scale of a 2-d Gaussian, from N(0, I), toward 512 draws
    of N((1, -1), diag(1.5, 0.7)^2) (data from key 0); one record, at the end.
    """
    data = jnp.array([1.0, -1.0]) + jnp.array([1.5, 0.7]) * jax.random.normal(
        jax.random.key(0), (512, 2)
    )
    data = np.asarray(data, np.float32)
    energy = Gaussian(jnp.zeros(2), jnp.ones(2))
    optimizer = optax.sgd(LR)  # one object: the compiled chunk is reused over the seeds
    for seed in range(seeds):
        yield se.fit(
            energy,
            data,
            strategy=strategy,
            optimizer=optimizer,
            num_steps=steps,
            key=jax.random.key(seed),
            progress=False,
            record_every=steps,
        )


def errors(strategy, steps: int, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: drivers' log Z minus the exact value, and the first-order same-step drift."""
    err, same_step = [], []
    for res in gaussian_runs(strategy, steps, seeds):
        s = np.abs(np.asarray(res.energy.scale, np.float64))
        err.append(res.log_Z - np.sum(np.log(np.sqrt(2 * np.pi) * s)))
        same_step.append(-LR / strategy.num_walkers * np.sum(3.0 / s**2) * steps)
    return np.asarray(err), np.asarray(same_step)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--walkers", type=int, nargs="+", default=[64, 256])
    p.add_argument("--steps", type=int, default=201)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--tiny", action="store_true", help="16 walkers, 20 steps, 2 seeds")
    a = p.parse_args(argv)
    if a.tiny:
        a.walkers, a.steps, a.seeds = [16], 20, 2
    rows = []
    print(f"drivers' log Z - exact after {a.steps} SGD steps, mean +- SE over {a.seeds} seeds")
    for n in a.walkers:
        for label, kw in (
            ("off", dict(feedback_correction=False)),
            ("on (probe)", dict(feedback_correction=True)),
            ("on (exact)", dict(feedback_correction=True, feedback_estimator="exact")),
        ):
            e, first = errors(se.Jarzynski(n, 0.3, **kw), a.steps, a.seeds)
            se_ = e.std(ddof=1) / np.sqrt(len(e)) if len(e) > 1 else float("nan")
            rows.append(dict(walkers=n, correction=label, mean=float(e.mean()), se=float(se_)))
            print(
                f"N = {n:4d}  correction {label:10s}: {e.mean():+.3f} +- {se_:.3f}"
                f"   (first-order same-step term: {first.mean():+.3f})",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
