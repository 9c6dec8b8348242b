"""``fit_config``: train, diagnose and sample from a config, and write the run directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from smc_ebm.runs._files import (
    RUN_JSON,
    file_sha256,
    fsync_tree,
    to_bytes,
    write_atomic,
    write_json,
)
from smc_ebm.runs._plan import CHECKPOINT, Plan, open_run, plan_run
from smc_ebm.runs._store import _exact_log_z, _json_default


def fit_config(
    config: str | Path | Mapping | None,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    log: Any = print,
    resume: bool = False,
) -> Path:
    """Train as a config says and write the run directory (what ``smc-ebm fit`` does).

    The whole config is checked first (every problem named in one ``ValueError``), and the
    run directory too: a new or empty directory, or a run to replace (``overwrite``) or to
    continue (``resume``). ``run.json`` says ``"status": "running"`` from the start and
    ``"complete"``, ``"interrupted"`` or ``"failed"`` at the end. The directory holds a
    checkpoint (``checkpoint/``, written every ``checkpoint_every`` steps, default a tenth
    of the run, and at the end), so that a run that was interrupted, or killed, continues:
    ``fit_config(None, run_dir, resume=True)`` (``smc-ebm fit --resume RUN_DIR``) ends with
    the same run as an uninterrupted one, bitwise. Every file is written atomically and
    ``run.json`` records their sha256, checked by :func:`load_run`.

    Args:
        config: a config file path or an already-read dict (``None`` with ``resume``: the
            run's own config).
        run_dir: the run directory (default ``runs/<name>``).
        progress: show the progress bars (training, diagnostics, generation).
        overwrite: replace the run in ``run_dir`` (everything in it is removed first).
        log: called with progress lines (``None``: silent).
        resume: continue the interrupted or killed run in ``run_dir`` from its checkpoint
            (with a ``config``, which must be the run's own, a run killed before its
            ``run.json`` was written, or none yet, is started).

    Returns:
        The run directory; its ``run.json`` says how the run ended.

    Raises:
        ValueError: a bad config, dataset file, run name or run directory (all named).
    """
    plan = plan_run(config, run_dir, overwrite=overwrite, resume=resume)
    say = log if log is not None else (lambda *_: None)
    lock = open_run(plan)
    try:
        return _run(plan, say, progress)
    finally:
        lock.release()


def _run(plan: Plan, say: Any, progress: bool) -> Path:
    import equinox as eqx

    import smc_ebm as se  # the public API: fit, diagnose, sample, plots

    cfg, run_dir, parts = plan.cfg, plan.run_dir, plan.parts
    data = parts["data"]
    k_fit, k_diag, k_sample = parts["keys"]
    checkpoint = run_dir / CHECKPOINT
    steps = int(cfg["steps"])
    where = f" from step {plan.done}" if plan.resume else ""
    say(f"fit: {cfg['name']}: {steps} steps{where}, d={data.dim}, {data.samples.shape[0]} data")
    status, error = "complete", None
    try:
        result = se.fit(
            parts["energy"],
            data.samples,
            strategy=parts["strategy"],
            optimizer=parts["optimizer"],
            num_steps=steps - plan.done,
            key=k_fit,
            batch_size=cfg.get("batch_size"),
            metrics=parts["metrics"],
            record_every=int(cfg["record_every"]),
            chunk_size=int(cfg["chunk_size"]),
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_every=plan.checkpoint_every,
            resume=checkpoint if plan.done else None,
        )
    except se.TrainingError as err:  # the last finite state is kept, marked as failed
        result, status = err.result, "failed"
        error = {"step": err.step, "quantity": err.quantity, "message": str(err)}
    except ValueError as err:  # what fit refuses before its first step
        meta = {**(plan.meta or {}), "status": "failed", "error": {"message": str(err)}}
        write_json(run_dir / RUN_JSON, meta, _json_default)
        raise
    if result.interrupted:
        status = "interrupted"
    files = {
        "history.npz": to_bytes(
            lambda f: np.savez(f, **{k: np.asarray(v) for k, v in result.history.items()})
        ),
        "walkers.npz": to_bytes(
            lambda f: np.savez(
                f, position=np.asarray(result.walkers), log_weights=np.asarray(result.log_weights)
            )
        ),
        "energy.eqx": to_bytes(lambda f: eqx.tree_serialise_leaves(f, result.energy)),
    }
    sums = {name: write_atomic(run_dir / name, blob) for name, blob in files.items()}
    sums.update({p.name: file_sha256(p) for p in sorted(run_dir.glob("config.*"))})
    summary = result.summary()
    say(str(summary))
    meta: dict[str, Any] = {
        **(plan.meta or {}),
        "dim": data.dim,
        "summary": summary.to_dict(),
        "targets": parts["targets"],
        "image_shape": data.info.get("image_shape"),
        "exact_log_Z": _exact_log_z(result.energy),
        "diagnostics": None,
        "sample": None,
        "figures": [],
        "status": status,
        "steps_done": int(result.steps),
        "error": error,
        "files": sums,
    }
    if status != "complete":
        # What was done is written, with its checkpoint; the diagnostics, samples and figures
        # of an interrupted or failed run are skipped (they would describe a model nobody
        # asked for).
        write_json(run_dir / RUN_JSON, meta, _json_default)
        say(f"{status} run ({result.steps} of {steps} steps) written to {run_dir}")
        return run_dir
    try:
        _finish(plan, result, meta, (k_diag, k_sample), say, progress)
    except KeyboardInterrupt:
        # Trained to the end (its checkpoint says so) but stopped in the diagnostics, the
        # sampling or the figures: --resume writes them.
        meta.update(status="interrupted", diagnostics=None, sample=None, figures=[])
        write_json(run_dir / RUN_JSON, meta, _json_default)
        say(f"interrupted after training, before its outputs; written to {run_dir}")
        return run_dir
    write_json(run_dir / RUN_JSON, meta, _json_default)
    say(f"run written to {run_dir}")
    return run_dir


def _finish(plan: Plan, result: Any, meta: dict, keys: tuple, say: Any, progress: bool) -> None:
    """Diagnostics, generation and figures of a complete run, into ``meta`` and its files."""
    import smc_ebm as se

    cfg, run_dir, data = plan.cfg, plan.run_dir, plan.parts["data"]
    k_diag, k_sample = keys
    sums = meta["files"]
    diag = None
    dcfg = dict(cfg["diagnostics"])
    if dcfg.pop("enabled"):
        say(f"diagnose: {dcfg['num_chains']} chains x {dcfg['num_steps']} steps ({dcfg['kernel']})")
        try:
            diag = se.diagnose(result, key=k_diag, **dcfg, progress=progress)
        except FloatingPointError as err:  # chains that diverged: said, not fatal to the run
            meta["diagnostics"] = {"error": str(err)}
            say(str(err))
        else:
            sums["diagnostics.csv"] = write_atomic(
                run_dir / "diagnostics.csv", diag.table.to_csv().encode()
            )
            meta["diagnostics"] = diag.headline()
            say(str(diag).splitlines()[0])
    out = None
    if "sample" in cfg:
        scfg = dict(cfg["sample"])
        n = int(scfg.pop("num_walkers", 1000))
        say(f"sample: {n} samples")
        # The base: a Gaussian moment-matched to the data, which covers the trained model
        # far better than a standard normal when the data are not centred and scaled.
        base = se.energies.Gaussian.fit_to(data.samples)
        try:
            out = se.sample(
                result.energy, key=k_sample, num_walkers=n, init=base, **scfg, progress=progress
            )
        except FloatingPointError as err:
            meta["sample"] = {"error": str(err)}
            say(str(err))
    if out is not None:
        meta["sample"] = {
            "num_walkers": n,
            "log_Z": out.log_Z,
            "log_Z_se": out.log_Z_se,
            "ess": out.ess,
            "num_runs": int(out.log_Z_runs.shape[0]),
            "acceptance": out.acceptance,
        }
        blob = to_bytes(lambda f: np.save(f, np.asarray(out.resampled)))
        sums["samples.npy"] = write_atomic(run_dir / "samples.npy", blob)
        say(f"sample: log Z = {out.log_Z:.4f} ± {out.log_Z_se:.4f}")
    # The figures are drawn into a temporary folder, then moved into place whole.
    tmp, final = run_dir / ".figures.tmp", run_dir / "figures"
    if tmp.exists():
        shutil.rmtree(tmp)
    figs = se.plots.figure_set(
        result.history,
        energy=result.energy,
        data=np.asarray(data.samples)[:2000],
        walkers=np.asarray(result.walkers),
        log_weights=np.asarray(result.log_weights),
        targets=meta["targets"],
        image_shape=meta["image_shape"],
        diagnosis=diag,
        out_dir=tmp,
    )
    fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    meta["figures"] = [f"figures/{p.name}" for p in figs]
    for p in figs:
        sums[f"figures/{p.name}"] = file_sha256(final / p.name)
