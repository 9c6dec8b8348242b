"""``fit_config``: train, diagnose and sample from a config, and write the run directory."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from smc_ebm.runs._config import (
    FORMAT_VERSION,
    build_dataset,
    build_energy,
    build_metrics,
    build_optimizer,
    build_strategy,
    read_config,
    validate_config,
)
from smc_ebm.runs._store import _exact_log_z, _json_default, _to_toml


def fit_config(
    config: str | Path | Mapping,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    log: Any = print,
    resume: bool = False,
) -> Path:
    """Train as a config says and write the run directory (what ``smc-ebm fit`` does).

    The run directory holds a checkpoint (``checkpoint/``, written every
    ``checkpoint_every`` steps, default a tenth of the run, and at the end), so that an
    interrupted run can be continued: ``fit_config(config, run_dir, resume=True)`` (``smc-ebm
    fit CONFIG --out RUN_DIR --resume``) ends with the same run as an uninterrupted one,
    bitwise.

    Args:
        config: a config file path or an already-read dict.
        run_dir: the run directory (default ``runs/<name>``).
        progress: show the training progress bar.
        overwrite: replace an existing run in ``run_dir``.
        log: called with progress lines (``None``: silent).
        resume: continue the interrupted run in ``run_dir`` from its checkpoint.

    Returns:
        The run directory.
    """
    import equinox as eqx
    import jax

    import smc_ebm as se  # the public API: fit, diagnose, sample, plots

    fit, sample, diagnose, plots = se.fit, se.sample, se.diagnose, se.plots
    Gaussian = se.energies.Gaussian

    text, suffix = None, ".toml"
    if not isinstance(config, Mapping):
        text, suffix = Path(config).read_text(), Path(config).suffix
        config = read_config(config)
    cfg = validate_config(config)
    base_dir = cfg.pop("_base_dir", ".")
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / str(cfg["name"])
    checkpoint = run_dir / "checkpoint"
    done = _resumable(run_dir, checkpoint) if resume else 0
    if (run_dir / "run.json").exists() and not overwrite and not resume:
        raise ValueError(f"{run_dir} already holds a run; choose another directory or overwrite.")
    say = log if log is not None else (lambda *_: None)
    every = cfg.get("checkpoint_every")
    if every is None:
        r = int(cfg["record_every"])
        every = max(r, (int(cfg["steps"]) // 10) // r * r)
    run_dir.mkdir(parents=True, exist_ok=True)

    key = jax.random.key(int(cfg["seed"]))
    k_data, k_energy, k_fit, k_diag, k_sample = jax.random.split(key, 5)
    data = build_dataset(cfg["dataset"], k_data, base_dir)
    dim = data.dim
    energy = build_energy(cfg["energy"], dim, k_energy, data.samples)
    strategy = build_strategy(cfg["strategy"])
    optimizer = build_optimizer(cfg["optimizer"])
    metrics, targets = build_metrics(data, energy)

    say(f"fit: {cfg['name']}: {cfg['steps']} steps, d={dim}, {data.samples.shape[0]} data")
    status, error = "complete", None
    try:
        result = fit(
            energy,
            data.samples,
            strategy=strategy,
            optimizer=optimizer,
            num_steps=int(cfg["steps"]) - done,
            key=k_fit,
            batch_size=cfg.get("batch_size"),
            metrics=metrics,
            record_every=int(cfg["record_every"]),
            chunk_size=int(cfg["chunk_size"]),
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_every=every,
            resume=checkpoint if resume else None,
        )
    except se.TrainingError as err:  # keep the last finite state, marked as failed
        result, status, error = err.result, "failed", str(err)
    if result.interrupted:
        status = "interrupted"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"config{suffix}").write_text(text if text is not None else _to_toml(cfg))
    np.savez(run_dir / "history.npz", **{k: np.asarray(v) for k, v in result.history.items()})
    np.savez(
        run_dir / "walkers.npz",
        position=np.asarray(result.walkers),
        log_weights=np.asarray(result.log_weights),
    )
    eqx.tree_serialise_leaves(run_dir / "energy.eqx", result.energy)
    summary = result.summary()
    say(str(summary))

    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "config": cfg,
        "dim": dim,
        "summary": summary.to_dict(),
        "targets": targets,
        "image_shape": data.info.get("image_shape"),
        "exact_log_Z": _exact_log_z(result.energy),
        "diagnostics": None,
        "sample": None,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "status": status,
        "steps_done": int(result.steps),
        "error": error,
    }
    if status != "complete":
        # What was done is written; the diagnostics, samples and figures of an interrupted or
        # failed run are skipped (they would describe a model nobody asked for).
        meta["figures"] = []
        _write_json(run_dir / "run.json", meta)
        say(f"{status} run ({result.steps} of {cfg['steps']} steps) written to {run_dir}")
        return run_dir
    diag = None
    dcfg = dict(cfg["diagnostics"])
    if dcfg.pop("enabled"):
        say(f"diagnose: {dcfg['n_chains']} chains x {dcfg['n_steps']} steps ({dcfg['kernel']})")
        diag = diagnose(result, k_diag, **dcfg)
        diag.table.to_csv(run_dir / "diagnostics.csv")
        meta["diagnostics"] = diag.headline()
        say(str(diag).splitlines()[0])
    if "sample" in cfg:
        scfg = dict(cfg["sample"])
        n = int(scfg.pop("n", 1000))
        say(f"sample: {n} samples")
        # The base: a Gaussian moment-matched to the data, which covers the trained model
        # far better than a standard normal when the data are not centred and scaled.
        base = Gaussian.fit_to(data.samples)
        out = sample(result.energy, k_sample, n, init=base, **scfg)
        meta["sample"] = {
            "n": n,
            "log_Z": out.log_Z,
            "log_Z_se": out.log_Z_se,
            "ess": out.ess,
            "n_runs": int(out.log_Z_runs.shape[0]),
            "acceptance": out.acceptance,
        }
        np.save(run_dir / "samples.npy", out.resampled)
        say(f"sample: log Z = {out.log_Z:.4f} ± {out.log_Z_se:.4f}")
    figs = plots.figure_set(
        result.history,
        energy=result.energy,
        data=np.asarray(data.samples)[:2000],
        walkers=np.asarray(result.walkers),
        log_weights=np.asarray(result.log_weights),
        targets=targets,
        image_shape=meta["image_shape"],
        diagnosis=diag,
        out_dir=run_dir / "figures",
    )
    meta["figures"] = [str(p.relative_to(run_dir)) for p in figs]
    _write_json(run_dir / "run.json", meta)
    say(f"run written to {run_dir}")
    return run_dir


def _write_json(path: Path, meta: dict) -> None:
    """Write ``meta`` atomically (a temporary file, fsync, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(meta, indent=2, default=_json_default))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _resumable(run_dir: Path, checkpoint: Path) -> int:
    """The step of ``run_dir``'s checkpoint, if the run there can be resumed."""
    meta_path = run_dir / "run.json"
    if not meta_path.is_file() or not (checkpoint / "manifest.json").is_file():
        raise ValueError(f"{run_dir} holds no run with a checkpoint to resume.")
    status = json.loads(meta_path.read_text()).get("status", "complete")
    if status != "interrupted":
        raise ValueError(
            f"{run_dir} holds a {status} run; only an interrupted run is resumed (a failed one "
            "would fail again with the same settings: change the config and start anew)."
        )
    return int(json.loads((checkpoint / "manifest.json").read_text())["step"])
