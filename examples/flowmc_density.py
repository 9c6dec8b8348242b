"""Eight Gaussians and rings: median squared log-density error on a grid (Grenioux et al.).

    python examples/flowmc_density.py                 # small defaults, 2-core CPU
    python examples/flowmc_density.py --paper         # the paper's budget: 2048 walkers, 10^4 steps
    python examples/flowmc_density.py --sets eight_gaussians --only FlowMC,flow-Jarzynski --seeds 3

Both sets use one recipe: 512 walkers, 4000 steps, Adam at 1e-3 decaying as a cosine to 1e-5
(``--lr-final``), and a tilted energy whose net is a squared norm, U = |f|^2 / 2 with f a ReLU
MLP with 8 outputs (``--squared``; 0 gives the scalar SiLU MLP of the four-Gaussian recipe).
Most of each box lies where no data point or walker goes (more than half of [-2, 2]^2 is at
radius > 1.5), so the median error measures how the energy extrapolates into the tails: a
squared norm grows quadratically there, as the targets' log-densities do, and a scalar
network grows linearly.

Eight Gaussians are trained on 10^6 draws of the target (``--n-data``), which amounts to
fresh samples for every minibatch; rings keep 2 * 10^4 draws (see docs/flows.md).

Prints one table per dataset with FlowMC, flow-Jarzynski, Jarzynski (ULA) and PCD and saves the
figure to ``--out`` (default outputs/flowmc_density/flowmc_density.png; the figure of
docs/flows.md is regenerated with ``--out docs/figures/flowmc_density.png``).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import smc_ebm as se  # noqa: E402
from smc_ebm.recipes import flow_strategies, output_dir, table, tilted_energy, train  # noqa: E402

# name: (dataset, box, base sigma, default number of data)
SETS = {
    "eight_gaussians": (
        se.datasets.eight_gaussians,
        ((-2.0, 2.0), (-2.0, 2.0)),
        1.0,
        1_000_000,
    ),
    "rings": (se.datasets.rings, ((-5.0, 5.0), (-5.0, 5.0)), 2.5, 20_000),
}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--paper", action="store_true", help="larger sizes")
    p.add_argument("--steps", type=int, default=None, help="default: 4000 (10000 with --paper)")
    p.add_argument(
        "--n-data", type=int, default=None, help="draws of the target (default 10^6 / 2e4)"
    )
    p.add_argument("--seeds", type=int, default=1, help="training seeds 3, 4, ...")
    p.add_argument("--walkers", type=int, default=None)
    p.add_argument("--sets", default="eight_gaussians,rings")
    p.add_argument("--only", default=None, help="comma-separated method names")
    p.add_argument(
        "--lr-final",
        type=float,
        default=0.01,
        help="final learning rate as a fraction of 1e-3 (cosine decay); 1 keeps it constant",
    )
    p.add_argument(
        "--squared",
        type=int,
        default=8,
        help="outputs k of the squared-norm ReLU head U = |f|^2/2; 0: a scalar SiLU MLP",
    )
    p.add_argument("--out", default="outputs/flowmc_density/flowmc_density.png")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = p.parse_args()
    output_dir(Path(args.out).parent)
    n = args.walkers or (2048 if args.paper else 512)
    sets = args.sets.split(",")
    fig, axes = plt.subplots(len(sets), 5, figsize=(14, 2.9 * len(sets)), squeeze=False)
    for row, name in enumerate(sets):
        make, bounds, sigma, default_n_data = SETS[name]
        steps = args.steps or (10000 if args.paper else 4000)
        n_data = args.n_data or default_n_data
        data = make(jax.random.key(0), n_data)
        flow_kw = dict(num_layers=6, width=64, depth=2)
        energy, flow = tilted_energy(
            jax.random.key(1), 2, sigma, 128, 3, jax.random.key(2), flow_kw, args.squared
        )
        strats = flow_strategies(n, flow, 0.01, 0.002, 32, 1e-3)
        if args.only:
            strats = {k: v for k, v in strats.items() if k in args.only.split(",")}
        err_of = eqx.filter_jit(
            functools.partial(
                se.metrics.log_density_error, log_prob=data.log_prob, bounds=bounds, n=200
            )
        )
        rows, energies = {}, {}
        for mname, strat in strats.items():
            errs, walls = [], []
            for seed in range(3, 3 + args.seeds):
                try:
                    res, wall = train(
                        energy,
                        data.samples,
                        strat,
                        steps,
                        1e-3,
                        512,
                        seed,
                        args.lr_final,
                        progress=not args.no_progress,
                    )
                except se.TrainingError as err:
                    errs.append(float("nan"))
                    walls.append(f"diverged at step {err.step}")
                    continue
                errs.append(float(err_of(res.energy)))
                walls.append(f"{wall:.0f}")
                if seed == 3:
                    energies[mname] = res.energy
            per_seed = ", ".join(f"{e:.3g}" for e in errs)
            err_cell = errs[0] if len(errs) == 1 else f"{np.mean(errs):.3g} ± {np.std(errs):.2g}"
            rows[mname] = [err_cell, per_seed, ", ".join(walls)]
        print(
            f"\n{name}: {n} walkers, {steps} steps, {n_data} data, seeds {args.seeds}, "
            f"lr-final {args.lr_final}, squared {args.squared}"
        )
        table(rows, ["median sq. log-density error", "per seed", "wall s"])
        x, _ = se.metrics.grid_2d(bounds, 150)
        dens = [jnp.exp(jax.vmap(data.log_prob)(x))] + [
            jax.nn.softmax(-jax.vmap(e)(x)) for e in energies.values()
        ]
        for ax, d, title in zip(axes[row], dens, ["data", *energies], strict=False):
            ax.imshow(
                np.asarray(d).reshape(150, 150).T, origin="lower", extent=(*bounds[0], *bounds[1])
            )
            ax.set_title(f"{name}: {title}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[row][len(dens) :]:  # fewer methods (--only): no empty panels
            ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
