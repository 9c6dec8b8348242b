"""Run directories: the Run record, JSON and TOML writing, and load_run."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from smc_ebm.runs._config import FORMAT_VERSION, build_energy
from smc_ebm.runs._files import file_sha256


@dataclasses.dataclass
class Run:
    """A run read back by :func:`load_run`.

    Attributes:
        path: the run directory.
        config: the resolved configuration (a dict).
        energy: the trained energy module.
        history: dict of numpy arrays, as ``FitResult.history``.
        walkers: ``(N, d)`` final walker positions.
        log_weights: ``(N,)`` their log-weights.
        summary: the run's :class:`~smc_ebm.diagnostics.FitSummary` as a dict.
        diagnostics: the headline figures of :func:`~smc_ebm.diagnose` (or ``None``).
        diagnostics_table: the summary table (a ``pandas.DataFrame``, or ``None``).
        sample: log Z and its error bar from :func:`~smc_ebm.sample` (or ``None``).
        figures: paths of the PNG figures.
        meta: everything else stored in ``run.json``.
    """

    path: Path
    config: dict
    energy: Any
    history: dict[str, np.ndarray]
    walkers: np.ndarray
    log_weights: np.ndarray
    summary: dict
    diagnostics: dict | None
    diagnostics_table: Any
    sample: dict | None
    figures: list[Path]
    meta: dict


def _exact_log_z(energy: Any) -> float | None:
    from smc_ebm.energies import has_log_partition

    return float(energy.log_partition()) if has_log_partition(energy) else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)


def _to_toml(cfg: Mapping, prefix: str = "") -> str:
    """A small TOML writer for configs given as dicts (scalars, lists and tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else "inf")
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise ValueError(f"cannot write {v!r} to TOML.")

    lines, tables = [], []
    for k, v in cfg.items():
        if v is None:
            continue
        if isinstance(v, Mapping) and not prefix:
            tables.append((k, v))
        else:
            lines.append(f"{k} = {value(v)}")
    for k, v in tables:
        lines += ["", f"[{k}]"]
        lines += [f"{kk} = {value(vv)}" for kk, vv in v.items() if vv is not None]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- load
def _check_files(path: Path, files: Any) -> None:
    """Check the files that ``run.json`` lists against their sha256.

    Raises ``ValueError`` naming each one missing or whose sha256 differs (a truncated or
    altered file). Runs written before checksums (no ``files`` entry) pass.
    """
    if files is None:
        return
    bad = []
    for name, digest in dict(files).items():
        p = path / name
        if not _inside(p, path):
            bad.append(f"{name} (outside the run directory)")
        elif not p.is_file():
            bad.append(f"{name} (missing)")
        elif file_sha256(p) != digest:
            bad.append(f"{name} (corrupted or truncated: its sha256 differs from run.json's)")
    if bad:
        raise ValueError(f"run {path}: bad files: " + "; ".join(bad) + ".")


def _inside(p: Path, root: Path) -> bool:
    """Whether ``p`` (links followed) lies inside ``root``."""
    try:
        return p.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def load_run(path: str | Path) -> Run:
    """Read a run directory written by ``smc-ebm fit`` (:func:`fit_config`).

    Args:
        path: the run directory.

    Returns:
        A :class:`Run`: the trained energy (rebuilt from the config, then its leaves read
        with ``equinox.tree_deserialise_leaves``), the history, the final walkers, the
        summary and the diagnostics.

    Example:
        >>> run = se.load_run("runs/two_modes")                  # doctest: +SKIP
        >>> run.energy, run.history["ess"][-1]                   # doctest: +SKIP
    """
    import equinox as eqx
    import jax

    path = Path(path)
    meta_path = path / "run.json"
    if not meta_path.is_file():
        raise ValueError(f"{str(path)!r} is not a run directory (no run.json).")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path} is corrupted or truncated: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: unsupported run format {fmt!r}.")
    if meta.get("status") == "running":
        raise ValueError(
            f"{path} holds an unfinished run (status 'running': still running, or killed); "
            f"continue it with `smc-ebm fit --resume {path}`."
        )
    _check_files(path, meta.get("files"))
    cfg = meta["config"]

    def read(name: str, fn: Any) -> Any:
        try:
            return fn(path / name)
        except ValueError:
            raise
        except Exception as err:  # BadZipFile, KeyError, EOFError, equinox's errors
            raise ValueError(f"run file {path / name} cannot be read: {err!r}") from None

    # A skeleton of the same structure; its leaves are replaced by the saved ones.
    skeleton = build_energy(cfg["energy"], int(meta["dim"]), key=jax.random.key(0))
    energy = read("energy.eqx", lambda p: eqx.tree_deserialise_leaves(p, skeleton))

    def npz(p: Path) -> dict[str, np.ndarray]:
        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    history = read("history.npz", npz)
    walkers, log_weights = read(
        "walkers.npz", lambda p: (lambda z: (z["position"], z["log_weights"]))(npz(p))
    )
    table = None
    if (path / "diagnostics.csv").is_file():
        import pandas as pd

        table = read("diagnostics.csv", lambda p: pd.read_csv(p, index_col=0))
    return Run(
        path=path,
        config=cfg,
        energy=energy,
        history=history,
        walkers=walkers,
        log_weights=log_weights,
        summary=meta["summary"],
        diagnostics=meta.get("diagnostics"),
        diagnostics_table=table,
        sample=meta.get("sample"),
        figures=[path / f for f in meta.get("figures", [])],
        meta=meta,
    )
