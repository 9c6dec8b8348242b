"""Mode weights of a model whose walkers cannot cross between its modes, against exact answers.

The digits models of docs/digits.md put mass on the digits in other proportions than their
walkers report. Here the same situation has a closed form: the energy is a Gaussian mixture
(``se.energies.GaussianMixture``, trained means and logits, unit scale), whose mode weights are
``softmax(logits)`` exactly, and the modes are so far apart (11.3 standard deviations; beyond
the half-gap a Gaussian puts 8e-9 of its mass) that no MALA walker crosses between them in a
run, as no walker crosses between the digits. Every walker stays in the mode it starts in, and
what the model learns about the weights comes through the walkers' Jarzynski weights only.

Case ``i`` is drawn with ``numpy.random.default_rng(3000 + i)`` (a fixed seed list): 3 to 5
modes in dimension 8, weights from a flat Dirichlet redrawn until every weight lies in
[0.05, 0.5], centres at 8 times orthonormal random directions, 4000 draws of the mixture. The
initial model has equal logits and the centres moved by N(0, 0.3^2) per coordinate; its walkers
start as its exact samples. Training: Jarzynski with MALA moves at step ``--step-size``, every
walker moved every step (``--moves`` MALA steps a move, ``se.kernels.Repeated``), systematic
resampling below an ESS of ``--ess-threshold`` from the first step (the digits example's
default), Adam with a cosine decay from ``--lr`` to a tenth of it, batch 128, ``--steps`` steps.

``--lazy-target C`` wraps the walkers in ``se.strategies.with_lazy_target`` (threshold ``C``:
the target jumps to the parameters when 256 data probes reweighted to them keep less than ``C``
of their ESS; docs/maths.md §2.8). ``--stratified-start`` starts the walkers with equal counts
per mode (walker ``i`` in mode ``i mod K``, its offset a standard normal draw) instead of a
multinomial draw of the modes: the equal-weight initial model's modes in their proportions (to
one walker when K does not divide N), without the multinomial count error of about
``sqrt(K / N)`` relative, which no walker can later undo.

The target of each mode is its share of the 4000 draws (the model fits the data it is given).
A plain reference shares no code with the walkers: the same optimizer on the exact gradient of
the cross-entropy, mean_batch U + log Z with the closed-form log Z of the mixture (the row
"exact gradient"); its error is what the data minibatches and the optimizer leave, without
walkers. Per setting it prints, over the runs: the mean relative error |p - p*| / p* of the
trained model's weights (mean over modes, then over runs, with the sd over runs) and of the
final walkers' weighted shares (nearest centre); the same for the lightest mode; and the mean
and sd of log(p / p*) of the lightest mode (its sign says whether the model under- or
over-weights it). The JSON (``--out``) is rewritten atomically after every case.

    python benchmarks/separated_modes.py                      # 10 cases, the default settings
    python benchmarks/separated_modes.py --seed 1             # another training seed
    python benchmarks/separated_modes.py --combine a.json b.json   # one table of earlier runs
    python benchmarks/separated_modes.py --cases 2 --steps 300 --walkers 256 --moves  # smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import smc_ebm as se
from smc_ebm.recipes import write_json

DIM, SEP, N_DATA, BATCH, NOISE = 8, 8.0, 4000, 128, 0.3
WEIGHT_RANGE = (0.05, 0.5)


def case(i: int):
    """Centres ``(K, DIM)``, the initial centres, the data ``(N_DATA, DIM)``, its mode shares."""
    rng = np.random.default_rng(3000 + i)
    k = int(rng.integers(3, 6))
    w = rng.dirichlet(np.ones(k))
    while w.min() < WEIGHT_RANGE[0] or w.max() > WEIGHT_RANGE[1]:
        w = rng.dirichlet(np.ones(k))
    q, _ = np.linalg.qr(rng.standard_normal((DIM, k)))
    centres = SEP * q.T
    labels = rng.choice(k, N_DATA, p=w)
    data = centres[labels] + rng.standard_normal((N_DATA, DIM))
    start = centres + NOISE * rng.standard_normal(centres.shape)
    return centres, start, data, np.bincount(labels, minlength=k) / N_DATA


def initial(start):
    return se.energies.GaussianMixture(
        means=jnp.asarray(start, jnp.float32), logits=jnp.zeros(len(start)), sigma=1.0
    )


def optimizer(args):
    return optax.adam(optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.1))


def walkers_run(centres, start, data, num_walkers, moves, args):
    """The trained model's weights and the final walkers' weighted shares (nearest centre)."""
    kernel = se.kernels.Repeated(se.kernels.MALA(args.step_size), moves) if moves > 1 else "mala"
    init = "model"
    if args.stratified_start:  # exact samples of the initial model, equal counts per mode
        k = len(start)
        noise = jax.random.normal(jax.random.key(args.seed + 7), (num_walkers, start.shape[1]))
        init = jnp.asarray(start, jnp.float32)[jnp.arange(num_walkers) % k] + noise
    strategy = se.Jarzynski(
        num_walkers,
        args.step_size,
        kernel=kernel,
        resampling=se.ESSResampling(args.ess_threshold),
        init=init,
        feedback_correction="local" if args.feedback_correction == "local" else False,
    )
    if args.lazy_target is not None:
        strategy = se.strategies.with_lazy_target(strategy, args.lazy_target)
    result = se.fit(
        initial(start),
        jnp.asarray(data, jnp.float32),
        strategy=strategy,
        optimizer=optimizer(args),
        num_steps=args.steps,
        key=jax.random.key(args.seed),
        batch_size=BATCH,
        record_every=args.steps,
        progress=False,
    )
    x, log_w = strategy.walkers(result.state)
    shares = se.metrics.mode_weights_samples(x, centres, log_w)
    return np.asarray(result.energy.weights), np.asarray(shares)


def exact_run(start, data, args):
    """The model's weights after the same optimizer on the exact gradient: no walkers.

    The mixture's log Z is ``logsumexp(logits)`` plus a constant, so the cross-entropy of a
    minibatch is ``mean_batch U + logsumexp(logits)`` up to that constant.
    """
    data = jnp.asarray(data, jnp.float32)
    opt = optimizer(args)

    def loss(energy, batch):
        return jnp.mean(jax.vmap(energy)(batch)) + jax.nn.logsumexp(energy.logits)

    def step(carry, key):
        energy, state = carry
        batch = data[jax.random.choice(key, data.shape[0], (BATCH,))]
        updates, state = opt.update(jax.grad(loss)(energy, batch), state, energy)
        return (optax.apply_updates(energy, updates), state), None

    energy = initial(start)
    keys = jax.random.split(jax.random.key(args.seed), args.steps)
    run = jax.jit(lambda c: jax.lax.scan(step, c, keys))
    (energy, _), _ = run((energy, opt.init(energy)))
    return np.asarray(energy.weights)


def settings(args):
    out = [(f"walkers {n}, moves 1", n, 1) for n in args.walkers]
    n = args.moves_walkers
    return out + [(f"walkers {n}, moves {m}", n, m) for m in args.moves if m > 1]


def summary(rows: list[dict]) -> dict:
    """Per setting: the model's and the walkers' relative errors, mean (and sd) over the runs."""
    out = {}
    light = [int(np.argmin(r["target"])) for r in rows]
    for name in rows[0]["model"]:
        model = np.array([np.mean(r["model_rel"][name]) for r in rows])
        log_ratio = np.array([r["model_log_ratio_lightest"][name] for r in rows])
        s = {
            "model": float(model.mean()),
            "model_sd": float(model.std()),
            "model_lightest": float(
                np.mean([r["model_rel"][name][j] for r, j in zip(rows, light, strict=True)])
            ),
            "log_ratio_lightest": float(log_ratio.mean()),
            "log_ratio_lightest_sd": float(log_ratio.std()),
        }
        if name in rows[0]["walkers_rel"]:
            s["walkers"] = float(np.mean([np.mean(r["walkers_rel"][name]) for r in rows]))
            s["walkers_lightest"] = float(
                np.mean([r["walkers_rel"][name][j] for r, j in zip(rows, light, strict=True)])
            )
        out[name] = s
    return out


def print_summary(summ: dict, runs: int) -> None:
    print(f"\nrelative error |p - p*| / p*, mean over {runs} runs (cases x training seeds)")
    print("| setting | model | model, lightest mode | log(p/p*), lightest | walkers | lightest |")
    print("|---|---|---|---|---|---|")
    for name, s in summ.items():
        walkers = f"{s['walkers']:.1%} | {s['walkers_lightest']:.1%}" if "walkers" in s else "- | -"
        print(
            f"| {name} | {s['model']:.1%} ± {s['model_sd']:.1%} | {s['model_lightest']:.1%} | "
            f"{s['log_ratio_lightest']:+.3f} ± {s['log_ratio_lightest_sd']:.3f} | {walkers} |"
        )


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cases", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--walkers", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--moves", type=int, nargs="*", default=[4], help="MALA steps a move (> 1)")
    p.add_argument("--moves-walkers", type=int, default=1024, help="the walker count of --moves")
    p.add_argument("--step-size", type=float, default=0.3, help="MALA's step")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam's initial learning rate")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--ess-threshold", type=float, default=0.5, help="resample below this ESS")
    p.add_argument(
        "--feedback-correction",
        choices=("off", "local"),
        default="off",
        help="local: remove each walker's first-order influence on its own weight",
    )
    p.add_argument(
        "--lazy-target",
        type=float,
        default=None,
        help="wrap the walkers in se.strategies.with_lazy_target with this threshold",
    )
    p.add_argument(
        "--stratified-start",
        action="store_true",
        help="start the walkers with equal counts per mode instead of a multinomial draw",
    )
    p.add_argument("--out", default=None)
    p.add_argument("--combine", nargs="+", default=None, help="pool the runs of these JSONs")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    # optax's schedules mix their integer step count with floats
    with jax.numpy_dtype_promotion("standard"):
        return run_all(parse_args(argv))


def run_all(args) -> dict:
    if args.combine:
        rows = [r for f in args.combine for r in json.loads(Path(f).read_text())["rows"]]
        summ = summary(rows)
        print_summary(summ, len(rows))
        return summ
    rows, t0 = [], time.time()
    for i in range(args.cases):
        centres, start, data, target = case(i)
        row = {"case": i, "seed": args.seed, "target": target.tolist(), "model": {}}
        row.update(model_rel={}, walkers_rel={}, model_log_ratio_lightest={}, wall_s={})
        light = int(np.argmin(target))
        for name, n, m in settings(args):
            t = time.time()
            model, shares = walkers_run(centres, start, data, n, m, args)
            row["wall_s"][name] = time.time() - t
            row["walkers_rel"][name] = (np.abs(shares - target) / target).tolist()
            row["model"][name] = model.tolist()
        t = time.time()
        row["model"]["exact gradient"] = exact_run(start, data, args).tolist()
        row["wall_s"]["exact gradient"] = time.time() - t
        for name, model in row["model"].items():
            model = np.asarray(model)
            row["model_rel"][name] = (np.abs(model - target) / target).tolist()
            row["model_log_ratio_lightest"][name] = float(np.log(model[light] / target[light]))
        rows.append(row)
        lightest = ", ".join(f"{k} {v[light]:.3f}" for k, v in row["model"].items())
        print(
            f"case {i}: {len(target)} modes, lightest {target[light]:.3f}; the model's lightest: "
            f"{lightest}; {time.time() - t0:.0f} s so far",
            flush=True,
        )
        if args.out:
            write_json(args.out, {"args": vars(args), "complete": False, "rows": rows})
    summ = summary(rows)
    print_summary(summ, len(rows))
    if args.out:
        write_json(args.out, {"args": vars(args), "complete": True, "rows": rows, "summary": summ})
    print(f"\ntotal wall time {time.time() - t0:.0f} s")
    return summ


if __name__ == "__main__":
    main()
