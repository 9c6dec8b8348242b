"""Digit proportions: a conv EBM on digits 2, 3, 6 at 4/7, 2/7, 1/7, Jarzynski vs PCD.

The real-data experiment of Carbone, Hua, Coste & Vanden-Eijnden (NeurIPS 2023), Sec. 5.2, on
the 8x8 scikit-learn digits (offline; 309 images) by default, or on MNIST 28x28 from local
files with ``--mnist PATH`` (a GPU is advised there).

Per seed and strategy: ``--steps`` Adam steps with a cosine-decaying learning rate, data
minibatches of ``--batch-size`` and ``--num-walkers`` persistent walkers. Jarzynski's walkers start
from the model, annealed from a standard Gaussian (the confinement term of the energy) in
``--num-anneal`` weighted steps; by default all of them move at every step with MALA (AIS
increments; ``--kernel ula`` for ULA and Jarzynski increments, ``--walker-batch B`` to move only B
per step, Algorithm 2 of the paper) and are resampled (systematic) whenever the ESS falls below
``--ess-threshold``, from the first step on (``--resample-from F``: only from that fraction of the
run on). A run of this setting takes about 2.8x PCD's on a CPU, against about 1x for the paper's
(ULA, 256 of 1024 moved, resampling from mid-run: ``--kernel ula --walker-batch 256 --resample-from
0.5``), which was the default until the family benchmark showed it short of PCD on digits other
than 2, 3, 6 (see docs/digits.md). PCD's walkers are ULA walkers of which
``--baseline-walker-batch`` (a quarter) move per step; they start at the data.
``--feedback-correction local`` removes each walker's first-order influence on its own weight
through Adam's update (off by default: over 20 seeds it put the sixes further from the target, see
docs/digits.md), ``--correction-from`` starts it later in the run and ``--feedback-estimator
exact`` computes it from per-walker gradients instead of a random probe; ``--early-threshold``
resamples below that ESS before ``--resample-from`` too; ``--batch-size 0`` uses all the data every
step; with ``--walker-batch``, Jarzynski's model term of the gradient comes from the moved batch
(``--walker-grad all``: from all walkers); ``--refresh-every K`` replaces random walkers by walkers
annealed afresh from the base every ``K`` steps; ``--observers M`` adds M MALA observers to each
strategy, weighted walkers annealed from the base that follow the parameter path without entering
the gradient, and ``--reseed-every K`` replaces the walkers by draws from them every ``K`` steps
(maths §2.6). ``--strategies Jarzynski PCD Unweighted`` adds walkers that start from the model as
Jarzynski's do (the same annealing, then resampled once) and move without weights. A logistic
regression trained on the digits (its held-out accuracy is printed) labels the final walkers; the
proportions are weighted by the Jarzynski weights (Jarzynski) or uniform (PCD, Unweighted). The
same estimate is also averaged over the records of the last ``--average-last`` of the run (the
learning rate has decayed there, so the model moves little). ``--model-chains K`` also measures the
trained model itself, independently of the walkers' weights: ``se.diagnose`` runs one MALA chain
per walker for ``K`` steps on the frozen final energy, started at the final walkers resampled by
weight, and the unweighted proportions of the chains' second half are reported (with their R-hat
and acceptance). ``--save-models`` keeps each run's trained energy and final walkers for later
measurements. ``--model-ais K`` measures the model's class masses without its walkers
(``se.metrics.class_masses``: walkers annealed from a Gaussian on each class's data to the frozen
energy in ``K`` MALA steps, weighted).

Prints, as mean ± sd over seeds, each digit's proportion and relative error against the
target; per seed of PCD and Unweighted, the fraction of walkers whose digit at the end differs
from their digit at the start and at mid-run (how far the walkers travel between digits); and
saves into ``--out-dir``: the walkers of the first Jarzynski seed ordered by weight
(``walkers_by_weight.png``), the first seed's walkers of the others (``walkers_pcd.png``,
``walkers_unweighted.png``), the ESS curves (``ess.png``) and a JSON of every number.

Default (10 minutes on the 2-core CPU with nothing else running, more on a slower day; 6 runs of
2000 steps)::

    python examples/digits_proportions.py

MNIST (28x28) on a GPU, with the IDX files (or mnist.npz) in ~/data/mnist::

    python examples/digits_proportions.py --mnist ~/data/mnist --channels 16 32 64 \\
        --num-walkers 1024 --steps 20000 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import smc_ebm as se
from smc_ebm.recipes import output_dir

TARGETS = (4, 2, 1)
RECORD_EVERY = 10  # steps between the records of a run (its curves and averages)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--mnist", type=Path, default=None, help="MNIST IDX folder or .npz (28x28)")
    p.add_argument("--labels", type=int, nargs="+", default=[2, 3, 6])
    p.add_argument("--weights", type=float, nargs="+", default=list(TARGETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed+seeds-1"
    )
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps per run")
    p.add_argument("--num-walkers", type=int, default=1024)
    p.add_argument(
        "--walker-batch",
        type=int,
        default=None,
        help="Jarzynski's walkers moved per step (default: all of them, Algorithm 1)",
    )
    p.add_argument(
        "--baseline-walker-batch",
        type=int,
        default=None,
        help="PCD's and Unweighted's walkers moved per step (default: a quarter of "
        "--num-walkers, Algorithm 2 of the paper)",
    )
    p.add_argument(
        "--walker-grad",
        choices=("batch", "all"),
        default="batch",
        help="Jarzynski's model term of the gradient: from the moved batch (self-normalised "
        "weights) or from all walkers (one more backward pass over all of them per step)",
    )
    p.add_argument("--step-size", type=float, default=0.01, help="Langevin step h")
    p.add_argument(
        "--kernel",
        choices=("ula", "mala"),
        default="mala",
        help="Jarzynski's move (with MALA its increment is the AIS one: no discretisation term)",
    )
    p.add_argument(
        "--moves-per-step",
        type=int,
        default=1,
        help="Jarzynski with MALA: this many MALA steps per optimizer step, one move "
        "(se.kernels.Repeated; AIS increments stay exact, at this many energy and gradient "
        "evaluations per walker)",
    )
    p.add_argument(
        "--adapt-step",
        type=float,
        default=0.0,
        help="Jarzynski with MALA: adapt the step to this mean acceptance, starting from "
        "--step-size (se.strategies.with_step_adaptation; 0: a fixed step)",
    )
    p.add_argument(
        "--lazy-target",
        type=float,
        default=0.0,
        help="Jarzynski: walkers whose target jumps to the parameters only when 256 data "
        "points reweighted to them keep less than this ESS (se.strategies.with_lazy_target; "
        "0: the target follows every step, Algorithm 1)",
    )
    p.add_argument(
        "--baseline-kernel",
        choices=("ula", "mala"),
        default="ula",
        help="the move of PCD's and Unweighted's walkers",
    )
    p.add_argument(
        "--feedback-correction",
        choices=("off", "local"),
        default="off",
        help="Jarzynski: remove the walkers' first-order self-influence through Adam's update "
        "(feedback_correction='local'), or not",
    )
    p.add_argument(
        "--correction-from",
        type=float,
        default=0.0,
        help="Jarzynski: apply the feedback correction from this fraction of the run on",
    )
    p.add_argument(
        "--feedback-estimator",
        choices=("probe", "exact"),
        default="probe",
        help="Jarzynski: the correction from one random probe (JVP) or from each walker's own "
        "parameter gradient",
    )
    p.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="Adam, or plain SGD (an update linear in the gradient, so that "
        "--feedback-correction local is exact to first order)",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    p.add_argument("--lr-final", type=float, default=0.1, help="final lr as a fraction")
    p.add_argument(
        "--adam-b1",
        type=float,
        default=0.9,
        help="Adam's b1, the decay of its first moment (0: no momentum, so a walker's term of "
        "the gradient moves the parameters at its own step only)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="steps of linear learning-rate warm-up from 0 before the cosine decay",
    )
    p.add_argument(
        "--batch-size", type=int, default=128, help="data minibatch (0: all the data every step)"
    )
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--confinement", type=float, default=1.0)
    p.add_argument("--l2-penalty", type=float, default=0.0, help="energy penalty lambda")
    p.add_argument(
        "--data-copies",
        type=int,
        default=1,
        help="train on this many dequantisations of each image (data augmentation: fresh "
        "uniform noise within each grey level per copy; 1: the images as drawn)",
    )
    p.add_argument("--num-anneal", type=int, default=100, help="annealing steps (Jarzynski)")
    p.add_argument(
        "--refresh-every",
        type=int,
        default=0,
        help="Jarzynski: every this many steps, replace --num-refresh random walkers by walkers "
        "annealed afresh from the base to the current model (0: never)",
    )
    p.add_argument("--num-refresh", type=int, default=None, help="default: num-walkers // 16")
    p.add_argument(
        "--observers",
        type=int,
        default=0,
        help="add this many MALA observers to each strategy: weighted walkers, annealed from "
        "the base, that follow the parameter path without entering the gradient "
        "(se.strategies.with_observers; they resample below --ess-threshold from the first "
        "step; 0: none)",
    )
    p.add_argument(
        "--reseed-every",
        type=int,
        default=0,
        help="with --observers: every this many steps replace the walkers by draws from the "
        "observers (0: never)",
    )
    p.add_argument("--refresh-steps", type=int, default=None, help="annealing steps of a refresh")
    p.add_argument(
        "--resample-from",
        type=float,
        default=0.0,
        help="Jarzynski: ESS resampling from this fraction of the run on",
    )
    p.add_argument("--ess-threshold", type=float, default=0.5)
    p.add_argument(
        "--early-threshold",
        type=float,
        default=0.0,
        help="ESS threshold before --resample-from (0: no resampling there)",
    )
    p.add_argument(
        "--average-last",
        type=float,
        default=0.25,
        help="also average the (weighted) proportions over the records of this last fraction "
        "of the run (0: the final walkers only)",
    )
    p.add_argument(
        "--model-chains",
        type=int,
        default=0,
        help="also measure the trained model itself: this many MALA steps on the frozen final "
        "energy from the final walkers (resampled by weight), one chain per walker (0: off)",
    )
    p.add_argument(
        "--model-ais",
        type=int,
        default=0,
        help="also measure the trained model's own class masses: anneal --model-ais-walkers "
        "walkers from each class's data Gaussian to the model in this many MALA steps "
        "(se.metrics.class_masses; 0: off)",
    )
    p.add_argument(
        "--model-ais-walkers",
        type=int,
        default=None,
        help="walkers per class for --model-ais (default: --num-walkers)",
    )
    p.add_argument(
        "--model-ais-within",
        action="store_true",
        help="with --model-ais: anneal inside each class's region, moves out rejected "
        "(se.metrics.class_masses(within=True))",
    )
    p.add_argument(
        "--save-models",
        action="store_true",
        help="save each run's trained energy (energy_<strategy>_<seed>.eqx, equinox leaves) "
        "and final walkers (walkers_<strategy>_<seed>.npz) into --out-dir",
    )
    p.add_argument(
        "--strategies", nargs="+", choices=("Jarzynski", "PCD", "Unweighted"), default=None
    )
    p.add_argument("--out-dir", type=Path, default=Path("outputs/digits_proportions"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.strategies = args.strategies or ["Jarzynski", "PCD"]
    if len(args.weights) != len(args.labels):
        p.error("--weights needs one value per label")
    if not 0.0 <= args.adam_b1 < 1.0:
        p.error(f"--adam-b1 must be in [0, 1); got {args.adam_b1}")
    if args.optimizer == "sgd" and args.adam_b1 != p.get_default("adam_b1"):
        p.error("--adam-b1 sets Adam's momentum; --optimizer sgd has none")
    if not 0.0 <= args.average_last <= 1.0:
        p.error(f"--average-last must be in [0, 1]; got {args.average_last}")
    if args.moves_per_step < 1:
        p.error(f"--moves-per-step must be at least 1; got {args.moves_per_step}")
    if args.moves_per_step > 1 and args.kernel != "mala":
        p.error("--moves-per-step > 1 needs --kernel mala")
    if args.reseed_every and not args.observers:
        p.error("--reseed-every needs --observers to reseed from")
    if args.model_ais_walkers is not None and args.model_ais_walkers < 2:
        p.error(f"--model-ais-walkers must be at least 2; got {args.model_ais_walkers}")
    return args


def load(args: argparse.Namespace, key) -> tuple[se.datasets.Dataset, se.metrics.DigitClassifier]:
    k_data, k_clf = jax.random.split(key)
    if args.mnist is None:
        data = se.datasets.digits(k_data, args.labels, args.weights)
        clf = se.metrics.digit_classifier(k_clf, args.labels)
    else:
        data = se.datasets.mnist(args.mnist, key=k_data, labels=args.labels, weights=args.weights)

        def loader(key, labels, weights):
            return se.datasets.mnist(args.mnist, key=key, labels=labels, weights=weights)

        clf = se.metrics.digit_classifier(k_clf, args.labels, loader=loader)
    if args.data_copies > 1:
        data = dequantised_copies(data, args.data_copies, k_data, args)
    return data, clf


def dequantised_copies(data, copies: int, key, args) -> se.datasets.Dataset:
    """The drawn images, then ``copies - 1`` more dequantisations of each (same images, fresh
    uniform noise within each grey level); the class proportions are unchanged."""
    if args.mnist is None:
        centres = se.datasets.digits(key, args.labels, args.weights, dequantise=False)
        levels = 17
    else:
        centres = se.datasets.mnist(
            args.mnist, key=key, labels=args.labels, weights=args.weights, dequantise=False
        )
        levels = 256
    # fold_in(key, 2): the dataset's own noise is drawn from split(key)[1], which is
    # fold_in(key, 1) with jax's partitionable threefry (the first copy would repeat it).
    u = jax.random.uniform(
        jax.random.fold_in(key, 2), (copies - 1, *centres.samples.shape), jnp.float32
    )
    extra = centres.samples + 2.0 * (u - 0.5) / levels
    samples = jnp.concatenate([data.samples, extra.reshape(-1, data.samples.shape[1])])
    info = dict(data.info, labels=np.tile(np.asarray(data.info["labels"]), copies))
    return se.datasets.Dataset(samples=samples, info=info)


def make_strategy(name: str, args: argparse.Namespace, dim: int):
    h, n = args.step_size, args.num_walkers
    base = se.energies.Gaussian.standard(dim)  # the confinement term's Gaussian
    if name in ("PCD", "Unweighted"):
        # PCD's walkers start at the data; its annealing settings start its observers only.
        cls = se.PCD if name == "PCD" else se.Unweighted
        strategy = cls(
            n,
            h,
            kernel=args.baseline_kernel,
            walker_batch=args.baseline_walker_batch or max(1, n // 4),
            num_anneal=args.num_anneal,
            anneal_base=base,
        )
        return with_observers(strategy, args)
    start = int(args.resample_from * args.steps)
    kernel = args.kernel
    if args.moves_per_step > 1:
        kernel = se.kernels.Repeated(se.kernels.MALA(h), args.moves_per_step)
    strategy = se.Jarzynski(
        n,
        h,
        kernel=kernel,
        walker_batch=args.walker_batch,
        walker_grad=args.walker_grad,
        resampling=se.ESSResampling(
            se.off_until(start, args.ess_threshold, before=args.early_threshold)
        ),
        num_anneal=args.num_anneal,
        anneal_base=base,
        feedback_correction="local" if args.feedback_correction == "local" else False,
        feedback_correction_from=int(args.correction_from * args.steps),
        feedback_estimator=args.feedback_estimator,
        refresh_every=args.refresh_every,
        num_refresh=args.num_refresh,
        refresh_steps=args.refresh_steps,
    )
    if args.adapt_step:
        strategy = se.strategies.with_step_adaptation(strategy, args.adapt_step)
    if args.lazy_target:
        strategy = se.strategies.with_lazy_target(strategy, args.lazy_target)
    return with_observers(strategy, args)


def with_observers(strategy, args: argparse.Namespace):
    """``strategy`` with ``--observers`` MALA observers (resampling from the first step)."""
    if not args.observers:
        return strategy
    return se.strategies.with_observers(
        strategy,
        args.observers,
        reseed_every=args.reseed_every,
        resampling=se.ESSResampling(args.ess_threshold),
    )


def initial(seed: int, args, side: int):
    """The untrained energy, the optimizer and the key of ``fit`` for ``seed``."""
    key = jax.random.key(1000 + seed)
    k_energy, k_fit = jax.random.split(key)
    energy = se.energies.ConvEnergy(
        side,
        key=k_energy,
        channels=args.channels,
        confinement=args.confinement,
        l2_penalty=args.l2_penalty,
    )
    if args.warmup > 0:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, args.lr, args.warmup, args.steps, end_value=args.lr * args.lr_final
        )
    else:
        schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=args.lr_final)
    if args.optimizer == "sgd":
        return energy, optax.sgd(schedule), k_fit
    return energy, optax.adam(schedule, b1=args.adam_b1), k_fit


def run(name: str, seed: int, args, data, side: int) -> dict:
    energy, optimizer, k_fit = initial(seed, args, side)
    with jax.numpy_dtype_promotion("standard"):
        result = se.fit(
            energy,
            data.samples,
            strategy=make_strategy(name, args, side * side),
            optimizer=optimizer,
            num_steps=args.steps,
            key=k_fit,
            batch_size=args.batch_size or None,
            record_every=RECORD_EVERY,
            progress=not args.no_progress,
            trace_walkers=args.num_walkers if args.average_last > 0 else 0,
        )
    if result.interrupted:  # Ctrl-C or SIGTERM: stop here, keeping the seeds finished before
        raise SystemExit(f"{name} seed {seed} interrupted at step {result.steps}; stopped.")
    return {"result": result, "wall": result.wall_time}


def averaged_proportions(clf, traces: dict, name: str, args: argparse.Namespace) -> np.ndarray:
    """Mean over the records of the last ``args.average_last`` of the run of each record's
    proportions (weighted by ``softmax`` of that record's log-weights for Jarzynski).

    Late in the run the learning rate has decayed and the model moves little, so every record
    estimates nearly the same proportions; their mean has a smaller variance than one snapshot's.
    """
    steps = np.asarray(traces["step"])
    keep = steps >= (1.0 - args.average_last) * args.steps
    if not keep.any():
        print(
            f"  no record (one every {RECORD_EVERY} steps) in the last {args.average_last:.0%} of "
            f"{args.steps} steps: the average is nan; use more steps or a larger --average-last"
        )
        return np.full(len(args.labels), np.nan)
    pos = np.asarray(traces["position"])[keep]
    logw = np.asarray(traces["log_weights"])[keep]
    weighted = name == "Jarzynski"
    per_record = [
        clf.proportions(x, a if weighted else None) for x, a in zip(pos, logw, strict=True)
    ]
    return np.mean(per_record, axis=0)


def model_proportions(clf, result, seed: int, args: argparse.Namespace) -> dict:
    """The proportions of the trained model, from MALA chains on its frozen final energy.

    ``se.diagnose`` starts ``num_walkers`` chains at the final walkers resampled by weight and
    runs ``args.model_chains`` MALA steps at the training step size (MALA leaves
    :math:`e^{-U}` invariant: no discretisation bias), recorded 20 times. The proportions of
    each record are unweighted; the estimate is their mean over the second half of the
    records, and the curve over all records shows whether the chains have stopped drifting.
    It measures what the model generates only if the chains mix between the digits: on the
    8x8 digits models, 1000 steps at h = 0.01 do not (R-hat 1.9, proportions still drifting);
    ``--model-ais`` needs no such mixing.
    """
    thin = max(1, args.model_chains // 20)
    diag = se.diagnose(
        result,
        key=jax.random.key(5000 + seed),
        num_chains=args.num_walkers,
        num_steps=thin * max(4, args.model_chains // thin),
        kernel="mala",
        step_size=args.step_size,
        thin=thin,
        progress=not args.no_progress,
    )
    x = np.asarray(diag.idata["posterior"]["x"])  # (chain, draw, d)
    curve = np.stack([clf.proportions(x[:, j]) for j in range(x.shape[1])])
    return {
        "proportions": curve[curve.shape[0] // 2 :].mean(axis=0),
        "curve": curve,
        "max_rhat": diag.max_rhat,
        "acceptance": diag.acceptance,
    }


def model_masses(clf, energy, data, seed: int, args: argparse.Namespace) -> dict:
    """The trained model's class proportions by annealed importance sampling per class.

    ``se.metrics.class_masses``: ``--model-ais-walkers`` walkers per class (``--num-walkers``
    unless given), in 8 independent runs, inside each class's region with
    ``--model-ais-within``
    (fewer for fewer than 16 walkers), annealed from the moment-matched Gaussian of that
    class's data to the frozen energy in ``args.model_ais`` MALA steps. Also the data's mean
    energy per class, to compare with the mean energy of the mass that the annealing finds.
    """
    n = args.model_ais_walkers or args.num_walkers
    res = se.metrics.class_masses(
        energy,
        data.samples,
        data.info["labels"],
        clf,
        key=jax.random.key(6000 + seed),
        num_walkers=n,
        num_steps=args.model_ais,
        step_size=args.step_size,
        num_runs=max(2, min(8, n // 2)),
        within=args.model_ais_within,
        progress=not args.no_progress,
    )
    u = np.asarray(jax.vmap(energy)(data.samples))
    y = np.asarray(data.info["labels"])
    return {
        "proportions": res.proportions,
        "standard_errors": res.standard_errors,
        "log_Z": res.log_Z.tolist(),
        "arrival": res.arrival.tolist(),
        "ess": res.ess.tolist(),
        "mean_energy": res.mean_energy.tolist(),
        "data_mean_energy": [float(u[y == c].mean()) for c in res.classes],
    }


def wrapped_state(state, cls):
    """The state of class ``cls`` inside ``state`` (e.g. inside the observers' state)."""
    while not isinstance(state, cls):
        state = state.walkers
    return state


def lazy_jumps(state) -> int:
    """How often the lazy target jumped (``--lazy-target``)."""
    return int(wrapped_state(state, se.strategies.LazyTargetState).retargets)


def final_step_size(state) -> float:
    """The adapted step of Jarzynski's walkers (``--adapt-step``)."""
    return float(wrapped_state(state, se.strategies.AdaptedState).step_size)


def digit_changes(clf, traces: dict) -> dict:
    """How much walkers travel between digits, for walkers that keep their slot (no resampling).

    From the predicted digit of each walker at every record: the fraction of walkers whose
    digit at the last record differs from the first record's, from the middle record's, and
    the fraction that changed digit between some two consecutive records.
    """
    pos = np.asarray(traces["position"])
    n_rec, n, d = pos.shape
    lab = clf.predict(pos.reshape(-1, d)).reshape(n_rec, n)
    return {
        "first_vs_last": float(np.mean(lab[-1] != lab[0])),
        "middle_vs_last": float(np.mean(lab[-1] != lab[n_rec // 2])),
        "ever": float(np.mean(np.any(lab[1:] != lab[:-1], axis=0))),
    }


def save_grid(path: Path, images: np.ndarray, side: int, title: str, cols: int = 16) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.6 + 0.4))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, img in zip(np.ravel(axes), images, strict=False):
        ax.imshow(np.clip(img.reshape(side, side), -1, 1), cmap="gray", vmin=-1, vmax=1)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def save_ess(path: Path, histories: list[dict], start: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for i, h in enumerate(histories):
        ax.plot(h["step"], h["ess"], lw=1, label=f"seed {i}")
    ax.axvline(start, color="k", ls=":", lw=1, label="resampling on")
    ax.set(xlabel="step", ylabel="ESS / N", yscale="log", title="Jarzynski walkers: ESS")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def summary(props, avg, walls, ess_final, moves, histories, target, model, masses, observed):
    """The JSON record of one strategy's seeds (ESS curves: every record, ESS / N)."""
    props = np.asarray(props)
    return {
        "observer_proportions": [o.tolist() for o in observed],
        "ais_proportions": [m["proportions"].tolist() for m in masses],
        "ais": [{k: np.asarray(v).tolist() for k, v in m.items()} for m in masses],
        "model_proportions": [m["proportions"].tolist() for m in model],
        "model_curves": [m["curve"].round(4).tolist() for m in model],
        "model_max_rhat": [m["max_rhat"] for m in model],
        "model_acceptance": [m["acceptance"] for m in model],
        "proportions": props.tolist(),
        "averaged_proportions": np.asarray(avg).tolist(),
        "relative_error": (np.abs(props - target) / target).tolist(),
        "relative_error_of_mean": (np.abs(props.mean(0) - target) / target).tolist(),
        "wall_s": walls,
        "final_ess": ess_final,
        "digit_changes": moves,
        "ess_step": np.asarray(histories[0]["step"]).tolist(),
        "ess_curves": [np.asarray(h["ess"]).round(5).tolist() for h in histories],
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    data, clf = load(args, jax.random.key(0))
    side = int(data.info["shape"][0])
    labels = list(args.labels)
    target = np.asarray(args.weights) / np.sum(args.weights)
    print(
        f"data: {data.info['name']} {side}x{side}, {data.samples.shape[0]} images, proportions "
        f"{[round(data.info['proportions'][c], 3) for c in labels]} (target {target.round(3)})"
    )
    print(
        f"classifier: logistic regression, held-out accuracy {clf.test_accuracy:.4f} "
        f"({clf.num_test} test images)"
    )
    output_dir(args.out_dir)
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "target": target.tolist()}
    ais_label = "within each class" if args.model_ais_within else "per class"
    out["classifier_accuracy"] = clf.test_accuracy
    for name in args.strategies:
        props, walls, histories, ess_final, avg, moves, model, masses, observed = (
            [] for _ in range(9)
        )
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r = run(name, seed, args, data, side)
            res = r["result"]
            if args.save_models:
                tag = f"{name.lower()}_{seed}"
                eqx.tree_serialise_leaves(args.out_dir / f"energy_{tag}.eqx", res.energy)
                np.savez(
                    args.out_dir / f"walkers_{tag}.npz",
                    position=np.asarray(res.walkers),
                    log_weights=np.asarray(res.log_weights),
                )
            log_w = res.log_weights if name == "Jarzynski" else None
            props.append(clf.proportions(res.walkers, log_w))
            if args.average_last > 0:
                avg.append(averaged_proportions(clf, res.traces, name, args))
            walls.append(r["wall"])
            histories.append(res.history)
            ess_final.append(se.metrics.effective_sample_size(res.log_weights))
            extra = f", averaged {np.round(avg[-1], 3)}" if avg else ""
            if args.model_chains > 0:
                model.append(model_proportions(clf, res, seed, args))
                extra += (
                    f", model (MALA chains) {np.round(model[-1]['proportions'], 3)}"
                    f" (max R-hat {model[-1]['max_rhat']:.2f},"
                    f" acceptance {model[-1]['acceptance']:.2f})"
                )
            if args.observers:
                obs = res.state.observers
                observed.append(clf.proportions(obs.position, obs.log_weights))
                extra += f", model (observers) {np.round(observed[-1], 3)}"
            if args.model_ais > 0:
                masses.append(model_masses(clf, res.energy, data, seed, args))
                extra += (
                    f", model (AIS {ais_label}) {np.round(masses[-1]['proportions'], 3)}"
                    f" ± {np.round(masses[-1]['standard_errors'], 3)}"
                )
            if res.strategy.kernel != "ula":  # "mala" or Repeated MALA steps
                extra += f", MALA acceptance {np.nanmean(res.history['acceptance']):.3f}"
                if args.adapt_step and name == "Jarzynski":
                    extra += f", final step {final_step_size(res.state):.2g}"
            if args.lazy_target and name == "Jarzynski":
                extra += f", target jumps {lazy_jumps(res.state)}"
            if res.traces is not None and name != "Jarzynski":  # resampling reuses slots
                moves.append(digit_changes(clf, res.traces))
                extra += (
                    f", walkers in another digit than at the start {moves[-1]['first_vs_last']:.0%}"
                    f" (than at mid-run {moves[-1]['middle_vs_last']:.0%})"
                )
            print(
                f"  {name} seed {seed}: proportions {np.round(props[-1], 3)}{extra}, "
                f"ESS {ess_final[-1]:.0f}/{args.num_walkers}, {r['wall']:.0f} s",
                flush=True,
            )
            if seed == args.first_seed:
                x = np.asarray(res.walkers)
                if name == "Jarzynski":
                    order = np.argsort(-np.asarray(res.log_weights))
                    show = np.concatenate([x[order[:32]], x[order[-32:]]])
                    save_grid(
                        args.out_dir / "walkers_by_weight.png",
                        show,
                        side,
                        "Jarzynski walkers: 32 heaviest (top two rows), 32 lightest (bottom)",
                    )
                else:
                    path = args.out_dir / f"walkers_{name.lower()}.png"
                    save_grid(path, x[:64], side, f"{name} walkers")
            # Written after every seed, so that an interrupted run keeps the seeds it finished.
            out[name] = summary(
                props, avg, walls, ess_final, moves, histories, target, model, masses, observed
            )
            (args.out_dir / "numbers.json").write_text(json.dumps(out, indent=1))
        if name == "Jarzynski":
            save_ess(args.out_dir / "ess.png", histories, int(args.resample_from * args.steps))
    print(f"\nproportions over {args.seeds} seeds (mean ± sd); relative error |p - p*| / p*")
    print(
        "| strategy | "
        + " | ".join(f"digit {c} ({t:.3f})" for c, t in zip(labels, target, strict=True))
    )
    rows = [(name, np.asarray(out[name]["proportions"])) for name in args.strategies]
    if args.average_last > 0:
        rows += [
            (
                f"{name}, mean of the last {args.average_last:.0%}",
                np.asarray(out[name]["averaged_proportions"]),
            )
            for name in args.strategies
        ]
    if args.model_ais > 0:
        rows += [
            (f"{name}, the model (AIS {ais_label})", np.asarray(out[name]["ais_proportions"]))
            for name in args.strategies
        ]
    if args.observers:
        rows += [
            (f"{name}, the model (observers)", np.asarray(out[name]["observer_proportions"]))
            for name in args.strategies
        ]
    if args.model_chains > 0:
        rows += [
            (f"{name}, the model (MALA chains)", np.asarray(out[name]["model_proportions"]))
            for name in args.strategies
        ]
    for name, props in rows:
        rel = np.abs(props - target) / target
        cells = [
            f"{props[:, j].mean():.3f} ± {props[:, j].std(ddof=1) if len(props) > 1 else 0:.3f}"
            f" (rel. err. {rel[:, j].mean():.0%} ± {rel[:, j].std():.0%})"
            for j in range(len(labels))
        ]
        print(f"| {name} | " + " | ".join(cells))
    total = time.perf_counter() - t0
    out["total_wall_s"] = total
    print(f"\ntotal wall time {total:.0f} s; figures and numbers in {args.out_dir}")
    (args.out_dir / "numbers.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
