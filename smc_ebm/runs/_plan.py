"""Before a run trains: the whole config checked and built, the run directory chosen and checked.

:func:`plan_run` collects every problem (config keys and counts, the sections that do not build,
the dataset file, the run name, the run directory) and raises one ``ValueError`` naming them
all, before anything is written; :func:`open_run` then takes the directory.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smc_ebm.runs._config import (
    FORMAT_VERSION,
    build_dataset,
    build_energy,
    build_metrics,
    build_optimizer,
    build_strategy,
    config_problems,
    join_problems,
    read_config,
)
from smc_ebm.runs._files import (
    RUN_JSON,
    Lock,
    clear,
    clear_outputs,
    dir_state,
    name_problem,
    write_atomic,
    write_json,
)
from smc_ebm.runs._store import _json_default, _to_toml

CHECKPOINT = "checkpoint"


@dataclasses.dataclass
class Plan:
    """A checked run: its config, its directory and the objects it trains."""

    cfg: dict
    text: str
    suffix: str
    base_dir: str
    run_dir: Path
    resume: bool
    done: int  # the step of the checkpoint resumed from (0: from the start)
    checkpoint_every: int | None
    parts: dict[str, Any]
    meta: dict[str, Any] | None = None  # run.json of the run resumed


def default_checkpoint_every(cfg: Mapping) -> int | None:
    """``checkpoint_every`` of the config, or its default.

    By default a tenth of the run (a multiple of ``record_every``); 0 means only at the end
    (and when stopped or failed).
    """
    every = cfg.get("checkpoint_every")
    if every == 0:
        return None
    if every is None:
        r = int(cfg["record_every"])
        every = max(r, (int(cfg["steps"]) // 10) // r * r)
    return int(every)


def _jsonable(cfg: Mapping) -> dict:
    return json.loads(json.dumps(dict(cfg), default=_json_default))


def _differences(old: Mapping, new: Mapping) -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += [f"{k}.{d}" for d in _differences(a, b)]
        elif a != b:
            out.append(str(k))
    return out


def _read_run(run_dir: Path, problems: list[str]) -> dict | None:
    try:
        return json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, json.JSONDecodeError) as err:
        problems.append(f"{run_dir / RUN_JSON} cannot be read: {err}.")
        return None


def _stored_config(run_dir: Path, meta: Mapping) -> tuple[dict, str, str]:
    cfg = dict(meta["config"])
    cfg["_base_dir"] = meta.get("base_dir", ".")
    files = sorted(run_dir.glob("config.*"))
    files = [f for f in files if f.suffix in (".toml", ".yaml", ".yml")]
    if files:
        return cfg, files[0].read_text(), files[0].suffix
    return cfg, _to_toml(meta["config"]), ".toml"


def _checkpoint_step(run_dir: Path, problems: list[str]) -> int:
    manifest = run_dir / CHECKPOINT / "manifest.json"
    if not manifest.is_file():
        return 0  # stopped before its first checkpoint: it starts again from step 0
    try:
        return int(json.loads(manifest.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        problems.append(f"{manifest} cannot be read: {err}.")
        return 0


def plan_run(
    config: str | Path | Mapping | None,
    run_dir: str | Path | None,
    *,
    overwrite: bool = False,
    resume: bool = False,
) -> Plan:
    """Check a run before anything is written; ``ValueError`` naming every problem."""
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it: choose one.")
    if config is None and not (resume and run_dir is not None):
        raise ValueError("a config file is needed (or --resume RUN_DIR).")
    problems: list[str] = []
    raw, text, suffix = None, None, ".toml"
    if config is not None and not isinstance(config, Mapping):
        raw = read_config(config)  # a file that cannot be read: nothing else to check
        text, suffix = Path(config).read_text(), Path(config).suffix
    elif config is not None:
        raw = dict(config)
    if run_dir is None:
        name = raw.get("name", "run")  # type: ignore[union-attr]
        bad = name_problem(name)
        if bad:
            raise ValueError(f"config: {bad}")
        run_dir = Path("runs") / name
    run_dir = Path(run_dir)
    state = dir_state(run_dir)
    meta, done = None, 0
    if resume and raw is not None and state in ("missing", "empty"):
        resume = False  # killed before its first run.json, or never started: start it
    if resume:
        if state != "run":
            raise ValueError(
                f"{run_dir} holds no run to resume (no {RUN_JSON} written by smc-ebm fit)."
            )
        meta = _read_run(run_dir, problems)
        status = (meta or {}).get("status", "complete")
        if meta is not None and status not in ("running", "interrupted"):
            problems.append(
                f"{run_dir} holds a {status} run; only an interrupted (or killed) run is "
                "resumed (a failed one would fail again with the same settings: change the "
                "config and start anew, or --overwrite)."
            )
        if meta is not None and meta.get("format") != FORMAT_VERSION:
            problems.append(f"{run_dir}: unsupported run format {meta.get('format')!r}.")
        if problems:
            raise ValueError(join_problems(problems))
        stored, stored_text, stored_suffix = _stored_config(run_dir, meta)  # type: ignore[arg-type]
        if raw is not None:
            given, given_problems = config_problems(raw)
            given.pop("_base_dir", None)
            diff = _differences(meta["config"], _jsonable(given))  # type: ignore[index]
            if not given_problems and diff:
                problems.append(
                    f"the config differs from the run's in {diff}; resume with the run's own "
                    "config (or give only --resume RUN_DIR)."
                )
        raw, text, suffix = stored, stored_text, stored_suffix
        done = _checkpoint_step(run_dir, problems)
    elif state == "file":
        problems.append(f"{run_dir} is a file, not a directory.")
    elif state == "run" and not overwrite:
        problems.append(
            f"{run_dir} already holds a run; choose another directory, --overwrite to replace "
            "it, or --resume to continue it."
        )
    elif state == "other":
        problems.append(
            f"{run_dir} is not empty and holds no run (no {RUN_JSON} written by smc-ebm "
            "fit); choose a new or empty directory (--overwrite replaces runs only)."
        )
    cfg, cfg_problems = config_problems(raw)  # type: ignore[arg-type]
    problems += cfg_problems
    base_dir = str(cfg.pop("_base_dir", "."))
    parts = _build(cfg, base_dir, problems)
    if problems:
        raise ValueError(join_problems(problems))
    if text is None:
        text = _to_toml(cfg)
    return Plan(
        cfg,
        text,
        suffix,
        base_dir,
        run_dir,
        resume,
        done,
        default_checkpoint_every(cfg),
        parts,
        meta,
    )


def _build(cfg: dict, base_dir: str, problems: list[str]) -> dict[str, Any]:
    """Build the dataset, energy, strategy and optimizer; the problems of each are kept."""
    import jax

    from smc_ebm.energies import check_trainable

    def attempt(section: str, fn: Any) -> Any:
        spec = cfg.get(section)
        if not spec or not ("name" in spec or "per_field" in spec):
            return None  # missing or nameless: already named by config_problems
        try:
            return fn()
        except (ValueError, TypeError, KeyError) as err:
            msg = str(err)
            problems.append(msg if msg.startswith("config") else f"config [{section}]: {msg}")
            return None

    seed = cfg["seed"] if isinstance(cfg["seed"], int) else 0  # a bad seed is named already
    key = jax.random.key(seed)
    k_data, k_energy, k_fit, k_diag, k_sample = jax.random.split(key, 5)
    data = attempt("dataset", lambda: build_dataset(cfg["dataset"], key=k_data, base_dir=base_dir))
    energy = None
    if data is not None:
        energy = attempt(
            "energy", lambda: build_energy(cfg["energy"], data.dim, key=k_energy, data=data.samples)
        )
        if energy is not None:
            attempt("energy", lambda: check_trainable(energy))
    strategy = attempt("strategy", lambda: build_strategy(cfg["strategy"]))
    if strategy is not None and data is not None:
        attempt("strategy", lambda: strategy.validate(data.dim, data.samples.shape[0]))
    optimizer = attempt("optimizer", lambda: build_optimizer(cfg["optimizer"]))
    metrics, targets = ({}, None)
    if data is not None and energy is not None:
        metrics, targets = build_metrics(data, energy)
    return {
        "data": data,
        "energy": energy,
        "strategy": strategy,
        "optimizer": optimizer,
        "metrics": metrics,
        "targets": targets,
        "keys": (k_fit, k_diag, k_sample),
    }


def open_run(plan: Plan) -> Lock:
    """Take the run directory (its lock) and write the run's config and ``run.json``.

    ``run.json`` says ``"status": "running"``; a replaced run (``--overwrite``) is removed
    first, and so are the outputs of an earlier attempt of a resumed run.
    """
    run_dir = plan.run_dir
    planned = dir_state(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = Lock(run_dir)
    lock.acquire()
    try:
        if dir_state(run_dir) != planned and planned != "missing":
            raise ValueError(f"{run_dir} changed while the run was being prepared.")
        if plan.resume:
            clear_outputs(run_dir)
            meta = dict(plan.meta or {})
            meta["status"] = "running"
            meta["resumed_at"] = [*meta.get("resumed_at", []), plan.done]
        else:
            clear(run_dir)  # an earlier run (--overwrite), or what a killed start left
            meta = {
                "format": FORMAT_VERSION,
                "config": plan.cfg,
                "base_dir": plan.base_dir,
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "status": "running",
                "steps_done": 0,
            }
        write_json(run_dir / RUN_JSON, meta, _json_default)
        config_file = run_dir / f"config{plan.suffix}"
        if not config_file.is_file():
            write_atomic(config_file, plan.text.encode())
    except BaseException:
        lock.release()
        raise
    plan.meta = meta
    return lock
