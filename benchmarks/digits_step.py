"""Cost of an optimizer step of the digits example: mini-batched walkers on a conv energy.

The setting of ``examples/digits_proportions.py`` (8x8 digits 2, 3, 6; ``ConvEnergy`` with
channels 8, 16, 32; Adam; data minibatches of 128; 1024 walkers of which 256 move per step),
timed side by side with the method of ``benchmarks/overhead.py`` (short compiled chunks,
round-robin, minima and paired medians). The strategies:

- ``J-batch``: Jarzynski, model term of the gradient from the moved batch (self-normalised
  weights), with the walkers' self-influence through Adam removed (``feedback_correction=
  "local"``): the example's default;
- ``J-batch-nocorr``: the same without the correction;
- ``J-all``: Jarzynski, model term from all walkers (``walker_grad="all"``), no correction;
- ``J-all-generic``: the same with the conv energy's ``evaluate_batch`` switched off, so the
  weighted parameter gradient takes the generic second backward pass;
- ``PCD``: the same walkers without weights (model term from the moved batch).

Example::

    python benchmarks/digits_step.py                 # all five, 15 reps each
    python benchmarks/digits_step.py --strategies J-all PCD --reps 9
"""

from __future__ import annotations

import argparse

import jax
import optax
from overhead import compare

import smc_ebm as se

STRATEGIES = ("J-batch", "J-batch-nocorr", "J-all", "J-all-generic", "PCD")


class _GenericConv(se.energies.ConvEnergy):
    """The conv energy without its shared-backward evaluation (the generic path)."""

    def evaluate_batch(self, x):
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--num-walkers", type=int, default=1024)
    p.add_argument("--walker-batch", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=128, help="data minibatch")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--step-size", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (constant)")
    p.add_argument("--steps", type=int, default=20, help="S, at least (see --min-seconds)")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-steps", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=200, help="steps run before measuring")
    p.add_argument("--reps", type=int, default=15, help="measured calls per strategy")
    p.add_argument("--record-every", type=int, default=10)
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    return p.parse_args(argv)


def make_strategy(name: str, args: argparse.Namespace):
    n, h, nb = args.num_walkers, args.step_size, args.walker_batch
    if name == "PCD":
        return se.PCD(n, h, walker_batch=nb)
    return se.Jarzynski(
        n,
        h,
        walker_batch=nb,
        walker_grad="batch" if name.startswith("J-batch") else "all",
        resampling=se.ESSResampling(0.5),
        feedback_correction="local" if name == "J-batch" else False,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
    data = se.datasets.digits(jax.random.key(0))
    energies = {
        cls: cls(8, key=jax.random.key(1), channels=args.channels)
        for cls in (se.energies.ConvEnergy, _GenericConv)
    }
    runs = {
        name: (
            energies[_GenericConv if name == "J-all-generic" else se.energies.ConvEnergy],
            make_strategy(name, args),
        )
        for name in args.strategies
    }

    header = (
        f"conv energy, channels {args.channels} "
        f"({se.kernels.n_params(energies[se.energies.ConvEnergy])} parameters), 8x8 digits "
        f"(batch {args.batch_size}), {args.num_walkers} walkers of which {args.walker_batch} "
        f"move per step, Adam {args.lr:g}"
    )
    return compare(runs, data.samples, optax.adam(args.lr), args, header)


if __name__ == "__main__":
    main()
