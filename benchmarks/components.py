"""Where the time of one optimizer step goes: the parts of a PCD and a Jarzynski step.

``benchmarks/overhead.py`` times whole training steps. This script times their parts, each
compiled alone and run ``--inner`` times under ``lax.scan`` inside one ``jit`` (the way
``fit`` runs them), on the paper's 50-d two-mode teacher with 10^4 walkers:

* ``noise + move``: one ULA proposal :math:`x' = x - h\\nabla U + \\sqrt{2h}\\,\\xi`, whose
  cost is almost all the N x d Gaussian draws;
* ``data term``: :math:`\\overline{U}` and :math:`\\overline{\\partial_\\theta U}` over the data;
* ``PCD evaluation``: move, then energy, x-gradient and the mean parameter gradient at the
  moved walkers in one backward pass (``kernels.evaluate_uniform``);
* ``Jarzynski evaluation``: move, then energy and x-gradient, the weight increment, the
  softmax of the weights and the *weighted* parameter gradient (``kernels.evaluate``): the
  weights depend on the x-gradients, so the parameter gradient comes from the energy's
  ``evaluate_batch`` (the mixture's responsibilities, an MLP's layer adjoints), per-walker
  gradients or a second backward pass;
* ``increment``: the Jarzynski increment alone, four N x d arrays read once.

Every part's outputs are consumed, so nothing is dead code. Times are the minimum over
``--reps`` calls (other processes only ever add time).

Example::

    python benchmarks/components.py
    python benchmarks/components.py --energy mlp
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp

import smc_ebm as se
from smc_ebm.kernels import evaluate, evaluate_uniform, ula_propose
from smc_ebm.kernels._evaluate import mean_param_grad
from smc_ebm.smc import jarzynski_increment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--energy", choices=("gmm", "mlp"), default="gmm")
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--num-walkers", type=int, default=10_000)
    p.add_argument("--n-data", type=int, default=10_000)
    p.add_argument("--step-size", type=float, default=0.1)
    p.add_argument("--inner", type=int, default=200, help="steps per compiled call")
    p.add_argument("--reps", type=int, default=7)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs")
    print(f"platform {platform.platform()}, python {platform.python_version()}")
    n, d, h = args.num_walkers, args.dim, args.step_size
    teacher = se.datasets.two_mode_teacher(jax.random.key(0), n=args.n_data, dim=d)
    if args.energy == "gmm":
        energy = se.energies.GaussianMixture.init(jax.random.key(1), 2, d, scale=0.01)
    else:
        energy = se.energies.MLP(d, 128, 2, key=jax.random.key(1), confinement=1.0)
    x = teacher.samples[:n] if args.n_data >= n else jax.random.normal(jax.random.key(3), (n, d))
    u, g, _ = evaluate(energy, x)
    a = jnp.zeros(n, x.dtype)

    def move(key, x):
        return ula_propose(key, x, g, h)

    def part_move(key, x):
        return (move(key, x),)

    def part_data(key, x):
        return mean_param_grad(energy, teacher.samples + 0.0 * x[0, 0])

    def part_pcd(key, x):
        return evaluate_uniform(energy, move(key, x))

    def part_jarzynski(key, x):
        x_new = move(key, x)
        u_new, g_new, param_grad = evaluate(energy, x_new)
        a_new = a + jarzynski_increment(x, u, g, x_new, u_new, g_new, h)
        return u_new, g_new, param_grad(jax.nn.softmax(a_new)), a_new

    x_shift = x + 1e-2

    def part_increment(key, x):
        return (jarzynski_increment(x, u, g, x_shift, u, g * (1.0 + x[0, 0] * 0.0), h),)

    parts = {
        "noise + move": part_move,
        "data term": part_data,
        "PCD evaluation (incl. move)": part_pcd,
        "Jarzynski evaluation (incl. move)": part_jarzynski,
        "increment": part_increment,
    }

    def timed_loop(part):
        @jax.jit
        def loop(key, x):
            def body(c, k):
                out = part(k, x + c)
                # Consume every output so that XLA keeps all the work.
                return c + 1e-12 * sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out)), None

            return jax.lax.scan(body, jnp.zeros((), x.dtype), jax.random.split(key, args.inner))[0]

        loop(jax.random.key(0), x).block_until_ready()
        best = float("inf")
        for r in range(args.reps):
            t0 = time.perf_counter()
            loop(jax.random.key(r + 1), x).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        return 1e3 * best / args.inner

    times = {name: timed_loop(part) for name, part in parts.items()}
    print(
        f"\n{args.energy} energy ({se.kernels.n_params(energy)} parameters), d = {d}, "
        f"{n} walkers, {args.n_data} data; ms per step, min over {args.reps} calls of "
        f"{args.inner} steps"
    )
    w = max(map(len, times))
    for name, t in times.items():
        print(f"{name:<{w}} | {t:7.3f}")
    pcd = times["PCD evaluation (incl. move)"] + times["data term"]
    jz = times["Jarzynski evaluation (incl. move)"] + times["data term"]
    print(
        f"\nPCD step parts (evaluation + data term): {pcd:.3f} ms, of which noise + move "
        f"{times['noise + move']:.3f} ms ({100 * times['noise + move'] / pcd:.0f}%)"
        f"\nJarzynski step parts: {jz:.3f} ms; extra over PCD {jz - pcd:.3f} ms "
        f"(increment alone {times['increment']:.3f} ms); ratio of the parts {jz / pcd:.3f}"
    )
    return times


if __name__ == "__main__":
    main()
