"""Runs on disk: a TOML (or YAML) config in, a run directory out, and back.

A config names the dataset, the energy, the strategy, the optimizer, the number of steps and
the seed (see ``docs/diagnostics.md`` for every key)::

    name = "two_modes"
    seed = 0
    steps = 500

    [dataset]
    name = "two_mode_teacher"   # or "file" with path = "data.npy" (.npy, .npz, .csv)
    n = 2000
    dim = 2

    [energy]
    name = "GaussianMixture"    # or "MLP", "Gaussian"
    n_modes = 2
    scale = 0.1

    [strategy]
    name = "Jarzynski"          # or "PCD", "CD", "Unweighted"
    n_walkers = 1000
    step_size = 0.1
    resampling = { name = "ESSResampling", threshold = 0.5 }

    [optimizer]
    name = "sgd"                # any optax transformation, with its keyword arguments
    learning_rate = 0.05        # or per_field = { logits = { name = "sgd", ... }, ... }

    [diagnostics]               # optional: independent chains under the trained energy
    n_chains = 128
    n_steps = 1000

    [sample]                    # optional: generation with log Z and its error bar,
    n = 2000                    # annealed from a Gaussian moment-matched to the data
    n_steps = 200

The run directory holds ``config.toml`` (the file as given), ``run.json`` (the resolved
config, the summary, the diagnostics and sampling figures), ``history.npz``,
``walkers.npz``, ``energy.eqx`` (``equinox.tree_serialise_leaves``), ``diagnostics.csv``
and ``figures/*.png``. :func:`load_run` gives the energy and the history back.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
_TOP_KEYS = {
    "name",
    "seed",
    "steps",
    "record_every",
    "batch_size",
    "chunk_size",
    "dataset",
    "energy",
    "strategy",
    "optimizer",
    "diagnostics",
    "sample",
}
_DIAG_DEFAULTS = {
    "enabled": True,
    "n_chains": 128,
    "n_steps": 1000,
    "kernel": "mala",
    "step_size": None,
    "n_warmup": 0,
    "thin": 1,
}
_SAMPLE_KEYS = {"n", "n_steps", "step_size", "kernel", "n_runs"}


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


# ----------------------------------------------------------------------------- config
def read_config(path: str | Path) -> dict:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``, needs PyYAML) config file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:  # pragma: no cover - PyYAML is optional
            raise ValueError("YAML configs need PyYAML (pip install pyyaml).") from err
        cfg = yaml.safe_load(text)
    elif path.suffix == ".toml":
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: invalid TOML: {err}") from err
    else:
        raise ValueError(f"config must be .toml, .yaml or .yml; got {path.name!r}.")
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the config must be a table of keys.")
    cfg.setdefault("name", path.stem)
    cfg.setdefault("_base_dir", str(path.parent.resolve()))
    return cfg


def _section(cfg: Mapping, name: str, required: bool = True) -> dict:
    sec = cfg.get(name)
    if sec is None:
        if required:
            raise ValueError(f"config: missing section [{name}].")
        return {}
    if not isinstance(sec, Mapping):
        raise ValueError(f"config: [{name}] must be a table; got {type(sec).__name__}.")
    sec = dict(sec)
    if name in ("dataset", "energy", "strategy", "optimizer") and "name" not in sec:
        if not (name == "optimizer" and "per_field" in sec):
            raise ValueError(f"config: [{name}] needs a name.")
    return sec


def validate_config(cfg: Mapping) -> dict:
    """Check a config and fill the defaults; raise ``ValueError`` naming the problem."""
    cfg = copy.deepcopy(dict(cfg))
    unknown = set(cfg) - _TOP_KEYS - {"_base_dir"}
    if unknown:
        raise ValueError(f"config: unknown keys {sorted(unknown)}; allowed {sorted(_TOP_KEYS)}.")
    if "steps" not in cfg:
        raise ValueError("config: `steps` (optimizer steps) is required.")
    for key in ("steps", "seed"):
        if key in cfg and (not isinstance(cfg[key], int) or isinstance(cfg[key], bool)):
            raise ValueError(f"config: `{key}` must be an integer; got {cfg[key]!r}.")
    if cfg["steps"] < 1:
        raise ValueError(f"config: `steps` must be >= 1; got {cfg['steps']}.")
    cfg.setdefault("seed", 0)
    cfg.setdefault("record_every", max(1, cfg["steps"] // 200))
    cfg.setdefault("chunk_size", 500)
    cfg.setdefault("name", "run")
    for name in ("dataset", "energy", "strategy", "optimizer"):
        cfg[name] = _section(cfg, name)
    diag = _section(cfg, "diagnostics", required=False)
    bad = set(diag) - set(_DIAG_DEFAULTS)
    if bad:
        raise ValueError(f"config: unknown [diagnostics] keys {sorted(bad)}.")
    cfg["diagnostics"] = {**_DIAG_DEFAULTS, **diag}
    if "sample" in cfg:
        smp = _section(cfg, "sample")
        bad = set(smp) - _SAMPLE_KEYS
        if bad:
            raise ValueError(f"config: unknown [sample] keys {sorted(bad)}.")
        cfg["sample"] = smp
    return cfg


def _call(section: str, fn: Any, kwargs: Mapping) -> Any:
    try:
        return fn(**kwargs)
    except TypeError as err:
        raise ValueError(f"config [{section}]: {err}") from err


def build_dataset(spec: Mapping, key: Any, base_dir: str | Path = ".") -> Any:
    """The :class:`~smc_ebm.datasets.Dataset` of a ``[dataset]`` section."""
    from smc_ebm import datasets

    spec = dict(spec)
    name = spec.pop("name")
    image_shape = spec.pop("image_shape", None)
    if name == "two_mode_teacher":
        data = _call("dataset", lambda **kw: datasets.two_mode_teacher(key, **kw), spec)
    elif name == "file":
        if "path" not in spec:
            raise ValueError("config [dataset]: name = 'file' needs a path.")
        path = Path(spec.pop("path"))
        path = path if path.is_absolute() else Path(base_dir) / path
        if not path.is_file():
            raise ValueError(f"config [dataset]: no file {str(path)!r}.")
        if path.suffix == ".npy":
            arr = np.load(path)
        elif path.suffix == ".npz":
            arr = np.load(path)[spec.pop("key", "samples")]
        elif path.suffix == ".csv":
            arr = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise ValueError(f"config [dataset]: unsupported file type {path.suffix!r}.")
        if spec:
            raise ValueError(f"config [dataset]: unknown keys {sorted(spec)}.")
        data = datasets.Dataset(samples=np.asarray(arr, np.float32))
    else:
        raise ValueError(
            f"config [dataset]: unknown dataset {name!r}; choose 'two_mode_teacher' or 'file'."
        )
    if image_shape is not None:
        data.info["image_shape"] = tuple(int(s) for s in image_shape)
    return data


def build_energy(spec: Mapping, dim: int, key: Any, data: Any = None) -> Any:
    """The energy of an ``[energy]`` section, of dimension ``dim``."""
    import jax.numpy as jnp

    from smc_ebm import energies

    spec = dict(spec)
    name = spec.pop("name")
    if name == "GaussianMixture":
        return _call("energy", lambda **kw: energies.GaussianMixture.init(key, dim=dim, **kw), spec)
    if name == "MLP":
        return _call("energy", lambda **kw: energies.MLP(dim, key=key, **kw), spec)
    if name == "Gaussian":
        if spec:
            raise ValueError(f"config [energy]: Gaussian takes no keys; got {sorted(spec)}.")
        if data is not None:
            return energies.Gaussian.fit_to(jnp.asarray(data))
        return energies.Gaussian.standard(dim)
    raise ValueError(
        f"config [energy]: unknown energy {name!r}; choose GaussianMixture, MLP or Gaussian."
    )


def build_strategy(spec: Mapping) -> Any:
    """The strategy of a ``[strategy]`` section (:func:`smc_ebm.strategies.build_strategy`)."""
    from smc_ebm import strategies

    return strategies.build_strategy(spec)


def build_optimizer(spec: Mapping) -> Any:
    """An optax transformation from an ``[optimizer]`` section (``per_field`` allowed)."""
    import optax

    from smc_ebm import optim

    spec = dict(spec)
    if "per_field" in spec:
        fields = spec.pop("per_field")
        default = spec.pop("default", None)
        if spec:
            raise ValueError(f"config [optimizer]: with per_field, unknown keys {sorted(spec)}.")
        per = {k: build_optimizer(v) for k, v in fields.items()}
        return optim.by_field(None if default is None else build_optimizer(default), **per)
    name = spec.pop("name")
    fn = getattr(optax, name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"config [optimizer]: optax has no optimizer {name!r}.")
    return _call("optimizer", fn, spec)


def _nearest_mode_weight(center: Any) -> Any:
    import jax.numpy as jnp

    def weight(energy: Any) -> Any:
        idx = jnp.argmin(jnp.sum((energy.means - center) ** 2, axis=-1))
        return energy.weights[idx]

    return weight


def build_metrics(data: Any, energy: Any) -> tuple[dict, list[float] | None]:
    """Metrics that apply: the exact KL (teacher and exact log Z known) and mode weights."""
    import jax.numpy as jnp

    from smc_ebm import metrics
    from smc_ebm.energies import GaussianMixture, has_log_partition

    out: dict[str, Any] = {}
    targets = None
    if data.log_prob is not None and has_log_partition(energy):
        out["kl"] = metrics.exact_kl(data.samples, data.log_prob)
    means = data.info.get("means")
    if means is not None and isinstance(energy, GaussianMixture):
        for k in range(means.shape[0]):
            out[f"weight_{k}"] = _nearest_mode_weight(jnp.asarray(means[k]))
        weights = data.info.get("weights")
        targets = None if weights is None else [float(w) for w in np.asarray(weights)]
    return out, targets


# ----------------------------------------------------------------------------- fit
def fit_config(
    config: str | Path | Mapping,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
    log: Any = print,
) -> Path:
    """Train as a config says and write the run directory (what ``smc-ebm fit`` does).

    Args:
        config: a config file path or an already-read dict.
        run_dir: the run directory (default ``runs/<name>``).
        progress: show the training progress bar.
        overwrite: replace an existing run in ``run_dir``.
        log: called with progress lines (``None``: silent).

    Returns:
        The run directory.
    """
    import equinox as eqx
    import jax

    from smc_ebm import plots
    from smc_ebm._fit import fit
    from smc_ebm._sample import sample
    from smc_ebm.diagnostics import diagnose
    from smc_ebm.energies import Gaussian

    text, suffix = None, ".toml"
    if not isinstance(config, Mapping):
        text, suffix = Path(config).read_text(), Path(config).suffix
        config = read_config(config)
    cfg = validate_config(config)
    base_dir = cfg.pop("_base_dir", ".")
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / str(cfg["name"])
    if (run_dir / "run.json").exists() and not overwrite:
        raise ValueError(f"{run_dir} already holds a run; choose another directory or overwrite.")
    say = log if log is not None else (lambda *_: None)

    key = jax.random.key(int(cfg["seed"]))
    k_data, k_energy, k_fit, k_diag, k_sample = jax.random.split(key, 5)
    data = build_dataset(cfg["dataset"], k_data, base_dir)
    dim = data.dim
    energy = build_energy(cfg["energy"], dim, k_energy, data.samples)
    strategy = build_strategy(cfg["strategy"])
    optimizer = build_optimizer(cfg["optimizer"])
    metrics, targets = build_metrics(data, energy)

    say(f"fit: {cfg['name']}: {cfg['steps']} steps, d={dim}, {data.samples.shape[0]} data")
    result = fit(
        energy,
        data.samples,
        strategy=strategy,
        optimizer=optimizer,
        num_steps=int(cfg["steps"]),
        key=k_fit,
        batch_size=cfg.get("batch_size"),
        metrics=metrics,
        record_every=int(cfg["record_every"]),
        chunk_size=int(cfg["chunk_size"]),
        progress=progress,
    )
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
    }
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
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    say(f"run written to {run_dir}")
    return run_dir


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
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported run format {meta.get('format')!r}.")
    cfg = meta["config"]
    # A skeleton of the same structure; its leaves are replaced by the saved ones.
    skeleton = build_energy(cfg["energy"], int(meta["dim"]), jax.random.key(0))
    energy = eqx.tree_deserialise_leaves(path / "energy.eqx", skeleton)
    with np.load(path / "history.npz") as h:
        history = {k: h[k] for k in h.files}
    with np.load(path / "walkers.npz") as w:
        walkers, log_weights = w["position"], w["log_weights"]
    table = None
    if (path / "diagnostics.csv").is_file():
        import pandas as pd

        table = pd.read_csv(path / "diagnostics.csv", index_col=0)
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
