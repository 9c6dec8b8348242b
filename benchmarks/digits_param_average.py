"""The digits example's Jarzynski model with its parameters averaged over the end of the run.

Trains one seed of ``examples/digits_proportions.py``'s Jarzynski run (any of the example's
options), the last ``--fraction`` of its steps in segments of ``--every`` steps
(``fit(..., resume=result)``, which continues the run exactly), and averages the energy's
parameters over the segment ends (stochastic weight averaging; uniform weights). It saves
the final energy (``energy_jarzynski_<seed>.eqx``, the example's model) and the averaged one
(``energy_averaged_<seed>.eqx``) with the options (``numbers.json``), so that
``benchmarks/digits_model_masses.py DIR --model averaged_<seed>`` measures the averaged
model's own class proportions beside the final one's.

    python benchmarks/digits_param_average.py --labels 1 2 5 --weights 0.332689 0.516656 \\
        0.150656 --out-dir DIR
    python benchmarks/digits_model_masses.py DIR --model averaged_0 --steps 1600
    python benchmarks/digits_model_masses.py DIR --model jarzynski_0 --steps 1600
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import digits_proportions as example  # noqa: E402

import smc_ebm as se  # noqa: E402
from smc_ebm.recipes import stop_if_interrupted, write_json  # noqa: E402

# The options this script does not define are the example's (parse_known_args below).
FORWARDS_TO = "examples/digits_proportions.py"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fraction", type=float, default=0.25, help="averaged end of the run")
    p.add_argument("--every", type=int, default=20, help="steps between snapshots")
    own, rest = p.parse_known_args(argv)
    args = example.parse_args(rest)
    if not 0 < own.fraction <= 1 or own.every < 10 or own.every % 10:
        raise ValueError("--fraction must be in (0, 1] and --every a positive multiple of 10.")
    seed = args.first_seed
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data, clf = example.load(args, jax.random.key(0))
    side = int(data.info["shape"][0])
    energy, optimizer, key = example.initial(seed, args, side)
    kw = dict(
        strategy=example.make_strategy("Jarzynski", args, side * side),
        optimizer=optimizer,
        key=key,
        batch_size=args.batch_size or None,
        record_every=10,
        progress=False,
    )
    first = args.steps - own.every * round(own.fraction * args.steps / own.every)
    t0 = time.perf_counter()
    snaps, props = [], []
    with jax.numpy_dtype_promotion("standard"):
        result = se.fit(energy, data.samples, num_steps=first, **kw)
        while True:
            stop_if_interrupted(result)  # a snapshot is taken only at a segment's end
            snaps.append(eqx.filter(result.energy, eqx.is_inexact_array))
            props.append(clf.proportions(result.walkers, result.log_weights))
            if result.steps >= args.steps:
                break
            result = se.fit(energy, data.samples, num_steps=own.every, resume=result, **kw)
    wall = time.perf_counter() - t0
    mean = jax.tree.map(lambda *a: jnp.mean(jnp.stack(a), axis=0), *snaps)
    averaged = eqx.combine(mean, eqx.partition(result.energy, eqx.is_inexact_array)[1])
    eqx.tree_serialise_leaves(out / f"energy_jarzynski_{seed}.eqx", result.energy)
    eqx.tree_serialise_leaves(out / f"energy_averaged_{seed}.eqx", averaged)
    final, over = np.asarray(props[-1]), np.mean(props, axis=0)
    print(
        f"{result.steps} steps, {len(snaps)} snapshots from step {first}, {wall:.0f} s; "
        f"walkers: final {final.round(3)}, mean over the snapshots {over.round(3)}"
    )
    numbers = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "fraction": own.fraction,
        "every": own.every,
        "snapshots": len(snaps),
        "final_walkers": final.tolist(),
        "snapshot_walkers": over.tolist(),
        "wall_s": wall,
    }
    write_json(out / "numbers.json", numbers)
    return numbers


if __name__ == "__main__":
    main()
