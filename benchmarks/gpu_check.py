"""One check of the accelerator numbers: run it on a machine with a GPU, keep the JSON.

It measures, on whatever devices JAX sees, and writes each section to the JSON file as soon
as it is done (a run stopped part-way keeps what it measured):

* the paper's GMM setting (d = 50, two modes, per-field SGD, ESS resampling at 1/1.05): the
  wall time of 8000 Jarzynski steps at 10^4 walkers and of 8000 steps at 10^5 walkers
  (compilation excluded, stated separately), with the learned weight of the mode near -10 e_1
  (the teacher's is 0.25);
* ``se.diagnose`` on the device: the compiled R-hat/ESS summary of 64 chains x 1000 draws
  alone, and a whole ``se.diagnose`` call (64 MALA chains x 1000 steps under the trained
  10^4-walker GMM, the ArviZ conversion included);
* the digits default (``examples/digits_proportions.py`` with its defaults: 8x8 digits 2/3/6
  at 4/7, 2/7, 1/7, 2000 steps, 1024 walkers: Jarzynski's all moved with MALA, PCD's 256 per
  step with ULA), seed 0, Jarzynski and PCD: the wall time of each run (compilation
  included) and the class proportions of its final walkers;
* with several devices, the time per step of ``fit(..., devices=jax.devices())`` against one
  device for the same work.

    bash benchmarks/gpu_check.sh                 # installs what is missing, then runs this
    python benchmarks/gpu_check.py --quick       # tiny sizes (a smoke test on a CPU)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax

import smc_ebm as se
from smc_ebm.recipes import write_json

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
import scaling  # noqa: E402


def paper_setting(num_walkers: int, dim: int, steps: int) -> tuple[dict, se.FitResult]:
    data = se.datasets.two_mode_teacher(jax.random.key(0), n=10_000, dim=dim).samples
    energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, dim, scale=0.1)
    strategy = se.Jarzynski(
        num_walkers, 0.1, resampling=se.ESSResampling(1 / 1.05, method="systematic")
    )
    kw = dict(
        strategy=strategy,
        optimizer=se.optim.by_field(logits=optax.sgd(0.125), means=optax.sgd(0.025)),
        progress=False,
        record_every=10,
        chunk_size=1000,
    )
    t0 = time.perf_counter()
    se.fit(energy, data, num_steps=10, key=jax.random.key(2), **kw)  # compiles the chunk
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = se.fit(energy, data, num_steps=steps, key=jax.random.key(2), **kw)
    call_s = time.perf_counter() - t0
    means = np.asarray(result.energy.means)
    near = int(np.argmin(means[:, 0]))  # the student mode nearest -10 e_1
    record = {
        "walkers": num_walkers,
        "dim": dim,
        "steps": steps,
        "seconds": float(np.sum(result.chunk_seconds)),
        "call_seconds": call_s,
        "compile_and_10_steps_s": compile_s,
        "ms_per_step": 1e3 * float(np.sum(result.chunk_seconds)) / steps,
        "weight_near_minus_10": float(np.asarray(result.energy.weights)[near]),
        "num_resamplings": int(np.sum(result.history.get("resampled", 0))),
    }
    return record, result


def device_summary(chains: int, draws: int, dim: int) -> dict:
    summary = jax.jit(se.diagnostics.device_summary_stats)
    x = jax.random.normal(jax.random.key(0), (chains, draws, dim))
    jax.block_until_ready(summary(x))  # compiles
    t0 = time.perf_counter()
    jax.block_until_ready(summary(x))
    return {"chains": chains, "draws": draws, "dim": dim, "seconds": time.perf_counter() - t0}


def whole_diagnose(result: se.FitResult, chains: int, steps: int) -> dict:
    kw = dict(num_chains=chains, num_steps=steps, kernel="mala", progress=False)
    t0 = time.perf_counter()
    se.diagnose(result, key=jax.random.key(3), **kw)  # compiles
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    d = se.diagnose(result, key=jax.random.key(4), **kw)
    return {
        "chains": chains,
        "steps": steps,
        "first_call_s": first,
        "second_call_s": time.perf_counter() - t0,
        "max_rhat": float(d.max_rhat),
        "acceptance": float(d.acceptance),
    }


def digits_default(quick: bool) -> dict:
    import digits_proportions as ex

    argv = ["--no-progress", "--seeds", "1"]
    if quick:
        argv += ["--steps", "4", "--num-walkers", "32", "--walker-batch", "16", "--num-anneal", "2"]
        argv += ["--channels", "2", "2", "2", "--batch-size", "16"]
    args = ex.parse_args(argv)
    data, clf = ex.load(args, jax.random.key(0))
    side = int(data.info["shape"][0])
    out = {"steps": args.steps, "num_walkers": args.num_walkers, "target": ex.TARGETS}
    for name in ("Jarzynski", "PCD"):
        t0 = time.perf_counter()
        res = ex.run(name, 0, args, data, side)["result"]
        wall = time.perf_counter() - t0
        chunks = np.asarray(res.chunk_seconds)
        logw = res.log_weights if name == "Jarzynski" else None
        props = clf.proportions(res.walkers, logw)
        out[name] = {
            "wall_s": wall,
            "chunk_seconds": chunks.tolist(),
            "proportions": np.asarray(props).tolist(),
        }
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    p.add_argument("--no-digits", action="store_true", help="leave out the digits section")
    args = p.parse_args(argv)
    steps, sizes, dim = (8000, [10**4, 10**5], 50) if not args.quick else (20, [64], 3)
    out = {
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "python": sys.version.split()[0],
        "runs": [],
    }
    t_start = time.perf_counter()
    first_result = None
    for n in sizes:
        record, result = paper_setting(n, dim, steps)
        first_result = first_result or result
        out["runs"].append(record)
        print(
            f"{n} walkers, d = {dim}: {steps} steps in {record['seconds']:.1f} s "
            f"({record['ms_per_step']:.3f} ms/step; compile + 10 steps "
            f"{record['compile_and_10_steps_s']:.1f} s), learned weight "
            f"{record['weight_near_minus_10']:.3f}",
            flush=True,
        )
        write_json(args.out, out)
    out["diagnose"] = device_summary(
        64, 1000 if not args.quick else 50, 50 if not args.quick else 3
    )
    print(f"device R-hat/ESS summary: {out['diagnose']['seconds']:.3f} s", flush=True)
    out["diagnose_call"] = whole_diagnose(first_result, 64, 1000 if not args.quick else 20)
    r = out["diagnose_call"]
    print(
        f"se.diagnose, 64 MALA chains x {r['steps']} steps: {r['second_call_s']:.2f} s "
        f"(first call {r['first_call_s']:.1f} s), max R-hat {r['max_rhat']:.3f}",
        flush=True,
    )
    write_json(args.out, out)
    if not args.no_digits:
        out["digits"] = digits_default(args.quick)
        for name in ("Jarzynski", "PCD"):
            r = out["digits"][name]
            print(
                f"digits default, {name}, seed 0: {r['wall_s']:.1f} s (compilation included), "
                f"final walkers' proportions {np.round(r['proportions'], 3).tolist()}",
                flush=True,
            )
        write_json(args.out, out)
    if len(jax.devices()) > 1:
        n = 10**5 if not args.quick else 64 * len(jax.devices())
        one, many = scaling.paired_times(n, dim, 20, 3)
        out["split"] = {"walkers": n, "one_device_s": one, "split_s": many, "ratio": many / one}
        print(f"{len(jax.devices())} devices / 1: {many / one:.2f}", flush=True)
    out["total_s"] = time.perf_counter() - t_start
    write_json(args.out, out)
    print(f"wrote {args.out} ({out['total_s']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
