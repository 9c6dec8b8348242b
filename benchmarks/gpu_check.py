"""One check of the accelerator numbers: run it on a machine with a GPU, keep the JSON.

It measures, on whatever devices JAX sees:

* the paper's GMM setting (d = 50, two modes, per-field SGD, ESS resampling at 1/1.05): the
  wall time of 8000 Jarzynski steps at 10^4 walkers and of 8000 steps at 10^5 walkers
  (compilation excluded, stated separately);
* ``se.diagnose``'s R-hat/ESS on the device: the time of the device summary of 64 chains;
* with several devices, the time per step of ``fit(..., devices=jax.devices())`` against one
  device for the same work.

    bash benchmarks/gpu_check.sh                 # installs what is missing, then runs this
    python benchmarks/gpu_check.py --quick       # tiny sizes (a smoke test on a CPU)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax

import smc_ebm as se

sys.path.insert(0, str(Path(__file__).parent))
import scaling  # noqa: E402


def paper_setting(num_walkers: int, dim: int, steps: int) -> dict:
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
    result = se.fit(energy, data, num_steps=steps, key=jax.random.key(2), **kw)
    return {
        "walkers": num_walkers,
        "dim": dim,
        "steps": steps,
        "seconds": float(np.sum(result.chunk_seconds)),
        "compile_and_10_steps_s": compile_s,
        "learned_weights": np.asarray(result.energy.weights).tolist(),
    }


def device_summary(chains: int, draws: int, dim: int) -> dict:
    summary = jax.jit(se.diagnostics.device_summary_stats)
    x = jax.random.normal(jax.random.key(0), (chains, draws, dim))
    jax.block_until_ready(summary(x))  # compiles
    t0 = time.perf_counter()
    jax.block_until_ready(summary(x))
    return {"chains": chains, "draws": draws, "dim": dim, "seconds": time.perf_counter() - t0}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = p.parse_args(argv)
    steps, sizes, dim = (8000, [10**4, 10**5], 50) if not args.quick else (20, [64], 3)
    out = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "runs": []}
    for n in sizes:
        out["runs"].append(paper_setting(n, dim, steps))
        r = out["runs"][-1]
        print(f"{n} walkers, d = {dim}: {steps} steps in {r['seconds']:.1f} s", flush=True)
    out["diagnose"] = device_summary(
        64, 1000 if not args.quick else 50, 50 if not args.quick else 3
    )
    print(f"device R-hat/ESS summary: {out['diagnose']['seconds']:.3f} s", flush=True)
    if len(jax.devices()) > 1:
        n = 10**5 if not args.quick else 64 * len(jax.devices())
        one = scaling.time_per_step(n, dim, 20, 3)
        many = scaling.time_per_step(n, dim, 20, 3, devices=jax.devices())
        out["split"] = {"walkers": n, "one_device_s": one, "split_s": many, "ratio": many / one}
        print(f"{len(jax.devices())} devices / 1: {many / one:.2f}", flush=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
