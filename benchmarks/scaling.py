"""How the time of a training step grows with the walkers and the dimension, and what splitting
the walkers over devices costs.

Jarzynski (ULA, ESS resampling) on a two-mode Gaussian mixture, per-field SGD. For each size,
``fit`` is called once to compile and then ``--reps`` times for ``--steps`` steps each (the
compiled chunk is reused); the time per step is the median over repetitions of the chunk's
wall time divided by its steps. It prints the table and the fitted exponents of
time ~ walkers^a (at d = 50) and time ~ d^b (at 10^4 walkers), over the sizes at or above
10^4 walkers and d >= 50 (smaller sizes are dominated by fixed per-step costs), and writes a
JSON file and a plot.

``--devices K`` also times the same total work on K forced host devices against one, at
10^4, 10^5 and 10^6 walkers, in a subprocess (``--xla_force_host_platform_device_count=K``):
on a CPU the K devices share the same cores, so the ratio measures the overhead of
splitting, not a speed-up. The one-device and the split chunks are alternated
``--device-reps`` times in the one process, and the ratio is that of their medians.

    python benchmarks/scaling.py                       # about 10 minutes on 2 cores
    python benchmarks/scaling.py --quick               # seconds (a smoke test)
    python benchmarks/scaling.py --only-devices --device-repeats 3 --out X   # devices only
    python benchmarks/scaling.py --only-devices --device-sizes 10000 --device-repeats 10 --out X
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax

import smc_ebm as se


def _run(num_walkers: int, dim: int, steps: int, devices=None):
    """``fit`` compiled for the benchmark's problem, and a function that times one chunk."""
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=2000, dim=dim).samples
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, dim, scale=0.1)
    strategy = se.Jarzynski(num_walkers, 0.1, resampling=se.ESSResampling(0.9))
    optimizer = se.optim.by_field(logits=optax.sgd(0.125), means=optax.sgd(0.025))
    kw = dict(
        strategy=strategy,
        optimizer=optimizer,
        num_steps=steps,
        chunk_size=steps,
        progress=False,
        devices=devices,
    )
    result = se.fit(energy, data, key=jax.random.key(2), **kw)  # compiles

    def chunk() -> float:
        nonlocal result
        result = se.fit(energy, data, key=jax.random.key(2), resume=result, **kw)
        return float(result.chunk_seconds[-1]) / steps

    return chunk


def time_per_step(num_walkers: int, dim: int, steps: int, reps: int, devices=None) -> float:
    chunk = _run(num_walkers, dim, steps, devices)
    return statistics.median(chunk() for _ in range(reps))


def paired_times(num_walkers: int, dim: int, steps: int, reps: int) -> tuple[float, float]:
    """Median time per step on one device and split over all devices, the two chunks
    alternated ``reps`` times (so that both see the same load of a shared machine)."""
    one, split = _run(num_walkers, dim, steps), _run(num_walkers, dim, steps, jax.devices())
    pairs = [(one(), split()) for _ in range(reps)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def exponent(sizes, times) -> float:
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def device_ratio(k: int, sizes, dim: int, steps: int, reps: int) -> list[dict]:
    """For each number of walkers in ``sizes``: one device against ``k`` forced host devices,
    side by side in one subprocess (:func:`paired_times`)."""
    here = str(Path(__file__).parent)
    code = (
        f"import jax, json, sys; sys.path.insert(0, {here!r}); import scaling as s; "
        f"out = [s.paired_times(n, {dim}, {steps}, {reps}) for n in {list(sizes)!r}]; "
        "print('RESULT' + json.dumps(out))"
    )
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={k}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")][-1]
    return [
        {"devices": k, "walkers": n, "one_device_s": one, "split_s": many, "ratio": many / one}
        for n, (one, many) in zip(sizes, json.loads(line[6:]), strict=True)
    ]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--devices", type=int, default=4, help="forced host devices (0: skip)")
    p.add_argument(
        "--device-repeats", type=int, default=1, help="times the device comparison is repeated"
    )
    p.add_argument(
        "--device-reps", type=int, default=15, help="alternated chunks of each device comparison"
    )
    p.add_argument("--only-devices", action="store_true", help="skip the walker and d sweep")
    p.add_argument(
        "--device-sizes",
        type=int,
        nargs="+",
        default=[10**4, 10**5, 10**6],
        help="walker counts of the device comparison",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scaling")
    args = p.parse_args(argv)
    walkers = [10**3, 3 * 10**3, 10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6]
    dims = [10, 50, 200, 1000]
    if args.quick:
        walkers, dims, args.steps, args.reps, args.device_reps = [64, 128], [2, 4], 5, 1, 2
    if args.only_devices:
        walkers, dims = [], []
    wdim = 4 if args.quick else 50
    nd = 128 if args.quick else 10**4
    rows = {"walkers": [], "dims": []}
    for n in walkers:
        t = time_per_step(n, wdim, args.steps, args.reps)
        rows["walkers"].append([n, t])
        print(f"N = {n:>8}, d = {wdim:>4}: {1e3 * t:9.3f} ms/step", flush=True)
    for d in dims:
        t = time_per_step(nd, d, args.steps, args.reps)
        rows["dims"].append([d, t])
        print(f"N = {nd:>8}, d = {d:>4}: {1e3 * t:9.3f} ms/step", flush=True)
    big_n = [(n, t) for n, t in rows["walkers"] if args.quick or n >= 10**4]
    big_d = [(d, t) for d, t in rows["dims"] if args.quick or d >= 50]
    out = {"device": str(jax.devices()[0]), "steps": args.steps, "reps": args.reps, **rows}
    if walkers:
        out["walker_exponent"] = exponent(*zip(*big_n, strict=True))
        out["dim_exponent"] = exponent(*zip(*big_d, strict=True))
        w, d = out["walker_exponent"], out["dim_exponent"]
        print(f"time ~ walkers^{w:.2f} (N >= 1e4), ~ d^{d:.2f}")
    if args.devices > 1:
        sizes = [128, 256] if args.quick else args.device_sizes
        out["split"] = []
        for _ in range(args.device_repeats):  # each repeat: a fresh subprocess
            split = device_ratio(args.devices, sizes, wdim, args.steps, args.device_reps)
            out["split"] += split
            for s in split:
                print(
                    f"{s['devices']} forced devices / 1, same work (N = {s['walkers']:>7}, "
                    f"d = {wdim}): {s['ratio']:.2f} ({1e3 * s['split_s']:.3f} vs "
                    f"{1e3 * s['one_device_s']:.3f} ms/step)",
                    flush=True,
                )
        if args.device_repeats > 1:
            for n in sizes:
                r = [s["ratio"] for s in out["split"] if s["walkers"] == n]
                print(
                    f"N = {n:>7}: ratio median {statistics.median(r):.2f}, "
                    f"range {min(r):.2f}-{max(r):.2f} over {len(r)} repeats"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    if not walkers:
        return out
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    panels = [("walkers", "walkers N"), ("dims", "dimension d")]
    for ax, (name, label) in zip(axes, panels, strict=True):
        x, t = np.array(rows[name]).T
        ax.loglog(x, 1e3 * t, "o-")
        ax.set_xlabel(label)
        ax.set_ylabel("ms per step")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    return out


if __name__ == "__main__":
    main()
