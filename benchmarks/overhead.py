"""Cost of an optimizer step: Jarzynski weights vs PCD and unweighted walkers.

DESIGN.md 1.1 asks that Jarzynski cost no more than PCD beyond O(N d) arithmetic: the
energy, x-gradient and dU/dtheta of the moved walkers come from one forward pass, reused by
the weight update, the next move and the next gradient. This script measures it on the
paper's 50-d two-mode teacher with 10^4 walkers (flags change the sizes).

Method. Timing one ``fit`` call mixes setup (data validation, walker initialisation, the
final evaluation) and steps. Each measurement therefore times two calls of the same
strategy with ``chunk_size`` equal to the number of steps (one compiled chunk per call),
one of ``S`` steps and one of ``2 S`` steps:

    time per step = (t(2 S) - t(S)) / S,

which cancels every per-call cost. ``fit`` keeps its compiled chunk between calls with the
same strategy and optimizer objects, so after one warm-up pair per strategy nothing is
compiled; ``fit`` returns host floats, so both calls are synchronised. ``--reps`` pairs
are then measured, round-robin over the strategies (so that drifts of the machine hit all
of them alike). The reported time is
``(min t(2 S) - min t(S)) / S`` over those calls (other processes only ever add time, so the
minimum is the least disturbed measurement); the spread of the per-pair differences is
printed beside it as a measure of the machine's noise. Note that the difference measures
steps ``S+1..2 S`` of a training run: Jarzynski resamples more often early in training.
``S`` is raised (from ``--steps``) until ``S`` steps of the fastest strategy take
``--min-seconds``, so that per-call jitter is small against the difference.

Example::

    python benchmarks/overhead.py                       # d = 50, N = 10^4, S = 500, 7 reps
    python benchmarks/overhead.py --steps 200 --reps 5 --strategies Jarzynski PCD
    python benchmarks/overhead.py --reps 5 --strategies Jarzynski Jarzynski-nocorr \
        Jarzynski-plain PCD                             # where Jarzynski's extra time goes
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import optax

import smc_ebm as se

STRATEGIES = ("Jarzynski", "PCD", "Unweighted", "CD", "Jarzynski-nocorr", "Jarzynski-plain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--energy",
        choices=("gmm", "mlp", "mlp-generic"),
        default="gmm",
        help="gmm: the paper's two-mode mixture (P = 2 (d + 1) parameters, closed-form "
        "evaluation); mlp: a SiLU network with quadratic confinement (weighted gradient from "
        "the adjoints of the x-gradient pass); mlp-generic: the same network through the "
        "generic path (a second backward pass with cotangent w)",
    )
    p.add_argument("--width", type=int, default=128, help="MLP hidden width (--energy mlp)")
    p.add_argument("--depth", type=int, default=2, help="MLP hidden layers (--energy mlp)")
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--n-data", type=int, default=10_000)
    p.add_argument("--n-walkers", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=None, help="data minibatch (None: all)")
    p.add_argument("--steps", type=int, default=500, help="S: the pair times S and 2 S steps")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=2.0,
        help="raise S until S steps of the fastest strategy take this long",
    )
    p.add_argument("--max-steps", type=int, default=100_000, help="upper bound on S")
    p.add_argument("--reps", type=int, default=7, help="measured pairs per strategy")
    p.add_argument("--record-every", type=int, default=10)
    p.add_argument("--step-size", type=float, default=0.1)
    p.add_argument(
        "--ess-threshold", type=float, default=1 / 1.05, help="Jarzynski resampling threshold"
    )
    p.add_argument(
        "--no-feedback-correction",
        action="store_true",
        help="Jarzynski without the first-order feedback correction",
    )
    p.add_argument(
        "--strategies", nargs="+", choices=STRATEGIES, default=["Jarzynski", "PCD", "Unweighted"]
    )
    return p.parse_args(argv)


class _GenericMLP(se.energies.MLP):
    """The MLP energy without its shared-backward evaluation (the generic path)."""

    def evaluate_batch(self, x):
        return None


def make_strategy(name: str, args: argparse.Namespace):
    h = args.step_size
    if name.startswith("Jarzynski"):
        # "-nocorr": without the feedback correction; "-plain": without it and without
        # resampling (the weights only).
        resampling = (
            se.NoResampling()
            if name == "Jarzynski-plain"
            else se.ESSResampling(args.ess_threshold, "systematic")
        )
        return se.Jarzynski(
            args.n_walkers,
            h,
            resampling=resampling,
            feedback_correction=name == "Jarzynski" and not args.no_feedback_correction,
        )
    if name == "PCD":
        return se.PCD(args.n_walkers, h)
    if name == "Unweighted":
        return se.Unweighted(args.n_walkers, h)
    return se.CD(n_steps=4, step_size=h)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
    print(
        f"platform {platform.platform()}, processor {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=args.n_data, dim=args.dim)
    if args.energy == "gmm":
        energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, args.dim, scale=0.01)
        optimizer = se.optim.by_field(logits=optax.sgd(0.125), means=optax.sgd(0.025))
    else:
        cls = se.energies.MLP if args.energy == "mlp" else _GenericMLP
        energy = cls(args.dim, args.width, args.depth, key=jax.random.key(1), confinement=1.0)
        optimizer = optax.sgd(1e-3)
    strategies = {name: make_strategy(name, args) for name in args.strategies}

    def timed(strategy, steps: int) -> float:
        t0 = time.perf_counter()
        res = se.fit(
            energy,
            data.samples,
            strategy=strategy,
            optimizer=optimizer,
            num_steps=steps,
            key=jax.random.key(2),
            batch_size=args.batch_size,
            record_every=args.record_every,
            progress=False,
            chunk_size=steps,
        )
        jax.block_until_ready((res.walkers, res.log_weights))
        return time.perf_counter() - t0

    def pair(strategy, steps: int) -> tuple[float, float]:
        t_short = timed(strategy, steps)
        t_long = timed(strategy, 2 * steps)
        return (t_long - t_short) / steps, t_short

    # Choose S: at least --steps, and long enough that S steps take --min-seconds, so that
    # the per-call jitter (tens of ms) is small against the difference being measured.
    S = -(-args.steps // args.record_every) * args.record_every
    while True:
        for strategy in strategies.values():  # warm-up: compiles (and caches) S and 2 S
            pair(strategy, S)
        fastest = min(pair(strategy, S)[0] for strategy in strategies.values())
        if S * fastest >= args.min_seconds or S >= args.max_steps:
            break
        grow = 2.0 * args.min_seconds / max(S * fastest, 1e-3 * args.min_seconds)
        S = min(args.max_steps, int(S * min(grow, 64.0)))
        S = -(-S // args.record_every) * args.record_every
        print(f"  S too short for a clean difference; retrying with S = {S}", flush=True)

    print(
        f"\n{args.energy} energy ({se.kernels.n_params(energy)} parameters), d = {args.dim}, "
        f"{args.n_data} data (batch {args.batch_size or 'all'}), "
        f"{args.n_walkers} walkers, record every {args.record_every}; Jarzynski: ESS threshold "
        f"{args.ess_threshold:.4g}, feedback correction "
        f"{'off' if args.no_feedback_correction else 'on'}; S = {S}, "
        f"{args.reps} measured pairs per strategy"
    )
    t_short: dict[str, list[float]] = {name: [] for name in strategies}
    t_long: dict[str, list[float]] = {name: [] for name in strategies}
    for rep in range(args.reps):
        for name, strategy in strategies.items():
            t_short[name].append(timed(strategy, S))
            t_long[name].append(timed(strategy, 2 * S))
            dt = (t_long[name][-1] - t_short[name][-1]) / S
            print(f"  pair {rep + 1}/{args.reps} {name}: {1e3 * dt:.3f} ms/step", flush=True)

    # Best-of-reps: the least disturbed time of each length, then their difference. Load
    # from other processes only ever adds time, so the minimum is the robust statistic.
    best = {n: (min(t_long[n]) - min(t_short[n])) / S for n in strategies}
    pairs = {
        n: [(b - a) / S for a, b in zip(t_short[n], t_long[n], strict=True)] for n in strategies
    }
    print(
        "\nms/step = (min t(2S) - min t(S)) / S, the minima over the measured fit() calls of"
        "\neach length (steps S+1..2S of training); compilation and per-call setup cancel."
        "\n'pairs' = median [min, max] of the per-pair differences (spread = machine noise)."
        "\n'per call' = min t(S) - S * ms/step: fixed cost of one fit() call (setup)."
    )
    w = max(len("strategy"), *map(len, strategies))
    header = (
        f"{'strategy':<{w}} | {'ms/step':>8} | {'pairs: median [min, max]':>26} | "
        f"{'per call s':>10}"
    )
    print(header)
    print("-" * len(header))
    for name in strategies:
        pr = pairs[name]
        spread = f"{1e3 * statistics.median(pr):.3f} [{1e3 * min(pr):.3f}, {1e3 * max(pr):.3f}]"
        print(
            f"{name:<{w}} | {1e3 * best[name]:>8.3f} | {spread:>26} | "
            f"{min(t_short[name]) - S * best[name]:>10.2f}"
        )
    if "PCD" in best:
        print(
            "\nX/PCD: the ratio of the ms/step above, and the median [min, max] of the ratios"
            "\nof the pairs measured back to back in one repetition (robust to slow drifts)."
        )
        for name in strategies:
            if name != "PCD":
                paired = [a / b for a, b in zip(pairs[name], pairs["PCD"], strict=True)]
                print(
                    f"{name}/PCD = {best[name] / best['PCD']:.3f}   paired: "
                    f"{statistics.median(paired):.3f} [{min(paired):.3f}, {max(paired):.3f}]"
                )


if __name__ == "__main__":
    main()
