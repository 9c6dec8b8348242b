"""The ``smc-ebm`` command line.

Subcommands:
    demo: the two-mode teacher-student comparison of Jarzynski, PCD, CD and unweighted
        walkers (a small version of Carbone et al., 2023, Sec. 5.1), in about two minutes
        on a laptop CPU.
    fit CONFIG: train as a TOML/YAML config says and write a run directory (config,
        history, trained energy, walkers, diagnostics, figures, checkpoint).
    fit --resume RUN_DIR: continue an interrupted or killed run from its checkpoint.
    report RUN_DIR: write a self-contained HTML report of a run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``smc-ebm``."""
    parser = argparse.ArgumentParser(
        prog="smc-ebm",
        description="Train energy-based models as sequential Monte Carlo over a moving target.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="teacher-student comparison of Jarzynski, PCD, CD and unweighted walkers",
        description=(
            "Learn a two-mode Gaussian teacher (weights 1/4 and 3/4 at -10 e_1 and +6 e_1) "
            "with a two-mode Gaussian-mixture student and four strategies; print the learned "
            "weight of the first mode, the exact KL and the Jarzynski estimate of the KL, and "
            "save a figure of the weight trajectories."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--dim", type=_positive_int, default=10, help="dimension of the teacher")
    demo.add_argument("--n-data", type=_positive_int, default=2000, help="teacher samples")
    demo.add_argument(
        "--num-walkers",
        type=_at_least_two,
        default=2000,
        help="walkers of the persistent strategies",
    )
    demo.add_argument("--steps", type=_positive_int, default=2000, help="optimizer steps")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--out", default="smc_ebm_demo.png", help="where to save the figure")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    size = demo.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes {QUICK} (about 20 s on 2 CPU cores, compilation included)",
    )
    size.add_argument("--full", action="store_true", help=f"the paper's sizes {FULL}")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser(
        "fit",
        help="train from a TOML/YAML config and write a run directory",
        description=(
            "Train the energy that CONFIG describes (dataset, energy, strategy, optimizer, "
            "steps, seed), then run the diagnostics and the generation it asks for, and "
            "write the run directory: config, run.json, history.npz, walkers.npz, "
            "energy.eqx, diagnostics.csv, figures/ and checkpoint/. The whole config is "
            "checked before training. A checkpoint is written every checkpoint_every steps "
            "(config key; default a tenth of the run) and --resume continues from it. Exit "
            "status: 0 complete, 1 training failed (non-finite values; the last finite state "
            "is saved), 2 bad config or run directory, 130 interrupted (Ctrl-C or SIGTERM)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fit.add_argument("config", nargs="?", default=None, help="a .toml, .yaml or .yml config file")
    fit.add_argument("--out", default=None, help="run directory (default: runs/<name>)")
    fit.add_argument(
        "--overwrite", action="store_true", help="replace an existing run (all its files)"
    )
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    fit.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue the interrupted or killed run in RUN_DIR (or --out, or runs/<name>) "
        "from its checkpoint; CONFIG is then optional (the run's own is used)",
    )
    fit.set_defaults(func=_fit)

    report = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run directory",
        description=(
            "Write RUN_DIR/report.html (or --out): summary, diagnostics, generation, "
            "figures embedded as PNG, and the config, in one file that opens offline."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    report.add_argument("run_dir", help="a directory written by `smc-ebm fit`")
    report.add_argument("--out", default=None, help="HTML file (default: RUN_DIR/report.html)")
    report.set_defaults(func=_report)
    return parser


def _fit(args: argparse.Namespace) -> int:
    from smc_ebm.runs import fit_config

    out, resume = args.out, args.resume
    if isinstance(resume, str):
        if out is not None and out != resume:
            print("smc-ebm fit: error: --resume RUN_DIR and --out differ.", file=sys.stderr)
            return 2
        out, resume = resume, True
    try:
        run_dir = fit_config(
            args.config,
            out,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            resume=resume,
        )
    except ValueError as err:
        print(f"smc-ebm fit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training (building, compiling): nothing to keep
        print("smc-ebm fit: interrupted", file=sys.stderr)
        return 130
    meta = json.loads((run_dir / "run.json").read_text())
    again = f"continue it with: smc-ebm fit --resume {run_dir}"
    if meta.get("status") == "interrupted":
        print(
            f"smc-ebm fit: interrupted after {meta['steps_done']} of {meta['config']['steps']} "
            f"steps; the run and its checkpoint are in {run_dir}; {again}",
            file=sys.stderr,
        )
        return 130
    if meta.get("status") == "failed":
        err = meta.get("error") or {}
        what = (
            f"non-finite {err['quantity']} at step {err['step']}"
            if "quantity" in err
            else err.get("message", "?")
        )
        print(
            f"smc-ebm fit: training failed: {what}. The last finite state (after "
            f"{meta['steps_done']} steps) is saved in {run_dir} (status 'failed', with its "
            "checkpoint); a smaller step size or learning rate usually helps.",
            file=sys.stderr,
        )
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from smc_ebm.diagnostics import write_report

    try:
        path = write_report(args.run_dir, args.out)
    except ValueError as err:
        print(f"smc-ebm report: error: {err}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


QUICK = {"dim": 5, "n_data": 1000, "num_walkers": 1000, "steps": 1200}
FULL = {"dim": 50, "n_data": 10_000, "num_walkers": 10_000, "steps": 8000}


def _demo(args: argparse.Namespace) -> int:
    from smc_ebm._demo import format_table, plot_runs, run_demo, verdict

    for name, value in (QUICK if args.quick else FULL if args.full else {}).items():
        setattr(args, name, value)
    runs = run_demo(
        dim=args.dim,
        n_data=args.n_data,
        num_walkers=args.num_walkers,
        steps=args.steps,
        seed=args.seed,
        record_every=max(1, args.steps // 200),
        progress=not args.no_progress,
    )
    print()
    print(format_table(runs))
    print(
        "\nweight: learned weight of the student mode nearest the teacher's mode at -10 e_1; "
        "the teacher's is 0.25, and maximum likelihood targets the data's own fraction.\n"
        "exact KL uses the student's exact log Z; estimated KL is the strategy's own estimate "
        "(cross-entropy from the walkers' log Z, minus the teacher entropy), '—' where the "
        "strategy carries no weights. seconds include compilation.\n"
    )
    print("\n".join(verdict(runs)))
    path = plot_runs(runs, args.out)
    print(f"\nfigure saved to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``smc-ebm`` command line.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
