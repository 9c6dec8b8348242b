"""Cost of an optimizer step: Jarzynski weights vs PCD and unweighted walkers.

DESIGN.md 1.1 asks that Jarzynski cost no more than PCD beyond O(N d) arithmetic: the
energy, x-gradient and dU/dtheta of the moved walkers come from one forward pass, reused by
the weight update, the next move and the next gradient. This script measures it on the
paper's 50-d two-mode teacher with 10^4 walkers (flags change the sizes).

Method. ``fit`` reports the wall time of each compiled chunk of steps
(``FitResult.chunk_seconds``), which leaves out its per-call setup (data validation, walker
initialisation, the final evaluation). Each strategy is first run for ``--warmup`` steps
(compilation, and the fast early phase of training, when Jarzynski resamples most); then
``--reps`` calls of ``S`` steps each (one chunk per call) continue the run with
``fit(resume=...)``, round-robin over the strategies in an order reversed at every other
repetition. ``fit`` keeps its compiled chunk between calls with the same strategy and
optimizer objects, so nothing is compiled after the warm-up (a test checks it).

The machine's load changes on a scale of seconds, so each repetition is short (``S`` steps of
the fastest strategy take about ``--min-seconds``) and there are many. The script prints, per
strategy, the minimum and the quartiles of the time per step over the repetitions, and per
pair of strategies: the ratio of the minima (other processes only ever add time, so the
minimum is the least disturbed measurement) and the median and quartiles of the ratios of
the calls made back to back in one repetition (robust to slow drifts).

Example::

    python benchmarks/overhead.py                       # d = 50, N = 10^4, 25 reps
    python benchmarks/overhead.py --reps 41 --strategies Jarzynski PCD
    python benchmarks/overhead.py --strategies Jarzynski Jarzynski-nocorr \
        Jarzynski-plain PCD                             # where Jarzynski's extra time goes
    python benchmarks/overhead.py --strategies Jarzynski Jarzynski-fullcheck PCD
    python benchmarks/overhead.py --strategies Jarzynski Jarzynski-reseed PCD --reps 9
    python benchmarks/overhead.py --strategies Jarzynski PCD Bare-Jarzynski Bare-PCD \
        # against a bare lax.scan of the algorithm (benchmarks/bare_scan.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics

import jax
import optax

import smc_ebm as se

STRATEGIES = (
    "Jarzynski",
    "PCD",
    "Unweighted",
    "CD",
    "Jarzynski-nocorr",
    "Jarzynski-plain",
    "Jarzynski-fullcheck",
    "Jarzynski-reseed",
    "Bare-Jarzynski",
    "Bare-PCD",
)


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
    p.add_argument("--num-walkers", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=None, help="data minibatch (None: all)")
    p.add_argument("--steps", type=int, default=100, help="S, at least (see --min-seconds)")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="raise S until S steps of the fastest strategy take this long",
    )
    p.add_argument("--max-steps", type=int, default=100_000, help="upper bound on S")
    p.add_argument("--warmup", type=int, default=1000, help="steps run before measuring")
    p.add_argument("--reps", type=int, default=25, help="measured calls per strategy")
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


@dataclasses.dataclass(frozen=True)
class _FullCheck(se.Jarzynski):
    """Jarzynski walkers whose positions and gradients ``fit`` checks in full every step."""

    def step(self, key, state, energy_old, energy_new, step):
        state, info = super().step(key, state, energy_old, energy_new, step)
        return state, info._replace(finite=se.strategies.walker_checks(state, certified=False))


class _GenericMLP(se.energies.MLP):
    """The MLP energy without its shared-backward evaluation (the generic path)."""

    def evaluate_batch(self, x):
        return None


class _Bare:
    """A bare ``lax.scan`` of the algorithm (benchmarks/bare_scan.py), timed like ``fit``.

    Called as ``bare(steps, resume, seed)``; returns an object with ``chunk_seconds`` (one
    chunk) and the carry to resume from. Only for the mixture energy.
    """

    def __init__(self, name, data, energy, args):
        import bare_scan

        theta = (energy.means, energy.logits)
        lr = (0.025, 0.125)
        x0 = data[jax.random.choice(jax.random.key(7), data.shape[0], (args.num_walkers,))]
        if name == "Bare-Jarzynski":
            self.fn = bare_scan.make_jarzynski(data, args.step_size, lr, args.ess_threshold)
            self.carry = (theta, x0, jax.numpy.zeros(args.num_walkers), jax.numpy.zeros(()))
        else:
            self.fn = bare_scan.make_pcd(data, args.step_size, lr)
            self.carry = (theta, x0)

    def __call__(self, steps, resume=None, seed=2):
        import time
        import types

        carry = self.carry if resume is None else resume.carry
        keys = jax.random.split(jax.random.key(seed), steps)
        t0 = time.perf_counter()
        carry, _ = self.fn(carry, keys)
        jax.block_until_ready(carry)
        return types.SimpleNamespace(chunk_seconds=[time.perf_counter() - t0], carry=carry)


def make_strategy(name: str, args: argparse.Namespace):
    h = args.step_size
    if name.startswith("Jarzynski"):
        # "-nocorr": without the feedback correction; "-plain": without it and without
        # resampling (the weights only); "-fullcheck": the default with fit's finiteness check
        # reading positions and gradients too (as for PCD), instead of relying on the weights;
        # "-reseed": the default with N MALA observers that reseed the drivers every 500 steps
        # (the setting that meets the paper's weight bar, docs/teacher_student.md).
        resampling = (
            se.NoResampling()
            if name == "Jarzynski-plain"
            else se.ESSResampling(args.ess_threshold, "systematic")
        )
        strategy = se.Jarzynski(
            args.num_walkers,
            h,
            resampling=resampling,
            feedback_correction=name in ("Jarzynski", "Jarzynski-fullcheck", "Jarzynski-reseed")
            and not args.no_feedback_correction,
            **(
                {"num_observers": args.num_walkers, "reseed_every": 500}
                if name == "Jarzynski-reseed"
                else {}
            ),
        )
        if name == "Jarzynski-fullcheck":
            fields = dataclasses.fields(strategy)
            return _FullCheck(**{f.name: getattr(strategy, f.name) for f in fields})
        return strategy
    if name == "PCD":
        return se.PCD(args.num_walkers, h)
    if name == "Unweighted":
        return se.Unweighted(args.num_walkers, h)
    return se.CD(num_steps=4, step_size=h)


def main(argv: list[str] | None = None) -> dict:
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
    header = (
        f"{args.energy} energy ({se.kernels.n_params(energy)} parameters), d = {args.dim}, "
        f"{args.n_data} data (batch {args.batch_size or 'all'}), "
        f"{args.num_walkers} walkers, record every {args.record_every}; Jarzynski: ESS threshold "
        f"{args.ess_threshold:.4g}, feedback correction "
        f"{'off' if args.no_feedback_correction else 'on'}"
    )
    runs = {
        name: (
            energy,
            _Bare(name, data.samples, energy, args)
            if name.startswith("Bare")
            else make_strategy(name, args),
        )
        for name in args.strategies
    }
    return compare(runs, data.samples, optimizer, args, header)


def compare(runs: dict, data, optimizer, args: argparse.Namespace, header: str) -> dict:
    """Time ``runs`` side by side, print the table and return ``{name: [s/step]}``.

    ``runs`` maps a name to ``(energy, strategy)``; each is trained on ``data`` with
    ``optimizer`` by ``fit`` and continued with ``resume``. ``args`` has ``steps``,
    ``record_every``, ``min_seconds``, ``max_steps``, ``warmup``, ``reps`` and ``batch_size``
    (the method is in the module docstring). Ratios are printed against ``"PCD"`` when it is
    timed.
    """

    def run(name: str, steps: int, resume=None, seed: int = 2, chunk: int | None = None):
        energy, strategy = runs[name]
        if isinstance(strategy, _Bare):
            return strategy(steps, resume, seed)
        with jax.numpy_dtype_promotion("standard"):  # optax.adam under strict promotion
            return se.fit(
                energy,
                data,
                strategy=strategy,
                optimizer=optimizer,
                num_steps=steps,
                key=jax.random.key(seed),
                batch_size=args.batch_size,
                record_every=args.record_every,
                progress=False,
                chunk_size=chunk or steps,
                resume=resume,
            )

    def per_step(res, steps: int) -> float:
        (seconds,) = res.chunk_seconds  # one chunk per call
        return seconds / steps

    # Choose S: at least --steps, and long enough that S steps of the fastest strategy take
    # --min-seconds (a chunk's own dispatch is then negligible); then warm up with S-step
    # chunks, which compiles the chunk that the measurement reuses.
    S = -(-args.steps // args.record_every) * args.record_every
    while True:
        for name in runs:  # compiles the S-step chunk (cached for later calls)
            run(name, S)
        fastest = min(per_step(run(name, S), S) for name in runs)
        if S * fastest >= args.min_seconds or S >= args.max_steps:
            break
        S = min(args.max_steps, int(S * min(1.2 * args.min_seconds / (S * fastest), 64.0)))
        S = -(-S // args.record_every) * args.record_every
    warm = max(S, -(-args.warmup // S) * S)
    states = {name: run(name, warm, chunk=S) for name in runs}

    print(f"\n{header}; {warm} warm-up steps, then {args.reps} calls of S = {S} steps each")
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for rep in range(args.reps):
        # The order is reversed every other repetition, so that no strategy always runs first
        # or right after the same one.
        for name in order if rep % 2 == 0 else order[::-1]:
            states[name] = run(name, S, resume=states[name], seed=3 + rep)
            times[name].append(per_step(states[name], S))
        line = ", ".join(f"{n} {1e3 * t[-1]:.3f}" for n, t in times.items())
        print(f"  rep {rep + 1}/{args.reps} ms/step: {line}", flush=True)

    def quartiles(xs):
        q1, q2, q3 = statistics.quantiles(xs, n=4) if len(xs) > 1 else (xs[0],) * 3
        return q1, q2, q3

    print(
        f"\nms/step over the {args.reps} calls of {S} steps (compiled chunk only; steps "
        f"{warm + 1}..{warm + S * args.reps} of training):"
    )
    w = max(len("strategy"), *map(len, runs))
    columns = f"{'strategy':<{w}} | {'min':>7} | {'median [q1, q3]':>24}"
    print(columns)
    print("-" * len(columns))
    for name, t in times.items():
        q1, q2, q3 = quartiles(t)
        spread = f"{1e3 * q2:.3f} [{1e3 * q1:.3f}, {1e3 * q3:.3f}]"
        print(f"{name:<{w}} | {1e3 * min(t):>7.3f} | {spread:>24}")
    if "PCD" in times:
        print(
            "\nX/PCD: ratio of the minima; median [q1, q3] of the ratios of the calls made back"
            "\nto back in one repetition."
        )
        for name, t in times.items():
            if name != "PCD":
                paired = [a / b for a, b in zip(t, times["PCD"], strict=True)]
                q1, q2, q3 = quartiles(paired)
                print(
                    f"{name}/PCD = {min(t) / min(times['PCD']):.3f}   paired: "
                    f"{q2:.3f} [{q1:.3f}, {q3:.3f}]"
                )
    return times


if __name__ == "__main__":
    main()
