"""Wall time of ``sample`` and ``diagnose`` with the live progress bar against without it.

The variants run in this process on the same problem, alternating in short rounds (the
machine's load changes on a scale of seconds; the order rotates from round to round):
``progress=True`` ("on") and ``progress=False`` ("off"), and two that take the bar's cost
apart: a poll at every step ("every step": the cost of one poll, amplified) and the polling
cond compiled in but never true ("never": the cost of its presence in the loop). The script
prints, per call, the median of the paired ratios on/off and never/off with their quartiles,
the ratio of the fastest calls (the least disturbed by other work on the machine), the cost of
one poll and the share of the call that its polls cost (the bar's polls come about
``POLL_SECONDS`` = 0.5 s apart, from the step time measured on the previous call; compiling
calls are not timed). The bar itself goes to a null stream.

    python benchmarks/progress_overhead.py               # about 8 minutes on 2 CPU cores
    python benchmarks/progress_overhead.py --tiny        # seconds: the code path only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time

import jax
import numpy as np

import smc_ebm as se
from smc_ebm import _live


def problem(dim: int, tiny: bool):
    """A 4-mode Gaussian mixture in ``dim`` dimensions and the two calls timed on it."""
    energy = se.energies.GaussianMixture.init(jax.random.key(0), 4, dim, scale=1.5)
    x0 = jax.random.normal(jax.random.key(1), (16 if tiny else 128, dim))
    n, steps = (64, 16) if tiny else (4096, 800)
    chain_steps = 16 if tiny else 800

    def sample(progress):
        return se.sample(
            energy, key=jax.random.key(2), num_walkers=n, num_steps=steps, progress=progress
        )

    def diagnose(progress):
        return se.diagnose(
            energy, key=jax.random.key(3), init=x0, num_chains=x0.shape[0], num_steps=chain_steps,
            step_size=0.05, progress=progress,
        )  # fmt: skip

    return {"sample": sample, "diagnose": diagnose}


# The variants timed: the bar as it is, no bar, and two that isolate the bar's two costs,
# a poll at every step (the cost of one poll, amplified) and the polling cond compiled in but
# never true (the cost of its presence in the loop).
VARIANTS = {"on": (True, None), "off": (False, None), "every step": (True, 1), "never": (True, 0)}


def timed(call, variant: str, polls: list[int]) -> float:
    """Seconds of one call of ``variant``; its number of polls appended to ``polls``."""
    progress, forced = VARIANTS[variant]
    at, every = _live.LiveCall.at, _live.poll_every
    count = [0]

    def counting(self, step, *values):
        count[0] += 1
        at(self, step, *values)

    _live.LiveCall.at = counting
    timing = dict(_live._STEP_SECONDS)  # a forced variant's step time is not the bar's
    if forced is not None:
        _live.poll_every = lambda seconds: forced
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the bar
            t0 = time.perf_counter()
            call(progress)
            seconds = time.perf_counter() - t0
    finally:
        _live.LiveCall.at, _live.poll_every = at, every
        if forced is not None:
            _live._STEP_SECONDS.clear()
            _live._STEP_SECONDS.update(timing)
    polls.append(count[0])
    return seconds


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(q2), float(q3)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--reps", type=int, default=30, help="rounds of the four variants per call")
    p.add_argument("--tiny", action="store_true", help="a few small repetitions")
    p.add_argument("--out", default=None, help="also write the lines to this file")
    args = p.parse_args(argv)
    reps = 3 if args.tiny else args.reps
    calls = problem(args.dim, args.tiny)
    lines = [
        f"progress=True vs progress=False, {reps} alternating rounds per call, d={args.dim}, "
        f"{jax.devices()[0].platform}, jax {jax.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the start",
    ]
    summary = {}
    names = list(VARIANTS)
    for name, call in calls.items():
        for variant in names:  # compile every variant
            timed(call, variant, [])
        timed(call, "on", [])  # the bar's step time, measured on an uncompiling call
        times = {v: [] for v in names}
        polls = {v: [] for v in names}
        for i in range(reps):
            order = names[i % len(names) :] + names[: i % len(names)]  # rotating order
            for variant in order:
                times[variant].append(timed(call, variant, polls[variant]))
        off = np.asarray(times["off"])
        row = {}
        for variant in ("on", "never"):
            ratios = np.asarray(times[variant]) / off
            q1, q2, q3 = quartiles(list(ratios))
            row[variant] = {"median_ratio": q2, "q1": q1, "q3": q3}
            row[variant]["min_ratio"] = float(min(times[variant]) / off.min())
        extra = statistics.median(times["every step"]) - statistics.median(times["off"])
        per_poll = extra / statistics.median(polls["every step"])
        n_polls, t_off = statistics.median(polls["on"]), statistics.median(times["off"])
        row["seconds_per_poll"] = per_poll
        row["polls_share"] = per_poll * n_polls / t_off
        summary[name] = row
        on, never = row["on"], row["never"]
        lines += [
            f"{name}: median s off {t_off:.3f}, on {statistics.median(times['on']):.3f}; "
            f"polls per call {n_polls:g}",
            f"  on/off     paired median {on['median_ratio']:.4f} "
            f"(quartiles {on['q1']:.4f} .. {on['q3']:.4f}), fastest {on['min_ratio']:.4f}",
            f"  never/off  paired median {never['median_ratio']:.4f} "
            f"(quartiles {never['q1']:.4f} .. {never['q3']:.4f}), fastest "
            f"{never['min_ratio']:.4f}   (the polling cond compiled in, no poll)",
            f"  one poll {1e3 * per_poll:.3f} ms (a poll at every step against none): the "
            f"polls of a call cost {100 * row['polls_share']:.3f}% of it",
        ]
        print("\n".join(lines[-4:]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return summary


if __name__ == "__main__":
    main()
